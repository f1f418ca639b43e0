"""Push to daemons over the API Gateway WebSocket API (`apigatewaymanagementapi.post_to_connection`).

The management endpoint is `config.websocket_endpoint_url` when set (needed for moto server and
custom domains), else built from the WebSocket API id and stage as Chalice's own
`configure_from_api_id` does. With neither configured, push is disabled and daemons get their
jobs and cancels by long poll only. A push never fails the request that caused it: polling is the
delivery guarantee, push only makes it faster.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.observability import logger


class PushOutcome(Enum):
    SENT = "sent"
    GONE = "gone"  # the connection no longer exists: delete its item
    FAILED = "failed"  # transient or configuration problem: keep the item, rely on polling


def management_endpoint(*, endpoint_url: str | None, api_id: str | None, stage: str, region: str) -> str | None:
    if endpoint_url:
        return endpoint_url.rstrip("/")
    if not api_id:
        return None
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{api_id}.execute-api.{region}.{suffix}/{stage}"


class WebSocketPush:
    """Sends JSON messages to connection ids.

    `client_for(endpoint)` builds the apigatewaymanagementapi client. Like Chalice's
    `configure_from_api_id`, `configure_default` only applies when no endpoint was configured, so
    a WebSocket handler can supply the endpoint of the API that invoked it.
    """

    def __init__(self, client_for: Callable[[str], Any], endpoint: str | None) -> None:
        self._client_for = client_for
        self._endpoint = endpoint
        self._client: Any = None

    @property
    def enabled(self) -> bool:
        return self._endpoint is not None

    def configure_default(self, endpoint: str | None) -> None:
        if self._endpoint is None and endpoint:
            self._endpoint = endpoint

    def _get_client(self) -> Any:
        if self._client is None and self._endpoint is not None:
            self._client = self._client_for(self._endpoint)
        return self._client

    def send(self, connection_id: str, message: dict[str, Any]) -> PushOutcome:
        client = self._get_client()
        if client is None:
            return PushOutcome.FAILED
        data = json.dumps(message, separators=(",", ":")).encode()
        try:
            client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "GoneException":
                return PushOutcome.GONE
            logger.warning("websocket push failed", extra={"error_code": code})
            return PushOutcome.FAILED
        except BotoCoreError as exc:
            logger.warning("websocket push failed", extra={"error_type": type(exc).__name__})
            return PushOutcome.FAILED
        return PushOutcome.SENT
