"""The daemon's `--ws-url` path against the real WebSocket handlers, behind a tiny local bridge that
plays API Gateway: upgrade requests go through `$connect`, frames through `$default`, closes through
`$disconnect`, and `post_to_connection` pushes go back down the socket."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from chalicelib.adapters.ws_push import WebSocketPush
from chalicelib.api.ws_handlers import daemon_ws_connect, daemon_ws_disconnect, daemon_ws_message
from daemon.agent import Daemon
from tests.daemon.conftest import wait_for
from tests.daemon.reference_daemon_kit import dispatch, finished, get_run

websockets = pytest.importorskip("websockets")


def _event(route: str, connection_id: str, **kw: Any) -> dict[str, Any]:
    return {"requestContext": {"routeKey": route, "connectionId": connection_id, "apiId": "local",
                               "stage": "api"}, "isBase64Encoded": False, **kw}


class Bridge:
    """API Gateway's WebSocket side, in-process."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.connections: dict[str, Any] = {}
        self.pushed: list[dict[str, Any]] = []
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._connect)
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _connect(self, connection: Any, request: Any) -> Any:
        query = dict(parse_qsl(urlsplit(request.path).query))
        headers = {k: v for k, v in request.headers.raw_items()}
        resp = daemon_ws_connect(_event("$connect", str(connection.id), headers=headers,
                                        queryStringParameters=query), None)
        if resp["statusCode"] != 200:
            return connection.respond(resp["statusCode"], resp.get("body", ""))
        self.connections[str(connection.id)] = connection
        return None

    def _handle(self, connection: Any) -> None:
        cid = str(connection.id)
        try:
            for message in connection:
                daemon_ws_message(_event("$default", cid, body=message), None)
        finally:
            self.connections.pop(cid, None)
            daemon_ws_disconnect(_event("$disconnect", cid), None)

    # The apigatewaymanagementapi client the service pushes through.
    def post_to_connection(self, ConnectionId: str, Data: bytes) -> None:
        self.pushed.append(json.loads(Data))
        conn = self.connections.get(ConnectionId)
        if conn is not None:
            conn.send(Data.decode())

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)


@pytest.fixture
def bridge(container: Any) -> Iterator[Bridge]:
    # websockets' frame-level DEBUG records hold weak references the suite's log guard cannot dump.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    b = Bridge()
    container.ws_push = WebSocketPush(lambda _endpoint: b, "http://bridge.local")
    try:
        yield b
    finally:
        b.close()


def test_daemon_connects_and_gets_pushes(api: Any, make_daemon: Callable[..., Daemon],
                                         fake_cli: Callable[[dict[str, Any]], Path], bridge: Bridge,
                                         container: Any) -> None:
    fake_cli({"default": {"score": 4}, "questions": {"tests_written": {"mode": "hang"}}})
    daemon = make_daemon(ws_url=bridge.url, concurrency=2, retrospective=False)
    wait_for(lambda: bridge.connections, "the daemon's websocket")
    assert container.daemon_service.list_available("acme", "alice")[0].connected is True

    run_id = dispatch(api, ["sensitive_files", "tests_written"])
    offer = wait_for(lambda: next((m for m in bridge.pushed if m.get("type") == "job_offer"), None), "the offer push")
    assert offer["eval_run_id"] == run_id and offer["daemon_id"] == daemon.daemon_id
    wait_for(lambda: get_run(api, run_id)["progress"]["completed"] == 1, "the first verdict")
    status, _ = api.call("POST", f"/eval-runs/{run_id}/cancel")
    assert status == 200
    assert {"type": "cancel", "eval_run_id": run_id, "reason": "cancelled by user"} in bridge.pushed
    assert finished(daemon, run_id).status == "cancelled"
    assert get_run(api, run_id)["status"] == "cancelled"


def test_bad_token_is_refused_at_the_upgrade(bridge: Bridge, api: Any, make_daemon: Callable[..., Daemon]) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    daemon = make_daemon(start=False)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{bridge.url}?daemon_id={daemon.daemon_id}", additional_headers={"Authorization": "Bearer nope"})
    assert refused.value.response.status_code == 401
    assert not bridge.connections
