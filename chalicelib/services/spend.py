"""Spend governance use cases on the run path: admitting runs into the tenant's spend ledger at
dispatch (quotas and budgets, one conditional write inside the dispatch transaction), and settling
them when the run lifecycle finalizes them (cost, refund, usage row, threshold alerts).

`SpendService.admit` is the seam dispatch, reruns and rule/batch runs go through: it takes the runs
to admit for one user (each with the amount to reserve) and a `commit` callback that performs the
caller's own transaction with the ledger write added. A batch admits all its runs in one ledger
write, so limits apply to the whole batch up front. It never admits without the ledger's consent:
if the ledger cannot be read or written the caller gets a 503 and nothing is stored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from chalicelib.adapters.run_store import ExtraWriteRefused, TransactItem
from chalicelib.domain.clock import Clock, iso, parse_iso
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.runs import EvalRun, run_price, usage_known
from chalicelib.domain.spend import (
    AdmissionCheck,
    LedgerView,
    RunAdmission,
    Settlement,
    SpendLimits,
    TooManyActiveRuns,
    budget_day,
    budget_month,
    micros_to_usd,
    refusal_error,
    refusal_for,
    run_cost,
)
from chalicelib.domain.spend_prices import ModelPrice, PriceTable, cost_micros
from chalicelib.observability import logger
from chalicelib.services.budget_alerts import BudgetAlerts
from chalicelib.services.run_lifecycle import Contribution, Finalization

T = TypeVar("T")
# Attempts at the admission: a stale cache, a day/month rollover and a lost race each cost one.
_ADMIT_ATTEMPTS = 5


# ----------------------------------------------------------------------------------------- ports


class LedgerAdmission(Protocol):
    """The spend ledger (`chalicelib.adapters.budget_ledger.DynamoBudgetLedger`)."""

    def admit_write(self, tenant: str, check: AdmissionCheck, runs: Sequence[tuple[str, int]]) -> TransactItem: ...

    def settle_write(self, tenant: str, s: Settlement, scope: Literal["day", "month", "none"]) -> TransactItem: ...

    def roll_period(self, tenant: str, *, day: str, month: str, observed: Mapping[str, Any] | None,
                    limits_version: int, prices_version: int) -> None: ...

    def mark_alert(self, tenant: str, *, budget: Literal["tenant_monthly", "user_daily"], period: str,
                   threshold_micros: int, user: str | None = None) -> bool: ...

    def clear_alert(self, tenant: str, *, budget: Literal["tenant_monthly", "user_daily"],
                    user: str | None = None) -> None: ...

    def read(self, tenant: str) -> dict[str, Any] | None: ...


class SpendSettings(Protocol):
    """Limits and prices (`chalicelib.adapters.spend_store.DynamoSpendStore`)."""

    def limits(self, tenant: str, *, fresh: bool = False) -> SpendLimits: ...

    def prices(self, tenant: str, *, fresh: bool = False) -> PriceTable: ...

    def invalidate(self, tenant: str) -> None: ...

    def usage_write(self, tenant: str, *, day: str, user: str, vendor: str, model: str, usage: TokenUsage,
                    cost_micros: int | None) -> TransactItem: ...


class QuoteRejected(Exception):
    """A check the admission carried (the estimate's quote) failed: estimate again, then admit."""


@dataclass(frozen=True)
class AdmissionRequest:
    """One run to admit: its id, deadline (epoch seconds: when the sweep may reclaim its slot), the
    amount to reserve (its `usd_high`, micro-dollars; 0 for runs not billed to the tenant) and the
    run's cost so far (a rerun's earlier attempts)."""

    eval_run_id: str
    deadline_epoch: int
    reserve_micros: int = 0
    base_cost_micros: int = 0


# ----------------------------------------------------------------------------------------- service


class SpendService:
    def __init__(self, *, ledger: LedgerAdmission, settings: SpendSettings, clock: Clock) -> None:
        self._ledger = ledger
        self._settings = settings
        self._clock = clock

    def limits(self, tenant: str) -> SpendLimits:
        return self._settings.limits(tenant)

    def prices(self, tenant: str) -> PriceTable:
        return self._settings.prices(tenant)

    def price_for(self, tenant: str, model: str | None) -> ModelPrice | None:
        return self._settings.prices(tenant).price_for(model)

    def ledger_view(self, tenant: str) -> LedgerView:
        return LedgerView.parse(self._ledger.read(tenant))

    def admit(self, tenant: str, user: str, requests: Sequence[AdmissionRequest],
              commit: Callable[[list[RunAdmission], list[TransactItem]], T], *, price: ModelPrice | None,
              batch: bool = False, checks: Sequence[TransactItem] = (), prices: PriceTable | None = None) -> T:
        """Run `commit(admissions, writes)` — the caller's transaction with `checks` (e.g. a quote's
        ConditionCheck) and the ledger write added — once the ledger accepts it. 429
        `too_many_active_runs` / 402 `budget_exceeded` when a limit refuses, `QuoteRejected` when a
        check failed, 503 when the ledger cannot be reached; in every refusal nothing is stored."""
        n = len(requests)
        total = sum(r.reserve_micros for r in requests)
        limits = self._settings.limits(tenant)
        table = prices if prices is not None else self._settings.prices(tenant)
        for _ in range(_ADMIT_ATTEMPTS):
            now = self._clock.now()
            self._refuse_outright(limits, n, total, now)
            check = AdmissionCheck(
                user=user, day=budget_day(now), month=budget_month(now), limits_version=limits.version,
                prices_version=table.version, max_active_user=limits.max_active_runs_per_user,
                max_active_tenant=limits.max_active_runs_per_tenant, reserve_micros=total,
                month_cap_micros=limits.cap_micros("tenant_monthly"), day_cap_micros=limits.cap_micros("user_daily"))
            write = self._ledger.admit_write(tenant, check, [(r.eval_run_id, r.deadline_epoch) for r in requests])
            admissions = [RunAdmission(day=check.day, month=check.month, reserved_micros=r.reserve_micros,
                                       base_cost_micros=r.base_cost_micros, admitted_at=iso(now), price=price,
                                       batch=batch) for r in requests]
            try:
                return commit(admissions, [*checks, write])
            except ExtraWriteRefused as refused:
                if refused.position < len(checks):
                    raise QuoteRejected("The estimate this dispatch relied on no longer holds.") from None
                view = LedgerView.parse(refused.item)
                stale = view.limits_version is not None and view.prices_version is not None and (
                    view.limits_version != limits.version or view.prices_version != table.version)
                if stale or refused.item is None or "runs" not in refused.item or not view.current(now) \
                        or view.limits_version is None or view.prices_version is None:
                    # Decide again on what is stored now (an admin changed a limit or a price, or the
                    # ledger is new or on an earlier day).
                    self._settings.invalidate(tenant)
                    limits = self._settings.limits(tenant, fresh=True)
                    table = self._settings.prices(tenant, fresh=True)
                    if not stale:
                        self._ledger.roll_period(tenant, day=check.day, month=check.month, observed=refused.item,
                                                 limits_version=limits.version, prices_version=table.version)
                    continue
                refusal = refusal_for(limits, view, user=user, runs=n, reserve_micros=total, now=now)
                if refusal is not None:
                    logger.info("dispatch refused by a spend limit", extra={
                        "tenant": tenant, "user": user, "limit": refusal.name, "code": refusal.code,
                        "runs": n, "reserve_usd": micros_to_usd(total)})
                    raise refusal_error(refusal) from None
                # Nothing explains the refusal now: the item moved under us. Again.
        raise DependencyUnavailable("The spend ledger did not accept the run; nothing was started. Retry shortly.",
                                    code="budget_unavailable")

    @staticmethod
    def _refuse_outright(limits: SpendLimits, n: int, total: int, now: datetime) -> None:
        """A request that no state of the ledger could admit (a batch larger than a quota, a run
        dearer than a whole budget) is refused before touching DynamoDB."""
        for quota, limit in (("max_active_runs_per_user", limits.max_active_runs_per_user),
                             ("max_active_runs_per_tenant", limits.max_active_runs_per_tenant)):
            if n > limit:
                raise TooManyActiveRuns(f"{n} evaluations cannot run at once: the limit ({quota}) is {limit}. "
                                        "Start fewer, or ask an admin to raise the limit.",
                                        retry_after=3600, details={"quota": quota, "scope": quota.rsplit("_", 1)[-1],
                                                                   "limit": limit, "requested": n})
        view = LedgerView.parse({"runs": {}, "ua": {}, "day": budget_day(now), "month": budget_month(now)})
        refusal = refusal_for(limits, view, user="", runs=n, reserve_micros=total, now=now)
        if refusal is not None:
            raise refusal_error(refusal)


# ----------------------------------------------------------------------------------------- settlement


def attempt_charge_micros(run: EvalRun, usage: TokenUsage, unreported_micros: int) -> int:
    """What this attempt of the run cost the tenant: its reported cost beyond what earlier attempts had
    billed, plus the worst case of calls whose usage never came back. Daemon runs bill the user's own
    subscription, not the tenant's keys: they settle nothing."""
    if run.admission is None or run.runner != "server":
        return 0
    price = run.admission.price
    if price is None:
        return 0
    total = cost_micros(usage, price, batch=run.admission.batch)
    return max(total - run.admission.base_cost_micros, 0) + max(unreported_micros, 0)


def settlement_scope(run: EvalRun, ledger_item: Mapping[str, Any] | None,
                     now: datetime) -> Literal["day", "month", "none"]:
    admission = run.admission
    assert admission is not None
    day = ledger_item.get("day") if ledger_item is not None else budget_day(now)
    month = ledger_item.get("month") if ledger_item is not None else budget_month(now)
    if day == admission.day:
        return "day"
    if month == admission.month:
        return "month"
    return "none"


class SpendSettlement:
    """The run lifecycle participant: the run's cost and usage row, its quota slot and budget
    reservation settled (actual cost charged, the rest returned), then threshold alerts."""

    name = "spend"

    def __init__(self, *, ledger: LedgerAdmission, settings: SpendSettings, clock: Clock,
                 alerts: BudgetAlerts | None = None) -> None:
        self._ledger = ledger
        self._settings = settings
        self._clock = clock
        self._alerts = alerts or BudgetAlerts()

    def contribute(self, final: Finalization, *, attempt: int, refused: Mapping[str, Any] | None) -> Contribution:
        run = final.run
        price = run_price(run)
        unreported = int(final.facts.get("unreported_cost_micros", run.unreported_cost_micros) or 0)
        known = usage_known(run)
        cost = run_cost(final.usage, price, batch=run.batch, usage_known=known, admission=run.admission,
                        unreported_micros=unreported)
        fields: dict[str, Any] = {"cost": cost.model_dump(mode="json"), "unreported_cost_micros": unreported}
        day = budget_day(parse_iso(final.finalized_at))
        row_cost = cost_micros(final.usage, price, batch=run.batch) if price is not None and known else None
        writes = [self._settings.usage_write(run.tenant, day=day, user=run.created_by,
                                             vendor=run.vendor or run.runner, model=run.model or "unknown",
                                             usage=final.usage, cost_micros=row_cost)]
        admission = run.admission
        if admission is not None:
            if refused is not None and run.eval_run_id not in (refused.get("runs") or {}):
                logger.error("finalized run was not open in the spend ledger", extra={
                    "tenant": run.tenant, "eval_run_id": run.eval_run_id})
            else:
                charged = attempt_charge_micros(run, final.usage, unreported)
                settlement = Settlement(
                    run_id=run.eval_run_id, user=run.created_by, day=admission.day, month=admission.month,
                    reserved_micros=admission.reserved_micros, charged_micros=charged)
                scope = settlement_scope(run, refused, self._clock.now())
                writes.append(self._ledger.settle_write(run.tenant, settlement, scope))
        return Contribution(run_fields=fields, writes=writes)

    def after_finalized(self, final: Finalization) -> None:
        """Threshold alerts, once per budget period: one read of the ledger, and a conditional write
        only when a budget's spend has crossed its threshold and this period has no alert yet."""
        run = final.run
        if run.admission is None or attempt_charge_micros(
                run, final.usage, int(final.facts.get("unreported_cost_micros", 0) or 0)) <= 0:
            return
        limits = self._settings.limits(run.tenant)
        if limits.tenant_monthly_usd is None and limits.user_daily_usd is None:
            return
        item = self._ledger.read(run.tenant) or {}
        view = LedgerView.parse(item)
        now = self._clock.now()
        targets: list[tuple[Literal["tenant_monthly", "user_daily"], str, str | None, int, bool]] = [
            ("tenant_monthly", budget_month(now), None, view.month_spent_now(now),
             item.get("am") == budget_month(now)),
            ("user_daily", budget_day(now), run.created_by, view.user_spent_today(run.created_by, now),
             (item.get("ad") or {}).get(run.created_by) == budget_day(now))]
        for budget, period, user, spent, alerted in targets:
            cap = limits.cap_micros(budget)
            if cap is None or alerted:
                continue
            threshold = math.ceil(cap * limits.alert_at_fraction)
            if spent < threshold:
                continue
            if self._ledger.mark_alert(run.tenant, budget=budget, period=period, threshold_micros=threshold,
                                       user=user):
                self._send_alert(run, budget=budget, period=period, user=user, limits=limits, cap=cap,
                                 spent=spent)

    def _send_alert(self, run: EvalRun, *, budget: Literal["tenant_monthly", "user_daily"], period: str,
                    user: str | None, limits: SpendLimits, cap: int, spent: int) -> None:
        now = self._clock.now()
        detail = {"tenant": run.tenant, "budget": budget, "period": period, "user": user,
                  "limit_usd": micros_to_usd(cap), "spent_usd": micros_to_usd(spent),
                  "alert_at_fraction": limits.alert_at_fraction, "eval_run_id": run.eval_run_id,
                  "at": iso(now)}
        if not self._alerts.send(run.tenant, detail, webhook_url=limits.alert_webhook_url):
            # Not sent: put the flag back so the next settlement in the period tries again.
            self._ledger.clear_alert(run.tenant, budget=budget, user=user)
