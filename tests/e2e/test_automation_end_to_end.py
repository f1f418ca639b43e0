"""Online and bulk evaluation over HTTP only, against the real local stack (`make run`): an admin's rule
judges a matching upload by itself (the worker gets the upload's notice and creates the run, which the
worker then judges), a re-upload of the same bytes creates nothing, and a batch-mode eval batch is
judged through the fake vendor's batch API and finished by the local automation poller."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stack import LocalStack, mint_token

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sessions" / "claude-code-full.jsonl"
KEY = "sk-ant-e2e-automation-0123456789KEY3"


def _until(check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


def _upload(http: httpx.Client, session_id: str) -> None:
    resp = http.put(f"/sessions/{session_id}?format=claude-code", content=FIXTURE.read_bytes(),
                    headers={"Content-Type": "application/x-ndjson"})
    assert resp.status_code in (200, 201), resp.text


def _finished(http: httpx.Client, run_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = http.get(f"/eval-runs/{run_id}").json()
    return body if body["status"] in ("succeeded", "failed", "timed_out", "cancelled") else None


def test_a_rule_judges_matching_uploads_once_per_content(local_stack: LocalStack) -> None:
    admin = local_stack.http(mint_token("e2e-rules", "alice", "admin"))
    member = local_stack.http(mint_token("e2e-rules", "bob", "member"))
    assert admin.put("/admin/settings/eval-runner", json={"anthropic": {
        "api_key": KEY, "model": "claude-sonnet-4-6", "base_url": local_stack.fake_vendor_url}}).status_code == 200
    rule = admin.post("/admin/eval-rules", json={"name": "all Claude Code", "sample_rate": 1,
                                                 "filter": {"format": ["claude-code"]}, "questions": ["safety"]})
    assert rule.status_code == 201, rule.text
    rule_id = rule.json()["rule_id"]

    _upload(member, "e2e-rule-1")
    runs = _until(lambda: member.get("/sessions/e2e-rule-1/eval-runs").json()["items"])
    assert runs[0]["trigger"] == {"kind": "rule", "rule_id": rule_id}
    run = _until(lambda: _finished(member, runs[0]["eval_run_id"]))
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"]["completed"] == 4

    _upload(member, "e2e-rule-1")  # identical bytes: no second run
    stats = _until(lambda: admin.get(f"/admin/eval-rules/{rule_id}").json()["stats"])
    time.sleep(3)  # give the worker the time it took for the first notice, and then some
    assert len(member.get("/sessions/e2e-rule-1/eval-runs").json()["items"]) == 1
    assert stats["runs"] == 1 and stats["matched"] == 1


def test_a_batch_mode_batch_is_judged_through_the_vendor_batch_api(local_stack: LocalStack) -> None:
    admin = local_stack.http(mint_token("e2e-bulk", "alice", "admin"))
    member = local_stack.http(mint_token("e2e-bulk", "bob", "member"))
    assert admin.put("/admin/settings/eval-runner", json={"anthropic": {
        "api_key": KEY, "model": "claude-sonnet-4-6", "base_url": local_stack.fake_vendor_url}}).status_code == 200
    for session_id in ("e2e-bulk-1", "e2e-bulk-2"):
        _upload(member, session_id)
    created = member.post("/eval-batches", json={"session_ids": ["e2e-bulk-1", "e2e-bulk-2"], "mode": "batch",
                                                 "questions": ["efficiency"]})
    assert created.status_code == 202, created.text
    batch_id = created.json()["batch_id"]
    view = _until(lambda: (v := member.get(f"/eval-batches/{batch_id}").json())["status"] == "finished" and v)
    assert view["counts"] == {"succeeded": 2}
    for run_id in view["run_ids"]:
        run = member.get(f"/eval-runs/{run_id}").json()
        assert run["mode"] == "batch" and run["retrospective_status"] == "skipped"
        assert run["usage"]["cache_read_input_tokens"] > 0  # the trace prefix was cached within the vendor batch
    batches = httpx.get(f"{local_stack.fake_vendor_url}/_fake/batches", timeout=10).json()["batches"]
    assert sum(1 for b in batches if b["ended"]) >= 2
