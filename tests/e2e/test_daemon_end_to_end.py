"""End to end over HTTP only, the daemon runner: against the real local stack (`make run`), a tenant
with no vendor configured runs the reference daemon (`python -m daemon run`, with the fake judge
CLIs of daemon/fake_cli first on PATH) as a separate process; a member uploads a Claude Code
session, dispatches (the daemon is implied), and the run succeeds with the same result shape as a
server run. SIGTERM stops the daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import ROOT, LocalStack, mint_token

pytestmark = pytest.mark.e2e

FIXTURE = ROOT / "tests" / "fixtures" / "sessions" / "claude-code-full.jsonl"
FAKE_CLI_DIR = ROOT / "daemon" / "fake_cli"
TENANT = "e2e-daemon"
CATEGORIES = ["safety", "plan_adherence", "quality", "efficiency"]


def _wait_for(what: str, check: Any, *, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        value = check()
        if value:
            return value
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def daemon_process(local_stack: LocalStack, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, str]]:
    token = mint_token(TENANT, "dora", "member")
    log = tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{FAKE_CLI_DIR}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log, "wb") as out:
        # A short long poll keeps the SIGTERM shutdown quick; the protocol is the same.
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--api-url", local_stack.api_url,
                                 "--token", token, "--name", "e2e-laptop", "--judges", "claude",
                                 "--concurrency", "4", "--poll-wait", "2"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, log, token
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_daemon_runner_end_to_end(local_stack: LocalStack,
                                  daemon_process: tuple[subprocess.Popen[bytes], Path, str]) -> None:
    proc, log, token = daemon_process
    member = local_stack.http(token)

    # No vendor configured in this tenant: once the daemon registers, it is the only route.
    def daemon_listed() -> dict[str, Any] | None:
        runners = member.get("/eval/runners").json()
        return runners if runners["daemon"]["available"] else None

    runners = _wait_for("the daemon to be listed", daemon_listed, timeout=30, proc=proc, log=log)
    assert runners["server"]["vendors"] == []
    assert runners["run_button"] == {"visible": True, "routes": ["daemon"]}
    assert [d["name"] for d in runners["daemon"]["daemons"]] == ["e2e-laptop"]

    upload = member.put("/sessions/e2e-daemon-session?format=claude-code", content=FIXTURE.read_bytes(),
                        headers={"Content-Type": "application/x-ndjson"})
    assert upload.status_code in (200, 201), upload.text

    dispatch = member.post("/sessions/e2e-daemon-session/eval-runs", json={})
    assert dispatch.status_code == 202, dispatch.text
    accepted = dispatch.json()
    assert accepted["runner"] == "daemon" and accepted["vendor"] is None
    run_id = accepted["eval_run_id"]

    def finished() -> dict[str, Any] | None:
        resp = member.get(f"/eval-runs/{run_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body if body["status"] in ("succeeded", "failed", "timed_out", "cancelled") else None

    run = _wait_for("the daemon run to finish", finished, timeout=120, proc=proc, log=log)
    assert run["status"] == "succeeded", (run.get("error"), run["progress"])
    assert run["runner"] == "daemon"

    # The same SessionEvalCompleted shape as a server run.
    result = run["result"]
    assert set(result) == {"eval_run_id", "judge_model", "categories", "overall_score", "summary", "retrospective"}
    assert result["eval_run_id"] == run_id and result["judge_model"]
    assert [c["name"] for c in result["categories"]] == CATEGORIES
    verdicts = [q for c in result["categories"] for q in c["questions"]]
    assert len(verdicts) == 13
    for verdict in verdicts:
        assert set(verdict) == {"category", "question_id", "score", "verdict", "finding", "evidence",
                                "recommendation", "tools_used", "evidence_entries"}
        assert 1 <= verdict["score"] <= 5
    assert 1 <= result["overall_score"] <= 5
    assert run["progress"]["total"] == 13 and run["progress"]["completed"] == 13
    assert run["progress"]["failed"] == 0
    usage = run["usage"]
    assert set(usage) == {"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0

    # The stack's console shows one progress line per judge the daemon reported.
    stack_log = local_stack.log_path.read_text(errors="replace")
    judge_lines = [line for line in stack_log.splitlines() if run_id in line and '"daemon judge ' in line]
    assert len(judge_lines) == 13, judge_lines

    # SIGTERM: the daemon stops polling and exits cleanly.
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon did not exit after SIGTERM:\n{log.read_text(errors='replace')[-3000:]}")
    assert "stopping" in log.read_text(errors="replace")
    with httpx.Client(base_url=local_stack.api_url, headers={"Authorization": f"Bearer {token}"}) as again:
        assert again.get(f"/eval-runs/{run_id}").json()["status"] == "succeeded"
