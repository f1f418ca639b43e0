"""Spend rules without AWS: prices and cost, the estimate's bound, limit updates, refusals in words."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.spend import (
    LedgerView,
    SpendLimits,
    SpendLimitsUpdate,
    budget_status,
    refusal_for,
    run_cost,
    usd_to_micros,
)
from chalicelib.domain.spend_estimate import EstimateInputs, estimate_run
from chalicelib.domain.spend_prices import DEFAULT_PRICES, PriceTable, cost_micros, override_table

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def test_every_cache_class_is_billed_at_its_own_price() -> None:
    price = PriceTable().price_for("claude-sonnet-4-6")
    assert price is not None
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=100_000, cache_read_input_tokens=2_000_000,
                       cache_creation_input_tokens=500_000)
    # 1M x $3 + 0.1M x $15 + 2M x $0.30 + 0.5M x $3.75 = 3 + 1.5 + 0.6 + 1.875
    assert cost_micros(usage, price) == 6_975_000
    assert cost_micros(usage, price, batch=True) == 3_487_500
    assert run_cost(usage, price).usd == 6.975


def test_snapshot_ids_price_like_their_alias_and_admin_rows_win() -> None:
    table = PriceTable()
    assert table.price_for("claude-sonnet-4-5-20250929") == table.price_for("claude-sonnet-4-5")
    assert table.price_for("gpt-4o-2024-08-06") == table.price_for("gpt-4o")
    assert table.price_for("some-new-model") is None
    [override] = override_table([DEFAULT_PRICES[0].model_copy(update={"input_usd_per_mtok": 1.0})])
    custom = PriceTable(overrides=(override,), version=1)
    assert custom.price_for(override.model) == override and override.source == "admin"
    assert {p.model for p in custom.rows()} == {p.model for p in DEFAULT_PRICES}


def test_unpriced_or_unreported_usage_has_no_cost_never_zero() -> None:
    assert run_cost(TokenUsage(input_tokens=10), None).model_dump()["usd"] is None
    price = PriceTable().price_for("gpt-4o")
    cost = run_cost(TokenUsage(), price, usage_known=False)
    assert cost.usd is None and cost.priced is True


def test_the_upper_bound_counts_every_call_the_runner_may_send() -> None:
    price = PriceTable().price_for("claude-sonnet-4-6")
    e = estimate_run(EstimateInputs(
        model="claude-sonnet-4-6", questions=13, max_output_tokens=2048, shared_context_bytes=100_000,
        longest_prompt_bytes=5_000, schema_bytes=1_000, retrospective_fixed_bytes=6_000,
        fitted_context_chars=100_000, mean_prompt_chars=2_000, price=price))
    assert e.max_calls == 2 * 13 + 2
    assert e.max_output_tokens == e.max_calls * 2048
    # Each context call: (100_000 + 5_000 + 1_000 + 1_000 framing) tokens at the cache-write price.
    per_context_call = 107_000 * 3.75 + 2048 * 15
    assert e.high_micros >= 26 * per_context_call
    assert e.usd_low is not None and e.usd_high is not None and 0 < e.usd_low < e.usd_high
    # A huge context is capped at the largest prompt the family accepts.
    big = estimate_run(EstimateInputs(
        model="claude-sonnet-4-6", questions=1, max_output_tokens=10, shared_context_bytes=50_000_000,
        longest_prompt_bytes=0, schema_bytes=0, retrospective_fixed_bytes=0, fitted_context_chars=800_000,
        mean_prompt_chars=0, retrospective=False, price=price))
    assert big.breakdown["context_call_prompt_tokens_max"] == 1_000_000


@pytest.mark.parametrize("body", [
    {"tenant_monthly_usd": -1}, {"user_daily_usd": "10"}, {"user_daily_usd": True}, {"alert_at_fraction": 1.5},
    {"alert_at_fraction": -0.1}, {"max_active_runs_per_user": 0}, {"max_active_runs_per_user": 2.5},
    {"retention_days": 0}, {"unknown": 1},
])
def test_bad_limit_values_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SpendLimitsUpdate.model_validate(body)


def test_a_limit_update_changes_only_what_it_names() -> None:
    update = SpendLimitsUpdate.model_validate({"user_daily_usd": None, "max_active_runs_per_tenant": 50})
    limits = update.apply(SpendLimits(), set(update.model_fields_set))
    assert limits.user_daily_usd is None and limits.max_active_runs_per_tenant == 50
    assert limits.tenant_monthly_usd == SpendLimits().tenant_monthly_usd


def test_refusals_name_the_limit_and_what_is_left() -> None:
    limits = SpendLimits(user_daily_usd=5.0, tenant_monthly_usd=100.0, max_active_runs_per_user=2)
    ledger = LedgerView.parse({"runs": {"r1": {"u": "alice", "d": int(NOW.timestamp()) + 60}}, "ua": {"alice": 1},
                               "day": "2026-12-04", "month": "2026-12", "ud": {"alice": usd_to_micros(4.5)},
                               "uds": {"alice": usd_to_micros(1.0)}, "mc": usd_to_micros(20), "ms": 0})
    refusal = refusal_for(limits, ledger, user="alice", runs=1, reserve_micros=usd_to_micros(1), now=NOW)
    assert refusal is not None and refusal.code == "budget_exceeded" and refusal.name == "user_daily"
    assert refusal.details["left_usd"] == 0.5 and refusal.details["needed_usd"] == 1.0
    assert "$0.50 left of $5.00" in refusal.message
    assert refusal_for(limits, ledger, user="alice", runs=1, reserve_micros=usd_to_micros(0.4), now=NOW) is None
    busy = refusal_for(limits, ledger, user="alice", runs=2, reserve_micros=0, now=NOW)
    assert busy is not None and busy.code == "too_many_active_runs" and 1 <= (busy.retry_after_seconds or 0) <= 30
    # Tomorrow alice's day starts at zero; the tenant's month carries on.
    tomorrow = datetime(2026, 12, 5, 0, 1, tzinfo=UTC)
    [daily, monthly] = budget_status(limits, ledger, "alice", tomorrow)
    assert daily["committed_usd"] == 0 and monthly["committed_usd"] == 20.0
