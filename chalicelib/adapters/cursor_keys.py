"""Per-tenant keys that sign history page cursors, kept in the table (`sk=HISTORY#CURSORKEY`).

A random 256-bit key is created on a tenant's first list request (a conditional put, so
concurrent first requests agree on one key) and cached for the life of the container. The table
is encrypted with the stage key, and anyone able to read this item can read the runs it protects
anyway: the key only makes cursors tamper-evident, it guards nothing a reader could not see.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import tenant_pk
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.observability import logger

CURSOR_KEY_SK = "HISTORY#CURSORKEY"


class DynamoCursorKeys:
    def __init__(self, client: Any, table_name: str, *, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._ddb = client
        self._table = table_name
        self._random = random_bytes
        self._cache: dict[str, bytes] = {}

    def key_for(self, tenant: str) -> bytes:
        cached = self._cache.get(tenant)
        if cached is not None:
            return cached
        key = self._read(tenant) or self._create(tenant)
        self._cache[tenant] = key
        return key

    def _item_key(self, tenant: str) -> dict[str, Any]:
        return {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": CURSOR_KEY_SK}}

    def _read(self, tenant: str) -> bytes | None:
        try:
            resp = self._ddb.get_item(TableName=self._table, Key=self._item_key(tenant), ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from None
        item = resp.get("Item")
        return base64.b64decode(item["key"]["S"]) if item else None

    def _create(self, tenant: str) -> bytes:
        key = self._random(32)
        try:
            self._ddb.put_item(TableName=self._table, ConditionExpression="attribute_not_exists(pk)",
                               Item={**self._item_key(tenant), "key": {"S": base64.b64encode(key).decode()},
                                     "entity": {"S": "cursor_key"}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                won = self._read(tenant)  # a concurrent first request created it
                if won is not None:
                    return won
            raise self._unavailable(exc) from None
        except BotoCoreError as exc:
            raise self._unavailable(exc) from None
        return key

    @staticmethod
    def _unavailable(exc: Exception) -> DependencyUnavailable:
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
        logger.warning("cursor key call failed", extra={"aws_error": code})
        return DependencyUnavailable("The run history is unavailable; retry shortly.")
