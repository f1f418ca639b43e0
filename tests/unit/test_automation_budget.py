"""The budget check of rule and batch runs (pure arithmetic over spend's limits and ledger): every run's
bound must fit what is left after spending, and so must the expected total; reservations held by other
runs make a run wait at its start instead of failing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.domain.clock import Clock
from chalicelib.domain.errors import DomainError
from chalicelib.domain.spend import BudgetExceeded, LedgerView, SpendLimits, budget_day, budget_month
from chalicelib.services.automation_budget import AutomationBudget, Bounds, waits_for_reservations

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
USD = 1_000_000


class FixedClock(Clock):
    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        return 0.0


class FakeSpend:
    """The two reads the check makes of the spend service: limits and the ledger."""

    def __init__(self, *, daily: float | None, spent_micros: int = 0, reserved_micros: int = 0) -> None:
        self._limits = SpendLimits(user_daily_usd=daily, tenant_monthly_usd=None)
        # `ud`: what each user committed today (spent + still reserved), `uds`: what they spent.
        self._ledger = {"day": budget_day(NOW), "month": budget_month(NOW), "runs": {}, "ua": {},
                        "ud": {"bob": spent_micros + reserved_micros}, "uds": {"bob": spent_micros}}

    def limits(self, tenant: str) -> SpendLimits:
        return self._limits

    def ledger_view(self, tenant: str) -> LedgerView:
        return LedgerView.parse(self._ledger)


def budget(spend: FakeSpend) -> AutomationBudget:
    return AutomationBudget(budgeting=None, estimator=None, spend=spend, questions_for_run=dict,  # type: ignore[arg-type]
                            clock=FixedClock())


def test_a_batch_fits_when_each_bound_and_the_expected_total_fit() -> None:
    budget(FakeSpend(daily=10)).check("acme", "bob", Bounds(high_micros=40 * USD, max_high_micros=4 * USD,
                                                          low_micros=2 * USD))


@pytest.mark.parametrize(("bounds", "fragment"), [
    (Bounds(high_micros=12 * USD, max_high_micros=12 * USD, low_micros=USD), "One evaluation can cost up to $12.00"),
    (Bounds(high_micros=400 * USD, max_high_micros=4 * USD, low_micros=11 * USD), "most likely cost $11.00"),
])
def test_a_batch_that_cannot_fit_is_refused_with_what_is_left(bounds: Bounds, fragment: str) -> None:
    with pytest.raises(BudgetExceeded, match=fragment.replace("$", r"\$")) as err:
        budget(FakeSpend(daily=10)).check("acme", "bob", bounds)
    assert err.value.details is not None and err.value.details["budget"] == "user_daily"


def test_what_was_spent_counts_reservations_do_not() -> None:
    tight = Bounds(high_micros=6 * USD, max_high_micros=6 * USD, low_micros=USD)
    with pytest.raises(BudgetExceeded):
        budget(FakeSpend(daily=10, spent_micros=5 * USD)).check("acme", "bob", tight)
    budget(FakeSpend(daily=10, reserved_micros=9 * USD)).check("acme", "bob", tight)


def test_no_budget_no_refusal() -> None:
    budget(FakeSpend(daily=None)).check("acme", "bob", Bounds(high_micros=10**12, max_high_micros=10**12,
                                                             low_micros=10**12))


@pytest.mark.parametrize(("details", "waits"), [
    ({"limit_usd": 10.0, "spent_usd": 2.0, "needed_usd": 6.0}, True),
    ({"limit_usd": 10.0, "spent_usd": 5.0, "needed_usd": 6.0}, False),
    ({}, False),
])
def test_a_refusal_only_reservations_cause_makes_a_run_wait(details: dict[str, Any], waits: bool) -> None:
    assert waits_for_reservations(DomainError("refused", code="budget_exceeded", details=details)) is waits
