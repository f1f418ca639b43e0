"""Spend governance rules (pure): money units, limits, budget periods, a run's admission and cost,
and reading the tenant's spend ledger (what is left, why an admission was refused).

Money is held as integer micro-dollars (1 USD = 1_000_000) wherever it is stored or compared, so
DynamoDB's conditional arithmetic is exact and no float rounding can let a dispatch through.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from chalicelib.domain.budget_alerts import MAX_WEBHOOK_URL_LENGTH
from chalicelib.domain.errors import DomainError, RateLimited
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.spend_prices import ModelPrice, cost_micros

MICROS_PER_USD = 1_000_000
DEFAULT_MAX_ACTIVE_RUNS_PER_USER = 3
DEFAULT_MAX_ACTIVE_RUNS_PER_TENANT = 20
# Safe caps a new tenant starts with (an admin changes them, or sets null for no cap). A run reserves its
# upper bound while it runs, and a full 13-question run with tool-using judges on a Sonnet-class model can
# be bounded at ~$70 (though it typically costs well under $1): a user's day must hold a few such
# reservations at once (the active-run quota is 3), the tenant's month those of its 20 active runs many times.
DEFAULT_TENANT_MONTHLY_USD = 5000.0
DEFAULT_USER_DAILY_USD = 250.0
DEFAULT_ALERT_AT_FRACTION = 0.8
MAX_ACTIVE_RUNS_CEILING = 1000  # the ledger item holds one entry per active run
MAX_BUDGET_USD = 10_000_000.0

BudgetName = Literal["tenant_monthly", "user_daily"]
QuotaName = Literal["user", "tenant"]


def usd_to_micros(usd: float) -> int:
    """Round up: a reservation or a cost is never understated by a rounding step."""
    return math.ceil(round(usd * MICROS_PER_USD, 6))


def micros_to_usd(micros: int) -> float:
    return round(micros / MICROS_PER_USD, 6)


def budget_day(now: datetime) -> str:
    """The UTC calendar day a user's daily budget counts in."""
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def budget_month(now: datetime) -> str:
    """The UTC calendar month a tenant's monthly budget counts in."""
    return now.astimezone(UTC).strftime("%Y-%m")


def next_day_start(now: datetime) -> datetime:
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1)


def next_month_start(now: datetime) -> datetime:
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=32)).replace(day=1)


# ----------------------------------------------------------------------------------------- errors


class BudgetExceeded(DomainError):
    """402: the run's upper bound does not fit in what a budget has left (details say which, and how much)."""

    status = 402
    code = "budget_exceeded"


