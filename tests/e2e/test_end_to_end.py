"""End to end over HTTP only, against the real local stack (`make run`): an admin configures both
vendors against the dev fake vendor, a member uploads a Claude Code session, reads the dialog's
runners, dispatches with the required vendor and polls to `succeeded`; then a daemon run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import LocalStack, mint_token

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sessions"
ANTHROPIC_KEY = "sk-ant-e2e-0123456789abcdefKEY1"
OPENAI_KEY = "sk-proj-e2e-0123456789abcdefKEY2"


def _poll_run(http: httpx.Client, run_id: str, *, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    delay = 0.2
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = http.get(f"/eval-runs/{run_id}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if body["status"] in ("succeeded", "failed", "timed_out", "cancelled"):
            return body
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    raise AssertionError(f"run {run_id} still {body.get('status')} after {timeout}s: {body.get('progress')}")


def test_server_runner_end_to_end(local_stack: LocalStack) -> None:
    admin = local_stack.http(mint_token("e2e-acme", "alice", "admin"))
    member = local_stack.http(mint_token("e2e-acme", "bob", "member"))
    vendor = local_stack.fake_vendor_url

    # A fresh tenant with no vendor and no daemon: the button is hidden.
    runners = member.get("/eval/runners").json()
    assert runners["run_button"]["visible"] is False

    resp = admin.put("/admin/settings/eval-runner", json={
        "anthropic": {"api_key": ANTHROPIC_KEY, "model": "claude-sonnet-4-6", "base_url": vendor},
        "openai": {"api_key": OPENAI_KEY, "model": "gpt-4o", "base_url": f"{vendor}/v1"},
        "run_timeout_seconds": 120,
    })
    assert resp.status_code == 200, resp.text
    settings = resp.json()
    assert ANTHROPIC_KEY not in resp.text and OPENAI_KEY not in resp.text
    assert settings["anthropic"]["enabled"] and settings["openai"]["enabled"]
    assert settings["anthropic"]["api_key_hint"] == "…KEY1"

    test = admin.post("/admin/settings/eval-runner/vendors/anthropic/test")
    assert test.status_code == 200 and test.json()["ok"] is True, test.text

    upload = member.put("/sessions/e2e-session-1?format=claude-code",
                        content=(FIXTURES / "claude-code-full.jsonl").read_bytes(),
                        headers={"Content-Type": "application/x-ndjson"})
    assert upload.status_code in (200, 201), upload.text
    assert upload.json()["entries"] > 0

    runners = member.get("/eval/runners").json()
    assert sorted(runners["server"]["vendors"]) == ["anthropic", "openai"]
    assert runners["server"]["vendor_required"] is True
    assert runners["run_button"]["visible"] is True

    missing_vendor = member.post("/sessions/e2e-session-1/eval-runs", json={})
    assert missing_vendor.status_code == 400
    assert missing_vendor.json()["error"]["code"] == "vendor_required"

    dispatch = member.post("/sessions/e2e-session-1/eval-runs", json={"vendor": "anthropic"},
                           headers={"Idempotency-Key": "e2e-1"})
    assert dispatch.status_code == 202, dispatch.text
    accepted = dispatch.json()
    assert accepted["status"] == "queued" and accepted["runner"] == "server"
    assert accepted["vendor"] == "anthropic" and accepted["model"] == "claude-sonnet-4-6"

    run = _poll_run(member, accepted["eval_run_id"])
    assert run["status"] == "succeeded", run.get("error")
    result = run["result"]
    assert result["judge_model"] == "claude-sonnet-4-6"
    verdicts = [q for c in result["categories"] for q in c["questions"]]
    assert len(verdicts) == 13
    assert [c["name"] for c in result["categories"]] == ["safety", "plan_adherence", "quality", "efficiency"]
    assert 1 <= result["overall_score"] <= 5
    usage = run["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    # The trace is cached once and read by the other judges.
    assert usage["cache_read_input_tokens"] > 0

    listed = member.get("/sessions/e2e-session-1/eval-runs").json()["items"]
    assert listed[0]["eval_run_id"] == accepted["eval_run_id"]

    for body in (run, listed, settings):
        assert ANTHROPIC_KEY not in str(body) and OPENAI_KEY not in str(body)
    log = local_stack.log_path.read_text(errors="replace")
    assert ANTHROPIC_KEY not in log and OPENAI_KEY not in log
    # The worker's console shows one structured progress line per judge of the run.
    judge_lines = [line for line in log.splitlines() if accepted["eval_run_id"] in line and '"judge ' in line]
    assert len(judge_lines) == 13, judge_lines
