"""What the reference-daemon tests share: dispatching a daemon run over HTTP, reading it back, and waiting
for a daemon to finish it."""

from __future__ import annotations

from typing import Any

from daemon.agent import Daemon
from daemon.client import ApiClient
from tests.daemon.conftest import wait_for


def dispatch(api: ApiClient, questions: list[str]) -> str:
    status, body = api.call("POST", "/sessions/sess-1/eval-runs", {"runner": "daemon", "questions": questions})
    assert status == 202, body
    return str(body["eval_run_id"])


def get_run(api: ApiClient, run_id: str) -> dict[str, Any]:
    return dict(api.get(f"/eval-runs/{run_id}"))


def finished(daemon: Daemon, run_id: str) -> Any:
    return wait_for(lambda: next((o for o in daemon.outcomes if o.eval_run_id == run_id), None),
                    f"the daemon to finish {run_id}")