class TooManyActiveRuns(RateLimited):
    """429 with Retry-After: the user's or the tenant's active-run quota is full; nothing was queued."""

    code = "too_many_active_runs"

    def __init__(self, message: str, *, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


def refusal_error(refusal: Refusal) -> DomainError:
    if refusal.kind == "quota":
        return TooManyActiveRuns(refusal.message, retry_after=refusal.retry_after_seconds or 5,
                                 details=refusal.details)
    return BudgetExceeded(refusal.message, details=refusal.details)


# ----------------------------------------------------------------------------------------- limits

Usd = StrictFloat | StrictInt


class SpendLimits(BaseModel):
    """`GET /admin/settings/eval-runner/limits`: the tenant's caps (null = no cap) and retention."""

    tenant_monthly_usd: float | None = DEFAULT_TENANT_MONTHLY_USD
    user_daily_usd: float | None = DEFAULT_USER_DAILY_USD
    max_active_runs_per_user: int = DEFAULT_MAX_ACTIVE_RUNS_PER_USER
    max_active_runs_per_tenant: int = DEFAULT_MAX_ACTIVE_RUNS_PER_TENANT
    alert_at_fraction: float = DEFAULT_ALERT_AT_FRACTION
    retention_days: int | None = None
    alert_webhook_url: str | None = Field(default=None, description="https URL that receives each budget alert "
                                                                     "as a JSON POST; null = EventBridge only")
    version: int = 0
    updated_at: str | None = None
    updated_by: str | None = None

    def cap_micros(self, budget: BudgetName) -> int | None:
        cap = self.tenant_monthly_usd if budget == "tenant_monthly" else self.user_daily_usd
        return None if cap is None else usd_to_micros(cap)


class SpendLimitsUpdate(BaseModel):
    """`PUT …/limits`: any subset; numbers only (a string or a bool is a 400, never coerced)."""

    # Built on first use (`defer_build`): the admin's update, never on dispatch (bench/coldstart).
    model_config = ConfigDict(defer_build=True, extra="forbid")

    tenant_monthly_usd: Usd | None = Field(default=None, ge=0, le=MAX_BUDGET_USD,
                                           description="USD per UTC calendar month for the whole tenant; null = no cap")
    user_daily_usd: Usd | None = Field(default=None, ge=0, le=MAX_BUDGET_USD,
                                       description="USD per UTC calendar day for each user; null = no cap")
    max_active_runs_per_user: StrictInt | None = Field(default=None, ge=1, le=MAX_ACTIVE_RUNS_CEILING)
    max_active_runs_per_tenant: StrictInt | None = Field(default=None, ge=1, le=MAX_ACTIVE_RUNS_CEILING)
    alert_at_fraction: Usd | None = Field(default=None, ge=0, le=1,
                                          description="share of a budget whose crossing emits an alert")
    retention_days: StrictInt | None = Field(default=None, ge=1, le=3650,
                                             description="days runs and sessions are kept; null = forever")
    alert_webhook_url: str | None = Field(default=None, min_length=1, max_length=MAX_WEBHOOK_URL_LENGTH,
                                          description="https URL (public host, port 443 unless the stage allows "
                                                      "others, no credentials/query) POSTed each budget alert "
                                                      "event as JSON; null = no webhook")

    def apply(self, current: SpendLimits, fields_set: set[str]) -> SpendLimits:
        """Only the fields present in the body change; an explicit null clears a budget or retention."""
        data = current.model_dump()
        for name in fields_set:
            value = getattr(self, name)
            data[name] = float(value) if isinstance(value, int) and name in FLOAT_LIMITS else value
        return SpendLimits.model_validate(data)


# Fields with no "no cap" meaning: an explicit null is a 400, not a reset.
NON_NULLABLE_LIMITS = ("max_active_runs_per_user", "max_active_runs_per_tenant", "alert_at_fraction")
FLOAT_LIMITS = ("tenant_monthly_usd", "user_daily_usd", "alert_at_fraction")


# ----------------------------------------------------------------------------------------- runs


class RunAdmission(BaseModel):
    """What dispatch (or a rerun) committed for one attempt of a run, stored on the run item so the
    finalizer settles exactly that: the periods it counted in, the amount it reserved and the price
    it was estimated with (the run's cost uses it, so a later price change does not rewrite history)."""

    model_config = ConfigDict(extra="ignore")

    day: str
    month: str
    reserved_micros: int = Field(default=0, ge=0)
    # The run's cost when this attempt started (a rerun keeps what earlier attempts billed): the
    # attempt's actual cost is the run's cost at the end minus this.
    base_cost_micros: int = Field(default=0, ge=0)
    admitted_at: str
    price: ModelPrice | None = None
    batch: bool = False


class RunCost(BaseModel):
    """`cost` on every run: usd from the vendor-reported usage at the run's price; null when unpriced."""

    usd: float | None
    priced: bool
    batch: bool = False
    reserved_usd: float | None = Field(default=None, description="what the current attempt reserved of the budgets")
    unreported_usd: float | None = Field(
        default=None, description="worst case of judge calls that were cut off (cancel, deadline) before the vendor "
                                  "reported their usage; settled against the budgets, not part of usd")


def run_cost(usage: TokenUsage, price: ModelPrice | None, *, batch: bool = False, usage_known: bool = True,
             admission: RunAdmission | None = None, unreported_micros: int = 0) -> RunCost:
    reserved = micros_to_usd(admission.reserved_micros) if admission is not None else None
    unreported = micros_to_usd(unreported_micros) if unreported_micros else None
    if price is None or not usage_known:
        return RunCost(usd=None, priced=price is not None, batch=batch, reserved_usd=reserved,
                       unreported_usd=unreported)
    return RunCost(usd=micros_to_usd(cost_micros(usage, price, batch=batch)), priced=True, batch=batch,
                   reserved_usd=reserved, unreported_usd=unreported)


# ----------------------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class LedgerView:
    """The spend ledger item as read (`adapters/budget_ledger.py`), in domain terms."""

    open_runs: Mapping[str, Mapping[str, Any]]
    active_by_user: Mapping[str, int]
    day: str | None
    month: str | None
    day_committed: Mapping[str, int]  # user -> micros reserved or spent today
    day_spent: Mapping[str, int]
    month_committed: int
    month_spent: int
    limits_version: int | None
    prices_version: int | None

    @classmethod
    def parse(cls, item: Mapping[str, Any] | None) -> LedgerView:
        item = item or {}

        def ints(value: Any) -> dict[str, int]:
            return {str(k): int(v) for k, v in (value or {}).items()} if isinstance(value, Mapping) else {}

        runs = item.get("runs")
        return cls(open_runs=dict(runs) if isinstance(runs, Mapping) else {},
                   active_by_user=ints(item.get("ua")), day=item.get("day"), month=item.get("month"),
                   day_committed=ints(item.get("ud")), day_spent=ints(item.get("uds")),
                   month_committed=int(item.get("mc") or 0), month_spent=int(item.get("ms") or 0),
                   limits_version=_int_or_none(item.get("lv")), prices_version=_int_or_none(item.get("pv")))

    @property
    def initialised(self) -> bool:
        return self.day is not None and self.month is not None

    def current(self, now: datetime) -> bool:
        return self.day == budget_day(now) and self.month == budget_month(now)

    def user_committed_today(self, user: str, now: datetime) -> int:
        return self.day_committed.get(user, 0) if self.day == budget_day(now) else 0

    def user_spent_today(self, user: str, now: datetime) -> int:
        return self.day_spent.get(user, 0) if self.day == budget_day(now) else 0

    def month_committed_now(self, now: datetime) -> int:
        return self.month_committed if self.month == budget_month(now) else 0

    def month_spent_now(self, now: datetime) -> int:
        return self.month_spent if self.month == budget_month(now) else 0


@dataclass(frozen=True)
class AdmissionCheck:
    """What one admission must hold: the period and versions it was computed for and the limits."""

    user: str
    day: str
    month: str
    limits_version: int
    prices_version: int
    max_active_user: int
    max_active_tenant: int
    reserve_micros: int
    month_cap_micros: int | None
    day_cap_micros: int | None


@dataclass(frozen=True)
class Settlement:
    """Closing one run attempt: its slot, and the actual cost against what it reserved."""

    run_id: str
    user: str
    day: str
    month: str
    reserved_micros: int
    charged_micros: int  # the attempt's actual cost (reported + unreported worst case)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Refusal:
    """Why the ledger refused an admission, in words the API and the console show."""

    kind: Literal["quota", "budget"]
    code: str  # too_many_active_runs | budget_exceeded
    name: str  # user | tenant | tenant_monthly | user_daily
    message: str
    details: dict[str, Any]
    retry_after_seconds: int | None = None


def budget_status(limits: SpendLimits, ledger: LedgerView, user: str, now: datetime) -> list[dict[str, Any]]:
    """Each capped budget with what is committed, spent and left now (the dialog and 402 details)."""
    out: list[dict[str, Any]] = []
    names: tuple[BudgetName, ...] = ("user_daily", "tenant_monthly")
    for name in names:
        cap = limits.cap_micros(name)
        if cap is None:
            continue
        if name == "user_daily":
            committed, spent = ledger.user_committed_today(user, now), ledger.user_spent_today(user, now)
            resets = next_day_start(now)
        else:
            committed, spent = ledger.month_committed_now(now), ledger.month_spent_now(now)
            resets = next_month_start(now)
        out.append({"budget": name, "limit_usd": micros_to_usd(cap), "committed_usd": micros_to_usd(committed),
                    "spent_usd": micros_to_usd(spent), "reserved_usd": micros_to_usd(max(committed - spent, 0)),
                    "left_usd": micros_to_usd(max(cap - committed, 0)),
                    "resets_at": resets.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return out


def refusal_for(limits: SpendLimits, ledger: LedgerView, *, user: str, runs: int, reserve_micros: int,
                now: datetime) -> Refusal | None:
    """The first limit an admission of `runs` runs reserving `reserve_micros` would break, else None.

    Quotas first (a slot frees up within minutes), then the user's day, then the tenant's month."""
    tenant_active = len(ledger.open_runs)
    user_active = ledger.active_by_user.get(user, 0)
    retry = _retry_after(ledger, user, now)
    if user_active + runs > limits.max_active_runs_per_user:
        return Refusal("quota", "too_many_active_runs", "user",
                       f"You already have {user_active} evaluation(s) queued or running (your limit is "
                       f"{limits.max_active_runs_per_user}); wait for one to finish, then try again.",
                       {"quota": "max_active_runs_per_user", "scope": "user",
                        "limit": limits.max_active_runs_per_user, "active": user_active}, retry)
    if tenant_active + runs > limits.max_active_runs_per_tenant:
        return Refusal("quota", "too_many_active_runs", "tenant",
                       f"Your organisation already has {tenant_active} evaluation(s) queued or running (the limit "
                       f"is {limits.max_active_runs_per_tenant}); try again when one has finished.",
                       {"quota": "max_active_runs_per_tenant", "scope": "tenant",
                        "limit": limits.max_active_runs_per_tenant, "active": tenant_active}, retry)
    for status in budget_status(limits, ledger, user, now):
        cap = usd_to_micros(status["limit_usd"])
        committed = usd_to_micros(status["committed_usd"])
        if committed + reserve_micros > cap:
            who = "your daily" if status["budget"] == "user_daily" else "your organisation's monthly"
            return Refusal("budget", "budget_exceeded", status["budget"],
                           f"This evaluation can cost up to ${micros_to_usd(reserve_micros):.2f}, but {who} eval "
                           f"budget has ${status['left_usd']:.2f} left of ${status['limit_usd']:.2f} (resets "
                           f"{status['resets_at']}). Evaluate fewer questions, lower the threshold, or ask an "
                           "admin to raise the budget.",
                           {**status, "needed_usd": micros_to_usd(reserve_micros)})
    return None


def _retry_after(ledger: LedgerView, user: str, now: datetime) -> int:
    """Seconds until a slot may free up: a typical run ends within half a minute; never past the
    earliest deadline of the open runs (the sweep reclaims it then at the latest)."""
    deadlines = [int(e.get("d", 0)) for e in ledger.open_runs.values() if isinstance(e, Mapping)]
    if not deadlines:
        return 5
    return max(1, min(30, min(deadlines) - int(now.timestamp())))
