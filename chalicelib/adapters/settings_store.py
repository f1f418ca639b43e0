"""DynamoDB store of a tenant's eval-runner settings item and its audit trail.

Item layout (single table):
  pk=TENANT#<t>  sk=SETTINGS#EVAL_RUNNER   the `SettingsRecord` (vendor blocks as maps; secret ARN and
                                           version id, key hint; never key material)
  pk=TENANT#<t>  sk=AUDIT#<iso>#<revision>  one `SettingsAuditRecord` per change

Every write is one TransactWriteItems: the settings Put conditioned on the revision the caller read
(or on absence for the first write) plus the audit Put, so state and audit cannot diverge. A short
in-process read cache serves the hot runner path; admin paths read with `fresh=True`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo import from_item, put_head_with_record, tenant_pk, to_item
from chalicelib.adapters.tenant_cache import MISS, TenantTtlCache
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.domain.settings import SettingsAuditRecord, SettingsRecord, SettingsWriteConflict
from chalicelib.observability import logger

SETTINGS_SK = "SETTINGS#EVAL_RUNNER"
AUDIT_PREFIX = "AUDIT#"
_KEY_FIELDS = ("pk", "sk", "entity", "tenant")
_RETRYABLE = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
                        "InternalServerError", "ServiceUnavailable", "TransactionInProgressException"})


def audit_sk(at: str, revision: int) -> str:
    # The revision makes the key unique and keeps same-millisecond records in write order.
    return f"{AUDIT_PREFIX}{at}#{revision:012d}"


class SettingsStore:
    def __init__(self, client: Any, table_name: str, *, cache_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._table = table_name
        self._cache: TenantTtlCache[SettingsRecord] = TenantTtlCache(cache_seconds, monotonic)

    # -- reads --------------------------------------------------------------------------------
    def get(self, tenant: str, *, fresh: bool = False) -> SettingsRecord:
        """The tenant's settings; a default (version 0) record when none were ever written."""
        if not fresh:
            hit = self._cache.get(tenant)
            if hit is not MISS:
                return hit
        try:
            resp = self._client.get_item(TableName=self._table, ConsistentRead=True,
                                         Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": SETTINGS_SK}})
        except ClientError as exc:
            raise _translate(exc, "get_settings") from exc
        item = resp.get("Item")
        record = SettingsRecord() if item is None else SettingsRecord.model_validate(
            {k: v for k, v in from_item(item).items() if k not in _KEY_FIELDS})
        self._cache.remember(tenant, record)
        return record

    def list_audit(self, tenant: str, limit: int) -> list[SettingsAuditRecord]:
        try:
            # Settings (and limits) records are `AUDIT#<ISO time>#…`, so their keys continue with a digit;
            # the range leaves out the deletion trail's `AUDIT#DELETE#…` under the same prefix.
            resp = self._client.query(
                TableName=self._table, KeyConditionExpression="pk = :pk AND sk BETWEEN :first AND :last",
                ExpressionAttributeValues={":pk": {"S": tenant_pk(tenant)}, ":first": {"S": f"{AUDIT_PREFIX}0"},
                                           ":last": {"S": f"{AUDIT_PREFIX}9\uffff"}},
                ScanIndexForward=False, Limit=limit, ConsistentRead=True)
        except ClientError as exc:
            raise _translate(exc, "list_audit") from exc
        return [SettingsAuditRecord.model_validate(from_item(item)) for item in resp.get("Items", [])]

    # -- writes -------------------------------------------------------------------------------
    def save(self, tenant: str, record: SettingsRecord, *, expected_revision: int,
             audit: SettingsAuditRecord) -> None:
        """Store `record` only if the stored revision is still `expected_revision` (0 = no item yet),
        appending `audit` atomically. Raises `SettingsWriteConflict` when the revision moved."""
        pk = tenant_pk(tenant)
        settings_item = to_item({"pk": pk, "sk": SETTINGS_SK, "entity": "eval_runner_settings", "tenant": tenant,
                                 **record.model_dump(mode="json", exclude_none=True)})
        audit_item = to_item({"pk": pk, "sk": audit_sk(audit.at, record.revision), "entity": "settings_audit",
                              "revision": record.revision, **audit.model_dump(mode="json", by_alias=True)})
        try:
            won = put_head_with_record(self._client, self._table, head=settings_item, counter="revision",
                                       expected=expected_revision, record=audit_item)
        except ClientError as exc:
            raise _translate(exc, "save_settings") from exc
        if not won:
            self.invalidate(tenant)
            raise SettingsWriteConflict("The settings were changed by another request; retry.")
        self._cache.remember(tenant, record)

    # -- cache --------------------------------------------------------------------------------
    def invalidate(self, tenant: str) -> None:
        self._cache.invalidate(tenant)

    def reset(self) -> None:
        self._cache.clear()


def _translate(exc: ClientError, operation: str) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "Unknown")
    logger.warning("settings store error", extra={"aws_error_code": code, "operation": operation})
    if code in _RETRYABLE:
        return DependencyUnavailable("The settings store is busy; retry in a moment.",
                                     code="settings_store_unavailable")
    return DependencyUnavailable("The settings store is unavailable; retry, and contact support if it persists.",
                                 code="settings_store_unavailable")
