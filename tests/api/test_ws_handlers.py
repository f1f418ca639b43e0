"""WebSocket handlers with hand-built API Gateway events under moto: $connect auth accept/reject,
$default messages (same validation as HTTPS), $disconnect, pushes, and GoneException cleanup."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from chalicelib.api.ws_handlers import daemon_ws_connect, daemon_ws_disconnect, daemon_ws_message
from tests.api.daemon_kit import FrozenClock, dispatch, register, upload_session
from tests.api.ws_kit import pushed, ws_event
from tests.conftest import mint


def connect(token: str, daemon_id: str, connection_id: str = "conn-1", how: str = "header") -> dict[str, Any]:
    headers: dict[str, str] = {}
    query = {"daemon_id": daemon_id}
    if how == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif how == "subprotocol":
        headers["Sec-WebSocket-Protocol"] = f"bearer, {token}"
    else:
        query["token"] = token
    return daemon_ws_connect(ws_event("$connect", connection_id, headers=headers, query=query), None)


def test_handlers_are_registered_on_the_app() -> None:
    from app import app

    assert set(app.websocket_handlers) == {"$connect", "$default", "$disconnect"}
    assert "daemon_ws_message" in app.handler_map


@pytest.mark.parametrize("how", ["header", "subprotocol", "query"])
def test_connect_accepts_a_valid_token(client: Any, clock: FrozenClock, container: Any, alice: str,
                                       how: str) -> None:
    daemon_id = register(client, alice)
    resp = connect(alice, daemon_id, how=how)
    assert resp["statusCode"] == 200
    if how == "subprotocol":
        assert resp["headers"] == {"Sec-WebSocket-Protocol": "bearer"}
    conn = container.daemon_store.get_connection("conn-1", now_epoch=int(clock.now().timestamp()))
    assert conn is not None and (conn.user, conn.daemon_id) == ("alice", daemon_id)
    assert conn.expires_at - int(clock.now().timestamp()) == 2 * 3600
    assert client.get("/eval/runners", token=alice).json["daemon"]["daemons"][0]["daemon_id"] == daemon_id
    assert container.daemon_service.list_available("acme", "alice")[0].connected is True


def test_connect_rejects_bad_credentials(client: Any, clock: FrozenClock, container: Any, alice: str) -> None:
    daemon_id = register(client, alice)
    cases = [
        (daemon_ws_connect(ws_event("$connect", "c1", query={"daemon_id": daemon_id}), None), 401),
        (connect("not-a-jwt", daemon_id, "c2"), 401),
        (connect(mint("acme", "bob", []), daemon_id, "c3"), 404),
        (connect(mint("globex", "alice", []), daemon_id, "c4"), 404),
        (connect(alice, "", "c5"), 400),
    ]
    for resp, status in cases:
        assert resp["statusCode"] == status, resp
        assert json.loads(resp["body"])["error"]["code"]
    for cid in ("c1", "c2", "c3", "c4", "c5"):
        assert container.daemon_store.get_connection(cid, now_epoch=0) is None


def test_messages_get_the_same_validation_as_https(client: Any, clock: FrozenClock, container: Any,
                                                   alice: str) -> None:
    daemon_id = register(client, alice)
    assert connect(alice, daemon_id)["statusCode"] == 200
    upload_session(client, alice)
    run_id = dispatch(client, alice, questions=["sensitive_files"])["eval_run_id"]
    # The offer was pushed to the connected daemon.
    offer = pushed("conn-1")[-1]
    assert offer["type"] == "job_offer" and offer["eval_run_id"] == run_id
    assert offer["job"]["questions"][0]["id"] == "sensitive_files"

    def send(message: Any) -> dict[str, Any]:
        body = message if isinstance(message, str) else json.dumps(message)
        assert daemon_ws_message(ws_event("$default", "conn-1", body=body), None) == {"statusCode": 200}
        return pushed("conn-1")[-1]

    clock.advance(30)
    ack = send({"action": "heartbeat", "request_id": "r1"})
    assert ack["type"] == "heartbeat_ack" and ack["request_id"] == "r1"
    job = send({"action": "claim"})
    assert job["type"] == "job" and job["eval_run_id"] == run_id
    assert send({"action": "claim"})["type"] == "no_job"

    bad = send({"action": "event", "event": {"type": "eval_question_started", "eval_run_id": run_id, "index": 2,
                                             "total": 1, "category": "safety", "question_id": "sensitive_files"}})
    assert bad["type"] == "error" and bad["error"]["code"] == "validation_failed"
    assert send("{nope")["error"]["code"] == "malformed_json"
    assert send({"action": "dance"})["error"]["code"] == "validation_failed"
    ok = send({"action": "event", "event": {"type": "eval_question_completed", "eval_run_id": run_id, "index": 1,
                                            "total": 1, "category": "safety", "question_id": "sensitive_files",
                                            "score": 4, "verdict": "pass", "input_tokens": 9}})
    assert ok["type"] == "event_ack" and ok["applied"] is True
    result = {"eval_run_id": run_id, "judge_model": "sonnet", "overall_score": 4, "summary": "s",
              "retrospective": None, "categories": [{"name": "safety", "score": 4, "verdict": "pass", "questions": [
                  {"category": "safety", "question_id": "sensitive_files", "score": 4, "verdict": "pass",
                   "finding": "f", "evidence": None, "recommendation": None, "tools_used": None}]}]}
    stored = send({"action": "result", "eval_run_id": run_id, "result": result})
    assert stored["type"] == "result_ack" and stored["status"] == "succeeded"
    assert stored["corrections"] == ["summary re-derived"]
    run = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert run["status"] == "succeeded" and run["usage"]["input_tokens"] == 9

    # A message on a connection nobody registered is refused (and answered on that connection).
    assert daemon_ws_message(ws_event("$default", "ghost", body='{"action":"heartbeat"}'), None)["statusCode"] == 200
    assert pushed("ghost")[-1]["error"]["code"] == "connection_not_found"


def test_cancel_is_pushed_to_the_connection(client: Any, clock: FrozenClock, container: Any, alice: str) -> None:
    daemon_id = register(client, alice)
    connect(alice, daemon_id)
    upload_session(client, alice)
    run_id = dispatch(client, alice, questions=["sensitive_files"])["eval_run_id"]
    assert client.get(f"/daemons/{daemon_id}/jobs?wait=0", token=alice).status_code == 200
    assert client.post(f"/eval-runs/{run_id}/cancel", token=alice).status_code == 200
    assert pushed("conn-1")[-1] == {"type": "cancel", "eval_run_id": run_id, "reason": "cancelled by user"}


def test_disconnect_deletes_the_connection(client: Any, clock: FrozenClock, container: Any, alice: str) -> None:
    daemon_id = register(client, alice)
    connect(alice, daemon_id)
    assert daemon_ws_disconnect(ws_event("$disconnect", "conn-1"), None) == {"statusCode": 200}
    assert container.daemon_store.get_connection("conn-1", now_epoch=0) is None
    assert container.daemon_store.daemon_connections("acme", daemon_id, now_epoch=0) == []
    # A second $disconnect (API Gateway retries) is harmless.
    assert daemon_ws_disconnect(ws_event("$disconnect", "conn-1"), None) == {"statusCode": 200}


def test_gone_connection_is_cleaned_up_on_push(client: Any, clock: FrozenClock, container: Any,
                                               alice: str) -> None:
    daemon_id = register(client, alice)
    connect(alice, daemon_id, "stale")
    clock.advance(1)
    connect(alice, daemon_id, "live")
    # moto never raises GoneException, so the management API client is stubbed: the push to the
    # newest connection succeeds, the older one is gone.
    mgmt = container.ws_push._get_client()
    with Stubber(mgmt) as stub:
        stub.add_response("post_to_connection", {}, {"ConnectionId": "live", "Data": ANY})
        stub.add_client_error("post_to_connection", service_error_code="GoneException", http_status_code=410,
                              expected_params={"ConnectionId": "stale", "Data": ANY})
        upload_session(client, alice)
        dispatch(client, alice, questions=["sensitive_files"])
        stub.assert_no_pending_responses()
    now = int(clock.now().timestamp())
    assert container.daemon_store.get_connection("stale", now_epoch=now) is None
    assert container.daemon_store.get_connection("live", now_epoch=now) is not None
    assert container.daemon_store.daemon_connections("acme", daemon_id, now_epoch=now) == ["live"]


def test_expired_connection_items_are_ignored(client: Any, clock: FrozenClock, container: Any, alice: str) -> None:
    daemon_id = register(client, alice)
    connect(alice, daemon_id)
    clock.advance(2 * 3600 + 1)
    now = int(clock.now().timestamp())
    assert container.daemon_store.get_connection("conn-1", now_epoch=now) is None
    assert container.daemon_store.daemon_connections("acme", daemon_id, now_epoch=now) == []


def test_a_connection_is_authorised_only_until_its_token_expires(client: Any, clock: FrozenClock,
                                                                 container: Any) -> None:
    short = mint("acme", "alice", [], ttl_seconds=600)
    daemon_id = register(client, short)
    assert connect(short, daemon_id)["statusCode"] == 200

    def heartbeat() -> dict[str, Any]:
        daemon_ws_message(ws_event("$default", "conn-1", body='{"action": "heartbeat"}'), None)
        return pushed("conn-1")[-1]

    for _ in range(9):  # heartbeats keep the daemon present (90 s presence) up to just before the exp
        clock.advance(65)
        assert heartbeat()["type"] == "heartbeat_ack"
    clock.advance(20)  # the token's exp has passed; the connection item would otherwise live 2 h
    refused = heartbeat()
    assert refused["type"] == "error" and refused["error"]["code"] == "connection_not_found"
    assert "expired" in refused["error"]["message"]
    now = int(clock.now().timestamp())
    assert container.daemon_store.daemon_connections("acme", daemon_id, now_epoch=now) == []
    # Nothing is pushed to it any more either: a new job goes out by poll only.
    upload_session(client, mint("acme", "alice", []))
    before = len(pushed("conn-1"))
    fresh = mint("acme", "alice", [])
    dispatch(client, fresh, questions=["sensitive_files"])
    assert len(pushed("conn-1")) == before
