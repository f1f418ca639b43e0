"""Fixtures for the reference daemon's tests: the API served over real HTTP (chalice's local server
on an ephemeral port, in a thread, backed by moto), the fake judge CLIs on PATH, and a daemon."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.agent import Daemon, DaemonConfig
from daemon.client import ApiClient, UrllibTransport
from tests.conftest import mint

TRACE = {"trace": [
    {"kind": "user_message", "timestamp": "2026-11-29T10:00:00.000Z", "text": "Fix the flaky parser test."},
    {"kind": "tool_invocation", "timestamp": "2026-11-29T10:00:02.000Z", "tool": "Bash", "call_id": "c1",
     "arguments": {"command": "pytest -q tests/test_parser.py"}},
    {"kind": "tool_result", "timestamp": "2026-11-29T10:00:04.000Z", "tool": "Bash", "call_id": "c1",
     "output": "1 passed", "is_error": False, "truncated": False, "output_bytes": 8},
    {"kind": "assistant_message", "timestamp": "2026-11-29T10:00:05.000Z", "text": "The test passes now."},
]}
FAKE_CLI_DIR = Path(__file__).resolve().parents[2] / "daemon" / "fake_cli"


def _serve_threaded(app: Any) -> None:
    """Give the app chalice-local's thread-local current_request once (what `chalice local` does),
    defaulting to None in threads that have not handled a request yet."""
    from chalice.local import LocalChalice

    if isinstance(app, LocalChalice):
        return

    class ThreadLocalRequests(LocalChalice):
        @property  # type: ignore[override]
        def current_request(self) -> Any:
            return getattr(self._THREAD_LOCAL, "current_request", None)

        @current_request.setter
        def current_request(self, value: Any) -> None:
            self._THREAD_LOCAL.current_request = value

    app.__class__ = type("TestLocalChalice", (ThreadLocalRequests, app.__class__), {})


@pytest.fixture
def api_url(container: Any) -> Iterator[str]:
    from chalice.config import Config
    from chalice.local import LocalDevServer

    from app import app

    _serve_threaded(app)
    server = LocalDevServer(app, Config.create(chalice_app=app, lambda_timeout=60), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def alice() -> str:
    return mint("acme", "alice", [])


@pytest.fixture
def fake_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any]], Path]:
    """Puts the fake claude/codex on PATH; call it with a script to get the invocation log path."""
    monkeypatch.setenv("PATH", f"{FAKE_CLI_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    log = tmp_path / "invocations.jsonl"

    def configure(script: dict[str, Any]) -> Path:
        path = tmp_path / "script.json"
        path.write_text(json.dumps({**script, "log": str(log)}))
        monkeypatch.setenv("FAKE_JUDGE_SCRIPT", str(path))
        return log

    configure({})
    return configure


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Block until `predicate()` is truthy (a generous ceiling against hangs, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def make_daemon(api_url: str, alice: str) -> Iterator[Callable[..., Daemon]]:
    daemons: list[Daemon] = []

    def make(judges: list[str] | None = None, *, start: bool = True, **kw: Any) -> Daemon:
        config = DaemonConfig(name="test-daemon", judges=judges or ["claude"], poll_wait=1, platform="linux-test",
                              **kw)
        d = Daemon(config, ApiClient(UrllibTransport(api_url), alice), log=lambda _m: None)
        daemons.append(d)
        if start:
            d.start()
        else:
            d.register()
        return d

    yield make
    for d in daemons:
        d.stop()
    for d in daemons:
        d.join(10)


@pytest.fixture
def api(api_url: str, alice: str) -> ApiClient:
    client = ApiClient(UrllibTransport(api_url), alice)
    status, _ = client.call("PUT", "/sessions/sess-1", TRACE)
    assert status in (200, 201)
    return client
