"""The context limits vendors stated, remembered per (tenant, vendor, base_url, model) on DynamoDB.

Item `pk=TENANT#<t>, sk=CTXLIMIT#<vendor>#<base_url digest>#<model>` (`chalicelib.domain.context_limits`)
with the base URL and model in clear for the admin's view. The last statement wins (a vendor that
raised its limit says so only when a prompt exceeds it again, so the item also expires, TTL, after
`ttl_days`: the next run then fits to the model table again and learns anew if it must).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_item
from chalicelib.domain.context_limits import CONTEXT_LIMIT_PREFIX, LearnedContextLimit, context_limit_sk
from chalicelib.domain.errors import DependencyUnavailable

DEFAULT_TTL_DAYS = 30
_FIELDS = ("vendor", "model", "base_url", "limit_tokens", "stated_prompt_tokens", "source", "learned_at",
           "eval_run_id")


def _unavailable() -> DependencyUnavailable:
    return DependencyUnavailable("The learned context limits are unavailable; retry shortly.")


class DynamoContextLimitStore:
    """Thread-safe (a boto3 client and no mutable state)."""

    def __init__(self, client: Any, table_name: str, *, ttl_days: int = DEFAULT_TTL_DAYS,
                 wall: Callable[[], float] = time.time) -> None:
        self._ddb = client
        self._table = table_name
        self._ttl_seconds = ttl_days * 86_400
        self._wall = wall

    def get(self, tenant: str, vendor: str, base_url: str | None, model: str) -> LearnedContextLimit | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, Key=self._key(tenant, vendor, base_url, model))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable() from exc
        item = resp.get("Item")
        if not item:
            return None
        data = from_item(item)
        if int(data.get("expires_at", 0)) and int(data["expires_at"]) <= self._wall():
            return None  # TTL deletion lags: an expired item is gone already
        return _limit_of(data)

    def remember(self, tenant: str, limit: LearnedContextLimit) -> None:
        item = {**self._key_values(tenant, limit.vendor, limit.base_url, limit.model),
                "entity": "context_limit", "tenant": tenant, **limit.model_dump(),
                "expires_at": int(self._wall()) + self._ttl_seconds}
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(item))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable() from exc

    def learned(self, tenant: str, vendor: str | None = None) -> list[LearnedContextLimit]:
        """The tenant's learned limits (of one vendor), oldest key first."""
        prefix = CONTEXT_LIMIT_PREFIX + (f"{vendor}#" if vendor else "")
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": {"S": tenant_pk(tenant)}, ":prefix": {"S": prefix}}}
        try:
            while True:
                resp = self._ddb.query(**kwargs)
                items += resp.get("Items", [])
                if "LastEvaluatedKey" not in resp:
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable() from exc
        now = self._wall()
        return [_limit_of(data) for data in map(from_item, items)
                if not (int(data.get("expires_at", 0)) and int(data["expires_at"]) <= now)]

    def forget(self, tenant: str, vendor: str, *, model: str | None = None) -> list[LearnedContextLimit]:
        """Delete the vendor's learned limits (of one model when given); what was deleted."""
        gone = [limit for limit in self.learned(tenant, vendor) if model is None or limit.model == model]
        try:
            for limit in gone:
                self._ddb.delete_item(TableName=self._table,
                                      Key=self._key(tenant, limit.vendor, limit.base_url, limit.model))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable() from exc
        return gone

    def _key_values(self, tenant: str, vendor: str, base_url: str | None, model: str) -> dict[str, str]:
        return {"pk": tenant_pk(tenant), "sk": context_limit_sk(vendor, base_url, model)}

    def _key(self, tenant: str, vendor: str, base_url: str | None, model: str) -> dict[str, Any]:
        return {k: {"S": v} for k, v in self._key_values(tenant, vendor, base_url, model).items()}


def _limit_of(data: dict[str, Any]) -> LearnedContextLimit:
    return LearnedContextLimit.model_validate({k: data.get(k) for k in _FIELDS if data.get(k) is not None})
