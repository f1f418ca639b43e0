"""DynamoDB store of a tenant's judge catalog: the current head and its immutable version snapshots.

Item layout (single table, the `CATALOG…` sort keys):
  pk=TENANT#<t>  sk=CATALOG                  the head: the current version (number, entries, who, when)
  pk=TENANT#<t>  sk=CATALOG#v<000000000007>  version 7 as saved, with its audit (`changes`); never rewritten

A save is one TransactWriteItems: the head Put conditioned on the version the writer read (absence
for the first save) plus the new version's Put conditioned on absence, so the head never names a
version that does not exist and two writers can never both make version n. Dispatch reads the head
(a short per-container cache, like the settings); runners read the version a run recorded, which
never changes and is therefore cached for the container's life.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo import from_item, put_head_with_record, tenant_pk, to_item
from chalicelib.adapters.tenant_cache import MISS, TenantTtlCache
from chalicelib.domain.catalog import CatalogAuditRecord, CatalogVersion
from chalicelib.domain.errors import Conflict, DependencyUnavailable
from chalicelib.observability import logger

HEAD_SK = "CATALOG"
VERSION_PREFIX = "CATALOG#v"
_VERSIONS_CACHED = 256
_KEY_FIELDS = ("pk", "sk", "entity", "tenant")
_RETRYABLE = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
                        "InternalServerError", "ServiceUnavailable", "TransactionInProgressException"})


def version_sk(version: int) -> str:
    # Zero-padded so a descending query lists versions newest first.
    return f"{VERSION_PREFIX}{version:012d}"


class CatalogWriteConflict(Conflict):
    """The head moved between read and write (another admin saved). The service retries or answers 412."""

    code = "catalog_write_conflict"


class DynamoCatalogStore:
    def __init__(self, client: Any, table_name: str, *, cache_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._table = table_name
        self._heads: TenantTtlCache[CatalogVersion | None] = TenantTtlCache(cache_seconds, monotonic)
        self._versions: OrderedDict[tuple[str, int], CatalogVersion] = OrderedDict()
        self._lock = threading.Lock()  # guards `_versions`; the head cache has its own

    # -- reads --------------------------------------------------------------------------------
    def head(self, tenant: str, *, fresh: bool = False) -> CatalogVersion | None:
        """The current version; None when the tenant never saved a catalog (version 0 applies)."""
        if not fresh:
            hit = self._heads.get(tenant)
            if hit is not MISS:
                return hit
        item = self._get(tenant, HEAD_SK, "get_catalog")
        head = None if item is None else _version(item)
        self._heads.remember(tenant, head)
        return head

    def version(self, tenant: str, version: int) -> CatalogVersion | None:
        """An immutable saved version (cached once read)."""
        key = (tenant, version)
        with self._lock:
            cached = self._versions.get(key)
            if cached is not None:
                self._versions.move_to_end(key)
                return cached
        item = self._get(tenant, version_sk(version), "get_catalog_version")
        if item is None:
            return None
        found = _version(item)
        self._remember_version(tenant, found)
        return found

    def list_audit(self, tenant: str, limit: int) -> list[CatalogAuditRecord]:
        try:
            resp = self._client.query(
                TableName=self._table, KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                ExpressionAttributeValues={":pk": {"S": tenant_pk(tenant)}, ":prefix": {"S": VERSION_PREFIX}},
                ProjectionExpression="version, created_at, created_by, changes",
                ScanIndexForward=False, Limit=limit, ConsistentRead=True)
        except ClientError as exc:
            raise _translate(exc, "list_catalog_audit") from exc
        records = []
        for item in resp.get("Items", []):
            data = from_item(item)
            records.append(CatalogAuditRecord(version=data["version"], at=data.get("created_at", ""),
                                              by=data.get("created_by", ""), changes=data.get("changes", [])))
        return records

    def _get(self, tenant: str, sk: str, operation: str) -> dict[str, Any] | None:
        try:
            resp = self._client.get_item(TableName=self._table, ConsistentRead=True,
                                         Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": sk}})
        except ClientError as exc:
            raise _translate(exc, operation) from exc
        item: dict[str, Any] | None = resp.get("Item")
        return item

    # -- writes -------------------------------------------------------------------------------
    def save(self, tenant: str, new: CatalogVersion, *, expected_version: int) -> None:
        """Make `new` the current version if the head is still `expected_version` (0 = no head yet)."""
        pk = tenant_pk(tenant)
        body = new.model_dump(mode="json", exclude_none=True)
        head = to_item({"pk": pk, "sk": HEAD_SK, "entity": "judge_catalog", "tenant": tenant, **body})
        snapshot = to_item({"pk": pk, "sk": version_sk(new.version), "entity": "judge_catalog_version",
                            "tenant": tenant, **body})
        try:
            won = put_head_with_record(self._client, self._table, head=head, counter="version",
                                       expected=expected_version, record=snapshot)
        except ClientError as exc:
            raise _translate(exc, "save_catalog") from exc
        if not won:
            self.invalidate(tenant)
            raise CatalogWriteConflict("The judge catalog was changed by another request; retry.")
        self._heads.remember(tenant, new)
        self._remember_version(tenant, new)

    # -- cache --------------------------------------------------------------------------------
    def invalidate(self, tenant: str) -> None:
        self._heads.invalidate(tenant)

    def reset(self) -> None:
        """Forget everything (what a fresh container has)."""
        self._heads.clear()
        with self._lock:
            self._versions.clear()

    def _remember_version(self, tenant: str, version: CatalogVersion) -> None:
        with self._lock:
            self._versions[(tenant, version.version)] = version
            while len(self._versions) > _VERSIONS_CACHED:
                self._versions.popitem(last=False)


def _version(item: dict[str, Any]) -> CatalogVersion:
    return CatalogVersion.model_validate({k: v for k, v in from_item(item).items() if k not in _KEY_FIELDS})


def _translate(exc: ClientError, operation: str) -> Exception:
    code = exc.response.get("Error", {}).get("Code", "Unknown")
    logger.warning("catalog store error", extra={"aws_error_code": code, "operation": operation})
    if code in _RETRYABLE:
        return DependencyUnavailable("The judge catalog store is busy; retry in a moment.",
                                     code="catalog_store_unavailable")
    return DependencyUnavailable("The judge catalog store is unavailable; retry, and contact support if it persists.",
                                 code="catalog_store_unavailable")
