"""The spend ledger under moto: one conditional Update admits (quotas, budgets, period, versions) or is
refused with the item's old image; settlement returns the unused reservation in the periods that
still hold it; threshold flags flip once per period."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.adapters.budget_ledger import DynamoBudgetLedger
from chalicelib.domain.spend import AdmissionCheck, LedgerView, Settlement

DAY, MONTH = "2026-12-04", "2026-12"


@pytest.fixture
def ledger(container: Any) -> DynamoBudgetLedger:
    store = DynamoBudgetLedger(container.dynamodb, container.config.table_name)
    store.roll_period("acme", day=DAY, month=MONTH, observed=None, limits_version=0, prices_version=0)
    return store


def check(user: str = "alice", reserve: int = 1_000_000, *, month_cap: int | None = 10_000_000,
          day_cap: int | None = 3_000_000, max_user: int = 3, max_tenant: int = 5, day: str = DAY,
          lv: int = 0) -> AdmissionCheck:
    return AdmissionCheck(user=user, day=day, month=day[:7], limits_version=lv, prices_version=0,
                          max_active_user=max_user, max_active_tenant=max_tenant, reserve_micros=reserve,
                          month_cap_micros=month_cap, day_cap_micros=day_cap)


def admit(container: Any, ledger: DynamoBudgetLedger, c: AdmissionCheck, run_id: str) -> dict[str, Any] | None:
    """Commit the admission alone; None when admitted, else the refused item's old image."""
    try:
        container.dynamodb.transact_write_items(TransactItems=[ledger.admit_write("acme", c, [(run_id, 1)])])
    except ClientError as exc:
        reason = exc.response["CancellationReasons"][0]
        assert reason["Code"] == "ConditionalCheckFailed"
        from chalicelib.adapters.dynamo import from_item

        return from_item(reason["Item"])
    return None


def test_admissions_fill_the_user_quota_then_are_refused_with_the_old_item(container: Any,
                                                                           ledger: DynamoBudgetLedger) -> None:
    for i in range(3):
        assert admit(container, ledger, check(reserve=100), f"r{i}") is None
    refused = admit(container, ledger, check(reserve=100), "r3")
    view = LedgerView.parse(refused)
    assert view.active_by_user["alice"] == 3 and len(view.open_runs) == 3
    assert admit(container, ledger, check(user="bob", reserve=100), "r4") is None  # another user has room
    assert admit(container, ledger, check(user="carol", reserve=100), "r5") is None
    assert admit(container, ledger, check(user="dave", reserve=100), "r6") is not None  # tenant: 5 open


def test_budgets_are_checked_exactly_in_micro_dollars(container: Any, ledger: DynamoBudgetLedger) -> None:
    assert admit(container, ledger, check(reserve=2_000_000), "a") is None
    assert admit(container, ledger, check(reserve=1_000_001), "b") is not None  # 3_000_001 > day cap
    assert admit(container, ledger, check(reserve=1_000_000), "c") is None  # exactly the cap
    view = LedgerView.parse(ledger.read("acme"))
    assert view.day_committed["alice"] == 3_000_000 and view.month_committed == 3_000_000
    # No user cap: only the month counts.
    assert admit(container, ledger, check(user="bob", reserve=7_000_000, day_cap=None), "d") is None
    assert admit(container, ledger, check(user="bob", reserve=1, day_cap=None), "e") is not None


def test_a_stale_period_or_version_is_refused_until_the_ledger_rolls(container: Any,
                                                                    ledger: DynamoBudgetLedger) -> None:
    assert admit(container, ledger, check(reserve=2_000_000), "a") is None
    tomorrow = "2026-12-05"
    assert admit(container, ledger, check(reserve=2_000_000, day=tomorrow), "b") is not None
    ledger.roll_period("acme", day=tomorrow, month=MONTH, observed=ledger.read("acme"), limits_version=0,
                       prices_version=0)
    # A new day: alice's daily budget is fresh, the month still holds yesterday's reservation.
    assert admit(container, ledger, check(reserve=2_000_000, day=tomorrow), "b") is None
    view = LedgerView.parse(ledger.read("acme"))
    assert view.day_committed == {"alice": 2_000_000} and view.month_committed == 4_000_000
    # An admission computed from older limits than the ledger knows is refused.
    container.dynamodb.transact_write_items(TransactItems=[ledger.versions_write("acme", limits_version=1)])
    assert admit(container, ledger, check(reserve=1, day=tomorrow), "c") is not None
    assert admit(container, ledger, check(reserve=1, day=tomorrow, lv=1), "c") is None


def test_settlement_returns_the_unused_part_where_it_still_counts(container: Any,
                                                                  ledger: DynamoBudgetLedger) -> None:
    assert admit(container, ledger, check(reserve=2_000_000), "a") is None
    assert admit(container, ledger, check(reserve=1_000_000), "b") is None
    settle_a = Settlement(run_id="a", user="alice", day=DAY, month=MONTH, reserved_micros=2_000_000,
                          charged_micros=150_000)
    container.dynamodb.transact_write_items(TransactItems=[ledger.settle_write("acme", settle_a, "day")])
    view = LedgerView.parse(ledger.read("acme"))
    assert "a" not in view.open_runs and view.active_by_user["alice"] == 1
    assert view.day_committed["alice"] == 1_150_000 and view.day_spent["alice"] == 150_000
    assert view.month_committed == 1_150_000 and view.month_spent == 150_000
    # The next day: b's refund only reaches the month; the wrong scope is refused, not misapplied.
    ledger.roll_period("acme", day="2026-12-05", month=MONTH, observed=ledger.read("acme"), limits_version=0,
                       prices_version=0)
    settle_b = Settlement(run_id="b", user="alice", day=DAY, month=MONTH, reserved_micros=1_000_000,
                          charged_micros=100_000)
    with pytest.raises(ClientError):
        container.dynamodb.transact_write_items(TransactItems=[ledger.settle_write("acme", settle_b, "day")])
    container.dynamodb.transact_write_items(TransactItems=[ledger.settle_write("acme", settle_b, "month")])
    view = LedgerView.parse(ledger.read("acme"))
    assert view.open_runs == {} and view.active_by_user["alice"] == 0
    assert view.month_committed == 250_000 and view.month_spent == 250_000 and view.day_committed == {}


def test_a_threshold_alert_flips_once_per_period(container: Any, ledger: DynamoBudgetLedger) -> None:
    assert not ledger.mark_alert("acme", budget="tenant_monthly", period=MONTH, threshold_micros=100)
    assert admit(container, ledger, check(reserve=500), "a") is None
    container.dynamodb.transact_write_items(TransactItems=[ledger.settle_write("acme", Settlement(
        run_id="a", user="alice", day=DAY, month=MONTH, reserved_micros=500, charged_micros=400), "day")])
    assert ledger.mark_alert("acme", budget="tenant_monthly", period=MONTH, threshold_micros=100)
    assert not ledger.mark_alert("acme", budget="tenant_monthly", period=MONTH, threshold_micros=100)
    assert ledger.mark_alert("acme", budget="user_daily", period=DAY, threshold_micros=300, user="alice")
    assert not ledger.mark_alert("acme", budget="user_daily", period=DAY, threshold_micros=300, user="alice")
    ledger.clear_alert("acme", budget="user_daily", user="alice")  # not sent: may be tried again
    assert ledger.mark_alert("acme", budget="user_daily", period=DAY, threshold_micros=300, user="alice")
    assert ledger.tenants_with_open_runs() == ["acme"]
