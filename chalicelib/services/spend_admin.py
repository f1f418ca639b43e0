"""Spend administration and reporting: the tenant's limits and prices (admin, If-Match like the
settings), and `GET /usage` (everyone; a member sees only their own row).

Bad input (negative or non-numeric amounts, fractions outside 0..1, unknown models in the price
table) is a 400 naming each field, and nothing is stored. A write bumps the version the spend ledger
checks at every dispatch, in the same transaction, so no dispatch is decided on the old values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from chalicelib.domain.base_url import BaseUrlPolicy
from chalicelib.domain.budget_alerts import WebhookDelivery, WebhookUrlRefused, check_webhook_url, webhook_origin
from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.errors import InvalidRequest, PreconditionFailed
from chalicelib.domain.principal import Principal
from chalicelib.domain.settings import AuditValue, FieldChange, SettingsAuditRecord
from chalicelib.domain.spend import (
    NON_NULLABLE_LIMITS,
    LedgerView,
    SpendLimits,
    SpendLimitsUpdate,
    budget_status,
    micros_to_usd,
)
from chalicelib.domain.spend_prices import MODEL_ID_PATTERN, ModelPrice, PriceTable, known_models, override_table
from chalicelib.observability import logger

MAX_USAGE_DAYS = 400
MAX_PRICE_ROWS = 200
Usd = StrictFloat | StrictInt


# ----------------------------------------------------------------------------------------- ports


class SpendStore(Protocol):
    def limits(self, tenant: str, *, fresh: bool = False) -> SpendLimits: ...

    def prices(self, tenant: str, *, fresh: bool = False) -> PriceTable: ...

    def last_webhook_delivery(self, tenant: str, *, fresh: bool = False) -> WebhookDelivery | None: ...

    def save_limits(self, tenant: str, limits: SpendLimits, *, expected_version: int, ledger_write: Any,
                    audit: SettingsAuditRecord | None = None) -> None: ...

    def save_prices(self, tenant: str, rows: Sequence[ModelPrice], *, version: int, expected_version: int,
                    ledger_write: Any, updated_at: str, updated_by: str) -> None: ...

    def usage_rows(self, tenant: str, *, day_from: str, day_to: str, user: str | None = None,
                   max_items: int = ...) -> list[dict[str, Any]]: ...


class LedgerVersions(Protocol):
    def versions_write(self, tenant: str, *, limits_version: int | None = None,
                       prices_version: int | None = None) -> Any: ...

    def read(self, tenant: str) -> dict[str, Any] | None: ...


class ConfiguredModels(Protocol):
    def load_runner_settings(self, tenant: str, *, fresh: bool = False) -> Any: ...


# ----------------------------------------------------------------------------------------- models


class SpendLimitsView(SpendLimits):
    """The limits, plus where the tenant stands now (extension of the contract's shape)."""

    active_runs: int = 0
    budgets: list[dict[str, Any]] = Field(default_factory=list,
                                          description="the tenant's monthly budget now: committed, spent, left")
    alert_webhook_last_delivery: WebhookDelivery | None = Field(
        default=None, description="the outcome of the last budget alert POSTed to alert_webhook_url")


class ModelPriceInput(BaseModel):
    """One override row of `PUT …/prices`."""

    model_config = ConfigDict(extra="forbid")

    vendor: Literal["anthropic", "openai"]
    model: str = Field(pattern=MODEL_ID_PATTERN)
    input_usd_per_mtok: Usd = Field(ge=0, le=10_000)
    output_usd_per_mtok: Usd = Field(ge=0, le=10_000)
    cache_write_usd_per_mtok: Usd = Field(ge=0, le=10_000)
    cache_read_usd_per_mtok: Usd = Field(ge=0, le=10_000)
    batch_discount: Usd = Field(ge=0, le=1)


class PricesUpdate(BaseModel):
    """`PUT …/prices`: the complete set of admin overrides (a model left out goes back to its default)."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelPriceInput] = Field(max_length=MAX_PRICE_ROWS)


class PricesView(BaseModel):
    models: list[ModelPrice]
    version: int = 0


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_: date | None = Field(default=None, alias="from", description="first UTC day (YYYY-MM-DD); default: "
                                                                      "the 1st of this month")
    to: date | None = Field(default=None, description="last UTC day, inclusive; default: today")
    group_by: Literal["user", "day", "vendor", "model"] = "day"


class UsageRow(BaseModel):
    key: str
    runs: int
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    usd: float
    unpriced_runs: int = 0


class UsageReport(BaseModel):
    rows: list[UsageRow]
    total_usd: float
    group_by: str
    first_day: str = Field(description="the first UTC day counted (the query's `from`)")
    last_day: str = Field(description="the last UTC day counted (the query's `to`)")
    scope: Literal["tenant", "user"] = Field(description="'user' when only the caller's own usage is shown")


# ----------------------------------------------------------------------------------------- service


def _audit_value(name: str, value: Any) -> AuditValue:
    if name == "alert_webhook_url":
        # Webhook paths are often bearer secrets: the audit trail keeps the origin only.
        origin = webhook_origin(value)
        return None if origin is None else f"{origin}/…"
    if isinstance(value, float):
        return f"{value:g}"
    return value if value is None or isinstance(value, (str, int, bool)) else str(value)


def _limit_changes(old: SpendLimits, new: SpendLimits) -> dict[str, FieldChange]:
    skip = {"version", "updated_at", "updated_by"}
    return {name: FieldChange(**{"from": _audit_value(name, getattr(old, name)),
                                 "to": _audit_value(name, getattr(new, name))})
            for name in type(new).model_fields if name not in skip and getattr(old, name) != getattr(new, name)}


class SpendAdminService:
    def __init__(self, *, store: SpendStore, ledger: LedgerVersions, settings: ConfiguredModels,
                 clock: Clock, webhook_policy: BaseUrlPolicy | None = None) -> None:
        self._store = store
        self._ledger = ledger
        self._settings = settings
        self._clock = clock
        # Where an alert webhook may point: the stage's outbound policy (as for vendor base URLs).
        self._webhook_policy = webhook_policy or BaseUrlPolicy()

    # -- limits ---------------------------------------------------------------------------------
    def get_limits(self, principal: Principal) -> SpendLimitsView:
        limits = self._store.limits(principal.tenant, fresh=True)
        return self._limits_view(principal, limits)

    def _limits_view(self, principal: Principal, limits: SpendLimits) -> SpendLimitsView:
        ledger = LedgerView.parse(self._ledger.read(principal.tenant))
        now = self._clock.now()
        tenant_budgets = [b for b in budget_status(limits, ledger, principal.user, now)
                          if b["budget"] == "tenant_monthly"]
        delivery = self._store.last_webhook_delivery(principal.tenant) if limits.alert_webhook_url else None
        return SpendLimitsView(**limits.model_dump(), active_runs=len(ledger.open_runs), budgets=tenant_budgets,
                               alert_webhook_last_delivery=delivery)

    def update_limits(self, principal: Principal, update: SpendLimitsUpdate, if_match: int | None) -> SpendLimitsView:
        fields = set(update.model_fields_set)
        nulls = [f for f in NON_NULLABLE_LIMITS if f in fields and getattr(update, f) is None]
        if nulls:
            raise InvalidRequest("These limits cannot be null: " + ", ".join(nulls) + ".", code="validation_failed",
                                 details={"fields": [{"field": f, "message": "must be a number, not null",
                                                      "type": "null_not_allowed"} for f in nulls]})
        if "alert_webhook_url" in fields and update.alert_webhook_url is not None:
            try:
                update = update.model_copy(update={
                    "alert_webhook_url": check_webhook_url(update.alert_webhook_url, self._webhook_policy)})
            except WebhookUrlRefused as refused:
                raise InvalidRequest(refused.message, code="validation_failed", details={"fields": [
                    {"field": "alert_webhook_url", "message": refused.message, "type": refused.reason}]}) from None
        current = self._store.limits(principal.tenant, fresh=True)
        if if_match is not None and if_match != current.version:
            raise PreconditionFailed(f"The limits are at version {current.version}, not {if_match}; reload them and "
                                     "apply your change again.", code="version_mismatch",
                                     details={"current_version": current.version})
        changed = update.apply(current, fields)
        now = iso(self._clock.now())
        new = changed.model_copy(update={"version": current.version + 1, "updated_at": now,
                                         "updated_by": principal.user})
        audit = SettingsAuditRecord(at=now, by=principal.user, action="limits", version=new.version,
                                    changes=_limit_changes(current, new))
        self._store.save_limits(principal.tenant, new, expected_version=current.version,
                                ledger_write=self._ledger.versions_write(principal.tenant,
                                                                         limits_version=new.version),
                                audit=audit)
        logger.info("spend limits changed", extra={"fields": sorted(fields), "version": new.version})
        return self._limits_view(principal, new)

    # -- prices ---------------------------------------------------------------------------------
    def get_prices(self, principal: Principal) -> PricesView:
        table = self._store.prices(principal.tenant, fresh=True)
        return PricesView(models=table.rows(), version=table.version)

    def update_prices(self, principal: Principal, update: PricesUpdate, if_match: int | None) -> PricesView:
        current = self._store.prices(principal.tenant, fresh=True)
        if if_match is not None and if_match != current.version:
            raise PreconditionFailed(f"The prices are at version {current.version}, not {if_match}; reload them "
                                     "and apply your change again.", code="version_mismatch",
                                     details={"current_version": current.version})
        settings = self._settings.load_runner_settings(principal.tenant, fresh=True)
        configured = [settings.vendor(v).model for v in ("anthropic", "openai")]
        allowed = known_models(current, configured)
        defaults = {p.model: p.vendor for p in PriceTable().rows()}
        problems: list[dict[str, str]] = []
        seen: set[str] = set()
        for i, row in enumerate(update.models):
            if row.model not in allowed:
                problems.append({"field": f"models.{i}.model", "type": "unknown_model",
                                 "message": f"{row.model!r} is neither in the shipped price table nor a judge model "
                                            "configured for this tenant."})
            elif row.model in defaults and defaults[row.model] != row.vendor:
                problems.append({"field": f"models.{i}.vendor", "type": "vendor_mismatch",
                                 "message": f"{row.model!r} is a {defaults[row.model]} model."})
            if row.model in seen:
                problems.append({"field": f"models.{i}.model", "type": "duplicate",
                                 "message": f"{row.model!r} is listed twice."})
            seen.add(row.model)
        if problems:
            raise InvalidRequest("The price table has rows that cannot be stored: check "
                                 + ", ".join(p["field"] for p in problems[:5]) + ".", code="validation_failed",
                                 details={"fields": problems})
        rows = override_table(ModelPrice(**row.model_dump(), source="admin") for row in update.models)
        version = current.version + 1
        self._store.save_prices(principal.tenant, rows, version=version, expected_version=current.version,
                                ledger_write=self._ledger.versions_write(principal.tenant, prices_version=version),
                                updated_at=iso(self._clock.now()), updated_by=principal.user)
        logger.info("price overrides changed", extra={"models": [r.model for r in rows], "version": version})
        table = PriceTable(overrides=rows, version=version)
        return PricesView(models=table.rows(), version=version)

    # -- usage ----------------------------------------------------------------------------------
    def usage(self, principal: Principal, query: UsageQuery) -> UsageReport:
        today = self._clock.now().date()
        start = query.from_ or today.replace(day=1)
        end = query.to or today
        if start > end:
            raise InvalidRequest("'from' must not be after 'to'.", code="invalid_range",
                                 details={"fields": [{"field": "from", "message": "after 'to'", "type": "range"}]})
        if (end - start) > timedelta(days=MAX_USAGE_DAYS):
            raise InvalidRequest(f"At most {MAX_USAGE_DAYS} days at a time.", code="invalid_range",
                                 details={"fields": [{"field": "to", "message": "range too long", "type": "range"}]})
        own = None if principal.is_admin else principal.user
        items = self._store.usage_rows(principal.tenant, day_from=start.isoformat(), day_to=end.isoformat(), user=own)
        groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for item in items:
            key = str(item.get(query.group_by) or "unknown")
            g = groups[key]
            for metric in ("runs", "input_tokens", "output_tokens", "cache_read_input_tokens",
                           "cache_creation_input_tokens", "usd_micros", "unpriced_runs"):
                g[metric] += int(item.get(metric) or 0)
        rows = [UsageRow(key=key, runs=g["runs"], input_tokens=g["input_tokens"], output_tokens=g["output_tokens"],
                         cache_read_input_tokens=g["cache_read_input_tokens"],
                         cache_creation_input_tokens=g["cache_creation_input_tokens"],
                         usd=micros_to_usd(g["usd_micros"]), unpriced_runs=g["unpriced_runs"])
                for key, g in groups.items()]
        if query.group_by == "day":
            rows.sort(key=lambda r: r.key)
        else:
            rows.sort(key=lambda r: (-r.usd, -r.runs, r.key))
        total = micros_to_usd(sum(g["usd_micros"] for g in groups.values()))
        return UsageReport(rows=rows, total_usd=total, group_by=query.group_by, first_day=start.isoformat(),
                           last_day=end.isoformat(), scope="tenant" if own is None else "user")
