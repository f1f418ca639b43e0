"""The upper bound holds: a worst-case run through the fake vendor (every judge and the retrospective
need their repair re-ask, every answer at max_tokens, no prompt cache hit) is billed no more than the
usd_high it reserved; a vendor billing past the bound gets no further call (budget_exhausted, the
verdicts so far kept); concurrent dispatches never overshoot a budget; daemon runs without token
counts cost null."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chalicelib.domain.errors import DomainError
from chalicelib.domain.principal import Principal
from chalicelib.domain.spend import LedgerView, usd_to_micros
from chalicelib.domain.spend_prices import cost_micros
from chalicelib.judges.catalog import QUESTIONS
from chalicelib.services.eval_runners import EvalRunRequest
from devstack.fake_vendor import FakeVendor
from tests.api.worker_kit import (
    TEST_TUNING,
    configure,
    generate_requests,
    judge_requests,
    queued_event,
    trace,
    upload,
    view,
    work,
)
from tests.conftest import mint

ADMIN = mint("acme", "root", ["admin"])
BOB = mint("acme", "bob", [])
SESSION = "sess-worker-1"


def _estimate(client: Any) -> dict[str, Any]:
    resp = client.post(f"/sessions/{SESSION}/eval-runs/estimate", token=BOB, json_body={})
    assert resp.status_code == 200, resp.json
    return dict(resp.json)


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
def test_a_worst_case_run_is_billed_at_most_its_usd_high(client: Any, worker: Any, fake: FakeVendor,
                                                        vendor: str) -> None:
    configure(client, fake, vendor)
    upload(client, trace(n_tools=12, output="y" * 900))
    # Every answer as long as max_tokens allows, no prompt cache to read from, and every judge and the
    # retrospective answer unusably first, so each needs its repair re-ask: every call the bound counts.
    fake.configure(output_tokens_floor=TEST_TUNING.max_output_tokens, cache_ttl_seconds=0)
    for q in QUESTIONS:
        fake.script(q.id, times=1, malformed=True)
    fake.script("retrospective", times=1, malformed=True)
    est = _estimate(client)
    resp = client.post(f"/sessions/{SESSION}/eval-runs", token=BOB, json_body={"quote": est["quote"]})
    assert resp.status_code == 202, resp.json
    run_id = resp.json["eval_run_id"]
    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "succeeded" and v["progress"]["completed"] == len(QUESTIONS), v["error"]
    assert v["retrospective_status"] == "succeeded"
    formula = est["formula"]
    # Every text question asked twice (the repair), every tool question within its rounds, the retrospective
    # twice: never more requests than the bound counts.
    text_questions = len(QUESTIONS) - formula["tool_questions"]
    sent = len(generate_requests(fake))
    assert 2 * text_questions + 2 + formula["tool_questions"] <= sent
    assert sent <= formula["context_calls_max"] + formula["retrospective_calls_max"]
    stored = worker.run_store.require("acme", run_id)
    assert stored.admission is not None and stored.admission.price is not None
    billed = cost_micros(stored.usage, stored.admission.price) + stored.unreported_cost_micros
    assert stored.usage.output_tokens >= sent * TEST_TUNING.max_output_tokens
    assert 0 < billed <= usd_to_micros(est["usd_high"])


def test_a_vendor_billing_past_the_bound_gets_no_further_call(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    est = _estimate(client)
    # A gateway that reports far more output than max_tokens: the warm-up judge alone bills past the
    # reservation, so the guard sends nothing more.
    fake.configure(output_tokens_floor=int(est["usd_high"] / 15e-6) + 10_000)
    run_id = client.post(f"/sessions/{SESSION}/eval-runs", token=BOB,
                         json_body={"quote": est["quote"]}).json["eval_run_id"]
    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "failed" and v["error"]["code"] == "budget_exhausted", v["error"]
    scored = [q for q in v["progress"]["questions"] if q["status"] == "scored"]
    stopped = [q for q in v["progress"]["questions"] if q["status"] == "failed"]
    assert len(scored) == 1 and len(stopped) == len(QUESTIONS) - 1
    assert {q["failure_reason"]["kind"] for q in stopped} == {"budget_exhausted"}
    assert v["result"] is not None and len(v["result"]["categories"][0]["questions"]) == 1  # kept
    assert len(judge_requests(fake)) == 1
    ledger = LedgerView.parse(worker.budget_ledger.read("acme"))
    assert run_id not in ledger.open_runs  # settled at what the vendor reported


def test_concurrent_dispatches_never_overshoot_a_budget(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    est = _estimate(client)
    room = 4
    resp = client.put("/admin/settings/eval-runner/limits", token=ADMIN, json_body={
        "user_daily_usd": round(est["usd_high"] * room + est["usd_high"] / 2, 2), "max_active_runs_per_user": 50,
        "max_active_runs_per_tenant": 50})
    assert resp.status_code == 200, resp.json
    service = worker.eval_runs
    principal = Principal(tenant="acme", user="bob")
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def one() -> None:
        barrier.wait()
        try:
            service.dispatch_eval_run(principal, SESSION, EvalRunRequest(quote=est["quote"]))
            result = "accepted"
        except DomainError as exc:
            result = exc.code
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert outcomes.count("accepted") == room, outcomes
    assert outcomes.count("budget_exceeded") == 12 - room, outcomes
    ledger = LedgerView.parse(worker.budget_ledger.read("acme"))
    assert ledger.day_committed["bob"] == room * usd_to_micros(est["usd_high"])


def test_a_daemon_run_without_token_counts_costs_null_and_reserves_nothing(client: Any, container: Any) -> None:
    from tests.api.daemon_kit import claim, event, register, result_body, upload_session, verdict
    from tests.api.daemon_kit import dispatch as dispatch_daemon

    alice = mint("acme", "alice", [])
    daemon_id = register(client, alice)
    upload_session(client, alice)
    run_id = dispatch_daemon(client, alice, questions=["sensitive_files"])["eval_run_id"]
    assert LedgerView.parse(container.budget_ledger.read("acme")).open_runs[run_id]["r"] == 0
    assert claim(client, alice, daemon_id).status_code == 200
    resp = client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=event(
        run_id, "eval_question_completed", question_id="sensitive_files", category="safety", score=5,
        verdict="pass", index=1, total=1))
    assert resp.status_code == 200, resp.json
    body = result_body(run_id, [verdict("sensitive_files", 5)], ["sensitive_files"])
    assert client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body).status_code == 200
    v = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert v["status"] == "succeeded" and v["cost"]["usd"] is None
    assert run_id not in LedgerView.parse(container.budget_ledger.read("acme")).open_runs
