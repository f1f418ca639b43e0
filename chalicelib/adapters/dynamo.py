"""Small helpers over the low-level DynamoDB client: item (de)serialisation and key conventions.

One table holds every entity (single-table design): `pk`/`sk` strings, `gsi1pk`/`gsi1sk` for the
one secondary access path, `expires_at` (epoch seconds) as the TTL attribute. The low-level client
is used instead of the boto3 resource layer because it loads faster on a cold start.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _prepare(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _prepare(v) for k, v in value.items() if v is not None or k not in ("gsi1pk", "gsi1sk")}
    if isinstance(value, list | tuple):
        return [_prepare(v) for v in value]
    return value


def _restore(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, set):
        return {_restore(v) for v in value}
    return value


def to_item(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(_prepare(v)) for k, v in data.items() if v is not None}


def to_value(value: Any) -> Any:
    return _serializer.serialize(_prepare(value))


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _restore(_deserializer.deserialize(v)) for k, v in item.items()}


def tenant_pk(tenant: str) -> str:
    return f"TENANT#{tenant}"


_LOST_RACE = ("TransactionCanceledException", "ConditionalCheckFailedException", "TransactionConflictException")


def put_head_with_record(client: Any, table: str, *, head: dict[str, Any], counter: str, expected: int,
                         record: dict[str, Any]) -> bool:
    """Write a versioned head item and a new immutable record in one transaction.

    The head is written only if its `counter` attribute still equals `expected` (0 = no head yet) and
    the record only if its key is new, so two writers that read the same head can never both win.
    Returns False when the race was lost; any other client error is raised for the caller to translate.
    """
    if expected == 0:
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
    else:
        condition = {"ConditionExpression": "#c = :c", "ExpressionAttributeNames": {"#c": counter},
                     "ExpressionAttributeValues": {":c": {"N": str(expected)}}}
    try:
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": head, **condition}},
            {"Put": {"TableName": table, "Item": record, "ConditionExpression": "attribute_not_exists(pk)"}},
        ])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "") in _LOST_RACE:
            return False
        raise
    return True
