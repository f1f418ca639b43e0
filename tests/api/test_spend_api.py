"""Limits, prices, estimates, quotas, budgets, cost and usage through the API (chalice.test.Client,
moto, the worker against the in-process fake vendor). Assertions are on what users see and on the
spend ledger's stored counters."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.spend import LedgerView, usd_to_micros
from chalicelib.domain.spend_prices import cost_micros
from devstack.fake_vendor import FakeVendor
from tests.api.spend_kit import ADMIN, BOB, LIMITS, RecordedEvents, dispatch, estimate
from tests.api.worker_kit import (
    SESSION,
    configure,
    queued_event,
    trace,
    upload,
    view,
    work,
)
from tests.conftest import mint

PRICES = "/admin/settings/eval-runner/prices"


def queued_messages(container: Any) -> int:
    attrs = container.sqs.get_queue_attributes(QueueUrl=container.config.queue_url,
                                               AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def ledger(container: Any) -> LedgerView:
    return LedgerView.parse(container.budget_ledger.read("acme"))


# ------------------------------------------------------------------------------------ limits and prices


def test_limits_start_at_safe_caps_and_change_with_if_match(client: Any) -> None:
    resp = client.get(LIMITS, token=ADMIN)
    assert resp.status_code == 200 and resp.headers["ETag"] == '"0"'
    body = resp.json
    assert (body["max_active_runs_per_user"], body["max_active_runs_per_tenant"]) == (3, 20)
    assert body["tenant_monthly_usd"] is not None and body["user_daily_usd"] is not None
    assert body["retention_days"] is None and 0 < body["alert_at_fraction"] <= 1

    changed = client.put(LIMITS, token=ADMIN, headers={"If-Match": "0"},
                         json_body={"user_daily_usd": 12.5, "tenant_monthly_usd": None, "retention_days": 90})
    assert changed.status_code == 200, changed.json
    assert (changed.json["user_daily_usd"], changed.json["tenant_monthly_usd"], changed.json["version"]) == \
        (12.5, None, 1)
    stale = client.put(LIMITS, token=ADMIN, headers={"If-Match": "0"}, json_body={"user_daily_usd": 1})
    assert (stale.status_code, stale.json["error"]["code"]) == (412, "version_mismatch")
    assert client.get(LIMITS, token=BOB).status_code == 403
    assert client.put(LIMITS, token=BOB, json_body={"user_daily_usd": 1}).status_code == 403


@pytest.mark.parametrize("body", [
    {"user_daily_usd": -5}, {"tenant_monthly_usd": "100"}, {"alert_at_fraction": 1.2},
    {"alert_at_fraction": None}, {"max_active_runs_per_user": None}, {"max_active_runs_per_tenant": -1},
    {"retention_days": "30"}, {"budget": 5},
])
def test_bad_limits_are_400_with_field_details_and_nothing_is_stored(client: Any, body: dict[str, Any]) -> None:
    resp = client.put(LIMITS, token=ADMIN, json_body=body)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"]["details"]["fields"], resp.json
    assert client.get(LIMITS, token=ADMIN).json["version"] == 0


def test_prices_ship_defaults_and_take_overrides_for_known_models(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    table = client.get(PRICES, token=ADMIN).json
    rows = {r["model"]: r for r in table["models"]}
    assert rows["claude-sonnet-4-6"]["source"] == "default" and rows["gpt-4o"]["vendor"] == "openai"
    override = {**{k: v for k, v in rows["claude-sonnet-4-6"].items() if k != "source"}, "input_usd_per_mtok": 2}
    resp = client.put(PRICES, token=ADMIN, headers={"If-Match": "0"}, json_body={"models": [override]})
    assert resp.status_code == 200, resp.json
    rows = {r["model"]: r for r in resp.json["models"]}
    assert rows["claude-sonnet-4-6"]["source"] == "admin" and rows["claude-sonnet-4-6"]["input_usd_per_mtok"] == 2
    assert client.put(PRICES, token=ADMIN, headers={"If-Match": "0"},
                      json_body={"models": []}).status_code == 412

    bad_rows = [
        {**override, "model": "gpt-9-imaginary"},                  # unknown model
        {**override, "output_usd_per_mtok": -1},                   # negative
        {**override, "cache_read_usd_per_mtok": "0.3"},            # not a number
        {**override, "batch_discount": 2},                         # a fraction over 1
        {**override, "vendor": "openai"},                          # a Claude model is not OpenAI's
    ]
    for bad in bad_rows:
        resp = client.put(PRICES, token=ADMIN, json_body={"models": [bad]})
        assert resp.status_code == 400, (bad, resp.json)
        assert resp.json["error"]["details"]["fields"][0]["field"].startswith("models.0"), resp.json
    assert client.get(PRICES, token=ADMIN).json["version"] == 1  # nothing stored


# ------------------------------------------------------------------------------------ estimate and admission


def test_estimate_then_dispatch_reserves_the_upper_bound_and_settles_the_actual_cost(
        client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    est = estimate(client).json
    assert est["within_limits"] is True and est["blocked_by"] is None and est["priced"] is True
    assert 0 < est["usd_low"] < est["usd_high"] and est["quote"]
    formula = est["formula"]
    assert est["questions"] == 13
    assert est["max_output_tokens"] == (formula["context_calls_max"] + formula["retrospective_calls_max"]) * 2048

    accepted = dispatch(client, {"quote": est["quote"]})
    assert accepted.status_code == 202, accepted.json
    run_id = accepted.json["eval_run_id"]
    reserved = usd_to_micros(est["usd_high"])
    held = ledger(worker)
    assert held.open_runs[run_id]["r"] == reserved and held.day_committed["bob"] == reserved
    assert held.month_committed == reserved
    running = view(client, run_id)
    assert running["cost"]["reserved_usd"] == est["usd_high"]

    work(queued_event(worker))
    done = view(client, run_id)
    assert done["status"] == "succeeded"
    stored = worker.run_store.require("acme", run_id)
    actual = cost_micros(stored.usage, stored.admission.price)
    assert done["cost"] == {"usd": actual / 1e6, "priced": True, "batch": False, "reserved_usd": est["usd_high"],
                            "unreported_usd": None}
    assert 0 < actual <= reserved
    # Each question's cost is its own judge calls; the run adds the retrospective's.
    per_question = sum(q["cost_usd"] for q in done["progress"]["questions"])
    assert 0 < per_question < actual / 1e6
    settled = ledger(worker)
    assert run_id not in settled.open_runs and settled.active_by_user["bob"] == 0
    assert settled.day_committed["bob"] == actual == settled.day_spent["bob"] == settled.month_spent


def test_a_stale_quote_is_estimated_again(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    quote = estimate(client).json["quote"]
    upload(client, trace(n_tools=30, output="x" * 1500))  # the session grows after the estimate
    resp = dispatch(client, {"quote": quote})
    assert resp.status_code == 202, resp.json
    fresh = estimate(client).json["usd_high"]
    assert ledger(worker).open_runs[resp.json["eval_run_id"]]["r"] == usd_to_micros(fresh)
    assert dispatch(client, {"quote": "bm90IGEgcXVvdGU"}).status_code == 202  # garbage: estimated afresh


def test_the_user_quota_refuses_with_retry_after_and_queues_nothing(client: Any, worker: Any,
                                                                    fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    client.put(LIMITS, token=ADMIN, json_body={"max_active_runs_per_user": 1})
    assert dispatch(client).status_code == 202
    before = queued_messages(worker)
    refused = dispatch(client)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "too_many_active_runs"
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert refused.json["error"]["details"] == {"quota": "max_active_runs_per_user", "scope": "user", "limit": 1,
                                                "active": 1}
    assert queued_messages(worker) == before
    assert len(client.get(f"/sessions/{SESSION}/eval-runs", token=BOB).json["items"]) == 1
    est = estimate(client).json
    assert (est["within_limits"], est["blocked_by"], est["limit"]) == (False, "too_many_active_runs", "user")
    # Another user of the tenant still has a slot.
    assert dispatch(client, token=mint("acme", "carol", [])).status_code == 202
    # The slot comes back when the run is finalized.
    work(queued_event(worker))
    assert dispatch(client).status_code == 202


def test_a_run_over_the_daily_budget_is_402_with_what_is_left(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    high = estimate(client).json["usd_high"]
    client.put(LIMITS, token=ADMIN, json_body={"user_daily_usd": round(high * 1.5, 2)})
    assert dispatch(client).status_code == 202
    refused = dispatch(client)
    assert refused.status_code == 402, refused.json
    err = refused.json["error"]
    assert err["code"] == "budget_exceeded" and "daily" in err["message"]
    assert err["details"]["budget"] == "user_daily" and err["details"]["needed_usd"] == high
    assert err["details"]["left_usd"] == pytest.approx(round(high * 1.5, 2) - high, abs=1e-6)
    est = estimate(client).json
    assert (est["within_limits"], est["blocked_by"], est["limit"]) == (False, "budget_exceeded", "user_daily")
    assert "left of" in est["reason"]
    # After the first run settles at its (much smaller) actual cost, there is room again.
    work(queued_event(worker))
    assert dispatch(client).status_code == 202


def test_the_ledger_unreachable_refuses_with_503_and_stores_nothing(client: Any, worker: Any,
                                                                    fake: FakeVendor) -> None:
    from chalicelib.adapters.budget_ledger import DynamoBudgetLedger

    configure(client, fake, "anthropic")
    upload(client, trace())
    assert dispatch(client).status_code == 202  # the ledger exists
    before = queued_messages(worker)
    worker.__dict__["budget_ledger"] = DynamoBudgetLedger(worker.dynamodb, "no-such-table")
    for cached in ("spend", "run_budgeting", "eval_runs"):
        worker.__dict__.pop(cached, None)
    resp = dispatch(client)
    assert resp.status_code == 503, resp.json
    assert queued_messages(worker) == before
    assert len(client.get(f"/sessions/{SESSION}/eval-runs", token=BOB).json["items"]) == 1


# ------------------------------------------------------------------------------------ cost, usage, alerts


def test_an_unpriced_model_runs_with_a_null_cost(client: Any, worker: Any, fake: FakeVendor) -> None:
    resp = client.put("/admin/settings/eval-runner", token=ADMIN, json_body={"anthropic": {
        "api_key": "sk-ant-unpriced-00000000000000001", "model": "claude-experimental-9",
        "base_url": fake.anthropic_base_url}})
    assert resp.status_code == 200, resp.json
    upload(client, trace())
    est = estimate(client).json
    assert (est["priced"], est["usd_high"], est["quote"]) == (False, None, None)
    run_id = dispatch(client).json["eval_run_id"]
    work(queued_event(worker))
    v = view(client, run_id)
    assert v["status"] == "succeeded" and v["cost"]["usd"] is None and v["cost"]["priced"] is False
    usage = client.get("/usage?group_by=model", token=ADMIN).json
    assert usage["rows"][0]["key"] == "claude-experimental-9" and usage["rows"][0]["unpriced_runs"] == 1


def test_usage_groups_and_members_see_only_their_own(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    carol = mint("acme", "carol", [])
    dispatch(client)
    dispatch(client, token=carol)
    work(queued_event(worker))
    by_user = client.get("/usage?group_by=user", token=ADMIN).json
    assert {r["key"] for r in by_user["rows"]} == {"bob", "carol"} and by_user["scope"] == "tenant"
    assert by_user["total_usd"] == pytest.approx(sum(r["usd"] for r in by_user["rows"]))
    mine = client.get("/usage?group_by=user", token=BOB).json
    assert [r["key"] for r in mine["rows"]] == ["bob"] and mine["scope"] == "user"
    by_day = client.get("/usage", token=ADMIN).json
    assert by_day["group_by"] == "day" and by_day["rows"][0]["runs"] == 2
    assert client.get("/usage?group_by=vendor", token=ADMIN).json["rows"][0]["key"] == "anthropic"
    assert client.get("/usage?group_by=repo", token=ADMIN).status_code == 400
    assert client.get("/usage?from=2026-12-10&to=2026-12-01", token=ADMIN).status_code == 400
    assert client.get("/usage?from=yesterday", token=ADMIN).status_code == 400
    assert client.get("/usage", token=mint("globex", "eve", ["admin"])).json["rows"] == []


def test_crossing_the_alert_threshold_emits_one_event_per_period(client: Any, worker: Any,
                                                                 fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    events = RecordedEvents()
    worker.__dict__["event_publisher"] = events
    # A monthly budget the first run alone takes past 80 % of (its reservation fits, its cost crosses).
    high = estimate(client).json["usd_high"]
    resp = client.put(LIMITS, token=ADMIN, json_body={"tenant_monthly_usd": round(high * 3, 2),
                                                      "alert_at_fraction": 0.0001, "user_daily_usd": None})
    assert resp.status_code == 200 and resp.json["user_daily_usd"] is None, resp.json
    for _ in range(2):
        dispatch(client)
    work(queued_event(worker))
    alerts = [d for t, d in events.events if t == "EvalBudgetThresholdReached"]
    assert len(alerts) == 1, events.events
    assert alerts[0]["budget"] == "tenant_monthly" and alerts[0]["spent_usd"] > 0
    assert alerts[0]["period"] == worker.clock.now().strftime("%Y-%m")
