"""The per-user upload counter in DynamoDB: one item per user and fixed window, incremented atomically.

Item: `pk=TENANT#<t>`, `sk=UPLOADRATE#<user>#<window start epoch>`, `count`, TTL `expires_at`. One
conditional `ADD count 1` per upload: it succeeds only while `count < limit`, so concurrent uploads
from one user can never pass the limit together, and a refused upload does not count.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import tenant_pk
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.observability import logger


class DynamoUploadCounter:
    def __init__(self, dynamodb: Any, *, table_name: str) -> None:
        self._ddb = dynamodb
        self._table = table_name

    def take(self, tenant: str, user: str, *, window_start: int, window_seconds: int, limit: int) -> bool:
        """Count one upload in the window; False (nothing counted) when the window is already full."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"pk": {"S": tenant_pk(tenant)}, "sk": {"S": f"UPLOADRATE#{user}#{window_start}"}},
                UpdateExpression="ADD #count :one SET expires_at = :expires",
                ConditionExpression="attribute_not_exists(#count) OR #count < :limit",
                ExpressionAttributeNames={"#count": "count"},
                ExpressionAttributeValues={":one": {"N": "1"}, ":limit": {"N": str(limit)},
                                           ":expires": {"N": str(window_start + 2 * window_seconds)}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None
        return True


def _unavailable(exc: Exception) -> DependencyUnavailable:
    # Fails closed: an upload is refused (retryable) rather than let through uncounted.
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
    logger.warning("upload rate counter unavailable", extra={"aws_error": code})
    return DependencyUnavailable("The upload rate limit could not be checked; retry shortly.",
                                 code="storage_unavailable")
