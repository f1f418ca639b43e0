"""Batch-mode runs end to end under moto with the real SDKs against the dev fake vendor's batch APIs: the
worker submits one vendor batch per run (once, however often the job is delivered), the scheduled
poller writes the verdicts and finishes the run through the lifecycle; errored and expired requests fail
their questions with clear codes and a rerun judges them in a new vendor batch; a cancel while the
vendor works cancels the vendor batch."""

from __future__ import annotations

import time
from typing import Any

import pytest

from chalicelib.worker.automation_poller import poll_automation
from devstack.fake_vendor import FakeVendor
from devstack.fake_vendor import batches as fake_vendor_batches
from tests.api.dispatch_kit import drain_queue
from tests.api.rules_kit import deliver, upload
from tests.api.worker_kit import KEYS, MODELS
from tests.conftest import mint, register_secret

BOB = mint("acme", "bob", [])
VENDORS = ["anthropic", "openai"]


def configure(client: Any, fake: FakeVendor, vendor: str) -> None:
    base_url = fake.anthropic_base_url if vendor == "anthropic" else fake.openai_base_url
    resp = client.put("/admin/settings/eval-runner", token=mint("acme", "root", ["admin"]), json_body={
        vendor: {"api_key": register_secret(KEYS[vendor]), "model": MODELS[vendor], "base_url": base_url}})
    assert resp.status_code == 200, resp.json


def start_batch(client: Any, container: Any, sessions: list[str], **body: Any) -> list[str]:
    """POST /eval-batches in batch mode; deliver the run jobs to the worker (which submits)."""
    resp = client.post("/eval-batches", token=BOB, json_body={"session_ids": sessions, "mode": "batch", **body})
    assert resp.status_code == 202, resp.json
    jobs = drain_queue(container)
    deliver(jobs)
    return [j["eval_run_id"] for j in jobs]


def run(client: Any, run_id: str) -> dict[str, Any]:
    resp = client.get(f"/eval-runs/{run_id}", token=BOB)
    assert resp.status_code == 200, resp.json
    return dict(resp.json)


def poll_until_finished(client: Any, run_ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(run(client, r)["status"] in ("queued", "running") for r in run_ids):
        assert time.monotonic() < deadline, "the batch-mode runs never finished"
        poll_automation()
        time.sleep(0.05)


def batch_requests(fake: FakeVendor) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r.get("batch_id")]


@pytest.mark.parametrize("vendor", VENDORS)
def test_batch_mode_runs_are_judged_through_one_vendor_batch_each(client: Any, container: Any, fake: FakeVendor,
                                                                  vendor: str) -> None:
    configure(client, fake, vendor)
    upload(client, "s1")
    upload(client, "s2", text="add a test")
    run_ids = start_batch(client, container, ["s1", "s2"], questions=["safety"])
    for run_id in run_ids:
        view = run(client, run_id)
        assert view["status"] == "running" and view["mode"] == "batch"
    assert len({r["batch_id"] for r in batch_requests(fake)}) <= 2

    poll_until_finished(client, run_ids)
    for run_id in run_ids:
        view = run(client, run_id)
        assert view["status"] == "succeeded", view["error"]
        assert view["progress"]["completed"] == 4 and view["retrospective_status"] == "skipped"
        assert view["result"]["overall_score"] is not None
        # The trace prefix is written once per vendor batch and read by the other three questions.
        assert view["usage"]["cache_read_input_tokens"] > 0
        # What it reserved (no tool rounds, no retrospective) still bounds what it cost.
        assert 0 < view["cost"]["usd"] <= view["cost"]["reserved_usd"], view["cost"]
    # Nothing went through the direct endpoints: every judge call was a batch request.
    assert all(r.get("batch_id") for r in fake.requests if r["endpoint"] == "generate")
    assert len(batch_requests(fake)) == 8
    assert container.automation_store.open_vendor_batches(limit=10) == []


