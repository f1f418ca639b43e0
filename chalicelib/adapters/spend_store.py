"""DynamoDB store of a tenant's spend limits, price overrides and daily usage rows.

Items (single table, `pk=TENANT#<t>`):
- `sk=LIMITS` — `SpendLimits` (+ `version` for If-Match); absent = the safe defaults, version 0; also
  `alert_webhook_delivery`, the last budget alert webhook delivery (not part of the versioned limits);
- `sk=PRICES` — the admin's price overrides (`models`) and `version`; absent = defaults only;
- `sk=USAGE#<YYYY-MM-DD>#<user>#<vendor>#<model>` — one row per day, user, vendor and model, summed
  by the run lifecycle's finalization (`ADD`, inside its transaction, so a run counts once); TTL
  `expires_at` 400 days after the day;
- `sk=BUDGET#QUOTE#<id>` — an estimate's upper bound for one user, request and session revision, which
  a dispatch may reserve without estimating again (checked inside its transaction); TTL 15 minutes.

Limits and prices are read on every dispatch, so they are cached in-process for a few seconds; the
spend ledger carries their versions, so a dispatch computed from a stale copy is refused and retried
fresh (`adapters/budget_ledger.py`). An admin write is one transaction: the item (conditional on the
version read) and the ledger's version attribute; a limits change also appends its record to the
settings audit trail (`AUDIT#<at>#LIMITS#<version>`, listed with the settings' own changes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_item, to_value
from chalicelib.adapters.settings_store import AUDIT_PREFIX
from chalicelib.domain.budget_alerts import WebhookDelivery
from chalicelib.domain.errors import DependencyUnavailable, PreconditionFailed
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.settings import SettingsAuditRecord
from chalicelib.domain.spend import SpendLimits
from chalicelib.domain.spend_prices import ModelPrice, PriceTable
from chalicelib.observability import logger

LIMITS_SK = "LIMITS"
PRICES_SK = "PRICES"
USAGE_PREFIX = "USAGE#"
QUOTE_PREFIX = "BUDGET#QUOTE#"
USAGE_RETENTION_DAYS = 400
_KEY_FIELDS = ("pk", "sk", "entity", "tenant")

TransactItem = dict[str, Any]


def _unavailable(exc: Exception, operation: str) -> DependencyUnavailable:
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    logger.warning("spend store error", extra={"aws_error_code": code, "operation": operation})
    return DependencyUnavailable("The spend settings are unavailable; nothing was changed or started. Retry shortly.",
                                 code="budget_unavailable")


def usage_sk(day: str, user: str, vendor: str, model: str) -> str:
    return f"{USAGE_PREFIX}{day}#{user}#{vendor}#{model}"


class DynamoSpendStore:
    def __init__(self, client: Any, table_name: str, *, cache_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ddb = client
        self._table = table_name
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    # -- limits and prices ------------------------------------------------------------------------
    def limits(self, tenant: str, *, fresh: bool = False) -> SpendLimits:
        item = self._get(tenant, LIMITS_SK, fresh=fresh)
        if item is None:
            return SpendLimits()
        data = {k: v for k, v in item.items() if k not in _KEY_FIELDS}
        # DynamoDB items carry no nulls (to_item drops them): an absent cap in a stored item is "no cap".
        for nullable in ("tenant_monthly_usd", "user_daily_usd", "retention_days", "alert_webhook_url"):
            data.setdefault(nullable, None)
        return SpendLimits.model_validate(data)

    def last_webhook_delivery(self, tenant: str, *, fresh: bool = False) -> WebhookDelivery | None:
        """The last budget alert webhook delivery (from the limits item, cached with it)."""
        item = self._get(tenant, LIMITS_SK, fresh=fresh)
        raw = (item or {}).get("alert_webhook_delivery")
        return WebhookDelivery.model_validate(raw) if raw else None

    def record_webhook_delivery(self, tenant: str, delivery: WebhookDelivery) -> None:
        """Keep the outcome on the limits item without touching its version (no dispatch depends on it)."""
        try:
            self._ddb.update_item(
                TableName=self._table, Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": LIMITS_SK}},
                UpdateExpression="SET #d = :d", ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#d": "alert_webhook_delivery"},
                ExpressionAttributeValues={":d": to_value(delivery.model_dump(mode="json", exclude_none=True))})
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return  # the limits were never stored: there is no webhook to report on
            raise _unavailable(exc, "record_webhook_delivery") from exc
        except BotoCoreError as exc:
            raise _unavailable(exc, "record_webhook_delivery") from exc
        with self._lock:
            self._cache.pop((tenant, LIMITS_SK), None)

    def prices(self, tenant: str, *, fresh: bool = False) -> PriceTable:
        item = self._get(tenant, PRICES_SK, fresh=fresh)
        if item is None:
            return PriceTable()
        rows = tuple(ModelPrice.model_validate({**row, "source": "admin"}) for row in item.get("models") or [])
        return PriceTable(overrides=rows, version=int(item.get("version") or 0))

    def _get(self, tenant: str, sk: str, *, fresh: bool) -> dict[str, Any] | None:
        key = (tenant, sk)
        if not fresh and self._cache_seconds > 0:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None and hit[0] > self._monotonic():
                return hit[1]  # type: ignore[no-any-return]
        try:
            resp = self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                      Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": sk}})
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc, f"get_{sk.lower()}") from exc
        item = resp.get("Item")
        data = from_item(item) if item else None
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[key] = (self._monotonic() + self._cache_seconds, data)
        return data

    def invalidate(self, tenant: str) -> None:
        with self._lock:
            for sk in (LIMITS_SK, PRICES_SK):
                self._cache.pop((tenant, sk), None)

    def reset(self) -> None:
        with self._lock:
            self._cache.clear()

    def save_limits(self, tenant: str, limits: SpendLimits, *, expected_version: int,
                    ledger_write: TransactItem, audit: SettingsAuditRecord | None = None) -> None:
        data = {"pk": tenant_pk(tenant), "sk": LIMITS_SK, "entity": "spend_limits", "tenant": tenant,
                **limits.model_dump(mode="json")}
        extra = [ledger_write]
        if audit is not None:
            extra.append({"Put": {"TableName": self._table, "ConditionExpression": "attribute_not_exists(pk)",
                                  "Item": to_item({"pk": tenant_pk(tenant),
                                                   "sk": f"{AUDIT_PREFIX}{audit.at}#LIMITS#{limits.version:012d}",
                                                   "entity": "settings_audit", "revision": limits.version,
                                                   **audit.model_dump(mode="json", by_alias=True)})}})
        self._save(tenant, data, expected_version, extra, "save_limits")

    def save_prices(self, tenant: str, rows: Sequence[ModelPrice], *, version: int, expected_version: int,
                    ledger_write: TransactItem, updated_at: str, updated_by: str) -> None:
        data = {"pk": tenant_pk(tenant), "sk": PRICES_SK, "entity": "spend_prices", "tenant": tenant,
                "version": version, "updated_at": updated_at, "updated_by": updated_by,
                "models": [r.model_dump(mode="json", exclude={"source"}) for r in rows]}
        self._save(tenant, data, expected_version, [ledger_write], "save_prices")

    def _save(self, tenant: str, data: dict[str, Any], expected_version: int, extra: list[TransactItem],
              operation: str) -> None:
        if expected_version == 0:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {"ConditionExpression": "#v = :v", "ExpressionAttributeNames": {"#v": "version"},
                         "ExpressionAttributeValues": {":v": {"N": str(expected_version)}}}
        try:
            self._ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": self._table, "Item": to_item(data), **condition}}, *extra])
        except ClientError as exc:
            self.invalidate(tenant)
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise PreconditionFailed("They were changed by another request since you read them; reload "
                                             "and apply your change again.", code="version_mismatch") from exc
            raise _unavailable(exc, operation) from exc
        except BotoCoreError as exc:
            self.invalidate(tenant)
            raise _unavailable(exc, operation) from exc
        self.invalidate(tenant)

    # -- usage rows -------------------------------------------------------------------------------
    def usage_write(self, tenant: str, *, day: str, user: str, vendor: str, model: str, usage: TokenUsage,
                    cost_micros: int | None) -> TransactItem:
        """Add one finalized run to its usage row (rides in the finalization transaction)."""
        expires = int((datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
                       + timedelta(days=USAGE_RETENTION_DAYS)).timestamp())
        adds = {"runs": 1, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                "usd_micros": cost_micros or 0, "unpriced_runs": 0 if cost_micros is not None else 1}
        names = {f"#a{i}": k for i, k in enumerate(adds)}
        values = {f":a{i}": to_value(v) for i, v in enumerate(adds.values())}
        names.update({"#day": "day", "#user": "user", "#vendor": "vendor", "#model": "model", "#exp": "expires_at",
                      "#entity": "entity"})
        values.update({":day": {"S": day}, ":user": {"S": user}, ":vendor": {"S": vendor}, ":model": {"S": model},
                       ":exp": {"N": str(expires)}, ":entity": {"S": "spend_usage"}})
        return {"Update": {
            "TableName": self._table,
            "Key": {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": usage_sk(day, user, vendor, model)}},
            "UpdateExpression": "SET #day = :day, #user = :user, #vendor = :vendor, #model = :model, #exp = :exp, "
                                "#entity = :entity ADD " + ", ".join(f"#a{i} :a{i}" for i in range(len(adds))),
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}

    def usage_rows(self, tenant: str, *, day_from: str, day_to: str, user: str | None = None,
                   max_items: int = 20_000) -> list[dict[str, Any]]:
        """Usage rows of the days [day_from, day_to] (a member's own only, when `user` is given)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table, "KeyConditionExpression": "pk = :pk AND sk BETWEEN :a AND :b",
            "ExpressionAttributeValues": {":pk": {"S": tenant_pk(tenant)}, ":a": {"S": f"{USAGE_PREFIX}{day_from}"},
                                          ":b": {"S": f"{USAGE_PREFIX}{day_to}#\uffff"}}}
        if user is not None:
            kwargs["FilterExpression"] = "#user = :user"
            kwargs["ExpressionAttributeNames"] = {"#user": "user"}
            kwargs["ExpressionAttributeValues"][":user"] = {"S": user}
        rows: list[dict[str, Any]] = []
        try:
            while len(rows) < max_items:
                resp = self._ddb.query(**kwargs)
                rows.extend(from_item(i) for i in resp.get("Items", []))
                last = resp.get("LastEvaluatedKey")
                if not last:
                    break
                kwargs["ExclusiveStartKey"] = last
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc, "usage_rows") from exc
        return rows

    # -- quotes -----------------------------------------------------------------------------------
    def save_quote(self, tenant: str, quote_id: str, *, user: str, fingerprint: str, high_micros: int,
                   session_revision: int, expires_at: int) -> None:
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item({
                "pk": tenant_pk(tenant), "sk": f"{QUOTE_PREFIX}{quote_id}", "entity": "spend_quote", "user": user,
                "fingerprint": fingerprint, "high_micros": high_micros, "session_revision": session_revision,
                "expires_at": expires_at}))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc, "save_quote") from exc

    def quote_check(self, tenant: str, quote_id: str, *, user: str, fingerprint: str, high_micros: int,
                    now_epoch: int) -> TransactItem:
        """A ConditionCheck for a dispatch transaction: the quote is this user's, for this request and
        amount, and not expired (TTL deletion lags, so the expiry is checked too)."""
        return {"ConditionCheck": {
            "TableName": self._table,
            "Key": {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": f"{QUOTE_PREFIX}{quote_id}"}},
            "ConditionExpression": "#u = :u AND #f = :f AND #h = :h AND #e > :now",
            "ExpressionAttributeNames": {"#u": "user", "#f": "fingerprint", "#h": "high_micros", "#e": "expires_at"},
            "ExpressionAttributeValues": {":u": {"S": user}, ":f": {"S": fingerprint}, ":h": {"N": str(high_micros)},
                                          ":now": {"N": str(now_epoch)}}}}
