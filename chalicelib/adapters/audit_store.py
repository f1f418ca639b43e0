"""The deletion audit trail in DynamoDB: `pk=TENANT#<t>`, `sk=AUDIT#DELETE#<at>#<audit_id>`.

An entry says who deleted what and when (ids and counts), never any content. Entries carry no TTL:
they outlive the data they describe, which is their point.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_item
from chalicelib.domain.deletion import DeletionRecord
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.observability import logger

_PREFIX = "AUDIT#DELETE#"


def _unavailable(action: str, exc: Exception) -> DependencyUnavailable:
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    logger.warning("deletion audit call failed", extra={"action": action, "aws_error": code})
    return DependencyUnavailable("The deletion audit is unavailable; nothing was deleted. Retry shortly.")


class DynamoDeletionAudit:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    def record(self, tenant: str, entry: DeletionRecord) -> None:
        item = {"pk": tenant_pk(tenant), "sk": f"{_PREFIX}{entry.at}#{entry.audit_id}", "entity": "deletion_audit",
                **entry.model_dump(mode="json")}
        try:
            self._ddb.put_item(TableName=self._table, Item=to_item(item))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("record", exc) from None

    def latest(self, tenant: str, *, limit: int) -> list[DeletionRecord]:
        try:
            resp = self._ddb.query(TableName=self._table, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                                   ExpressionAttributeValues={":pk": {"S": tenant_pk(tenant)}, ":p": {"S": _PREFIX}},
                                   ScanIndexForward=False, Limit=limit)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable("latest", exc) from None
        return [DeletionRecord.model_validate(from_item(i)) for i in resp.get("Items", [])]