def test_a_redelivered_job_never_submits_twice(client: Any, container: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, "s1")
    resp = client.post("/eval-batches", token=BOB, json_body={"session_ids": ["s1"], "mode": "batch",
                                                               "questions": ["efficiency"]})
    assert resp.status_code == 202
    jobs = drain_queue(container)
    deliver(jobs)
    deliver(jobs)
    assert len(fake.batches.batches) == 1


def test_errored_and_expired_requests_fail_their_questions_and_a_rerun_judges_them(
        client: Any, container: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, "s1")
    fake.script("destructive_commands", status=400, message="Invalid request: unsupported parameter.")
    fake_vendor_batches.configure(fake, expire=["sensitive_files"])
    (run_id,) = start_batch(client, container, ["s1"], questions=["safety"])
    poll_until_finished(client, [run_id])

    view = run(client, run_id)
    assert view["status"] == "succeeded"
    reasons = {q["question_id"]: (q["status"], (q["failure_reason"] or {}).get("kind"))
               for q in view["progress"]["questions"]}
    assert reasons["sensitive_files"] == ("failed", "batch_expired")
    assert reasons["destructive_commands"] == ("failed", "bad_request")
    assert sum(1 for status, _ in reasons.values() if status == "scored") == 2

    fake_vendor_batches.configure(fake, expire=[])
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=BOB)
    assert resp.status_code == 202, resp.json
    (job,) = drain_queue(container)
    assert job["mode"] == "batch"
    deliver([job])
    poll_until_finished(client, [run_id])
    view = run(client, run_id)
    assert view["status"] == "succeeded" and view["progress"]["completed"] == 4
    # The rerun's vendor batch asked only the two questions that had failed (the expired one was never
    # processed the first time, so the vendor saw 3 + 2 requests).
    assert len(fake.batches.batches) == 2 and len(batch_requests(fake)) == 3 + 2


def test_only_expired_requests_fail_the_run_batch_expired(client: Any, container: Any, fake: FakeVendor) -> None:
    configure(client, fake, "openai")
    upload(client, "s1")
    fake_vendor_batches.configure(fake, expire=["ID:"])
    (run_id,) = start_batch(client, container, ["s1"], questions=["efficiency"])
    poll_until_finished(client, [run_id])
    view = run(client, run_id)
    assert view["status"] == "failed" and view["error"]["code"] == "batch_expired"


def test_cancelling_a_run_cancels_its_vendor_batch(client: Any, container: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, "s1")
    fake_vendor_batches.configure(fake, hold=True)
    (run_id,) = start_batch(client, container, ["s1"], questions=["quality"])
    assert run(client, run_id)["status"] == "running"
    assert client.post(f"/eval-runs/{run_id}/cancel", token=BOB).status_code == 200
    poll_automation()
    poll_automation()
    (batch,) = fake.batches.batches.values()
    assert batch.cancelled_at is not None and not batch_requests(fake)
    stored = container.run_store.get("acme", run_id)
    assert stored.status == "cancelled" and stored.finalized_at is not None
    assert container.automation_store.open_vendor_batches(limit=10) == []


def test_a_batch_mode_run_reserves_no_tool_rounds_and_no_retrospective(client: Any, fake: FakeVendor) -> None:
    # One round per question through the vendor batch: the built-in tool questions are judged on the
    # trace alone, so their up to six tool rounds each are not part of the run's upper bound (nor is
    # the retrospective). The batch discount alone would only halve it.
    configure(client, fake, "anthropic")
    upload(client, "s1")
    high = {}
    for mode in ("now", "batch"):
        resp = client.post("/eval-batches/estimate", token=BOB, json_body={"session_ids": ["s1"], "mode": mode})
        assert resp.status_code == 200, resp.json
        high[mode] = resp.json["estimate_usd_high"]
        assert resp.json["questions"] == 13 and resp.json["estimate_usd_low"] <= high[mode]
    assert high["batch"] * 10 < high["now"] * 0.5, high
