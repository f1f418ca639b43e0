"""Small helpers over the low-level DynamoDB client: item (de)serialisation and key conventions.

One table holds every entity (single-table design): `pk`/`sk` strings, `gsi1pk`/`gsi1sk` for the
one secondary access path, `expires_at` (epoch seconds) as the TTL attribute. The low-level client
is used instead of the boto3 resource layer because it loads faster on a cold start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def set_clause(sets: Mapping[str, Any], names: dict[str, str], values: dict[str, Any]) -> str:
    """The body of an UpdateExpression's SET (`#n0_0.#n0_1 = :v0, ...`; dotted paths go into maps).

    Every path segment becomes a name placeholder (added to `names`) and every value a `:v<i>`
    (serialised into `values`), so a reserved word such as `status` or `usage` never breaks the write.
    """
    parts = []
    for i, (path, value) in enumerate(sets.items()):
        tokens = []
        for j, seg in enumerate(path.split(".")):
            names[f"#n{i}_{j}"] = seg
            tokens.append(f"#n{i}_{j}")
        parts.append(f"{'.'.join(tokens)} = :v{i}")
        values[f":v{i}"] = to_value(value)
    return ", ".join(parts)


def remove_clause(removes: Sequence[str], names: dict[str, str]) -> str:
    """The body of an UpdateExpression's REMOVE (`#r0, #r1`), each attribute a name placeholder."""
    for k, attr in enumerate(removes):
        names[f"#r{k}"] = attr
    return ", ".join(f"#r{k}" for k in range(len(removes)))


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
