"""What the WebSocket handler tests share: hand-built API Gateway WebSocket events and the messages moto
recorded as pushed to a connection."""

from __future__ import annotations

import json
from typing import Any

API_ID = "abc123"
STAGE = "api"


def ws_event(route: str, connection_id: str, *, headers: dict[str, str] | None = None,
             query: dict[str, str] | None = None, body: str | None = None) -> dict[str, Any]:
    event_type = {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE")
    return {
        "requestContext": {"routeKey": route, "eventType": event_type, "connectionId": connection_id,
                           "apiId": API_ID, "stage": STAGE, "domainName": f"{API_ID}.execute-api.us-east-1"
                                                                          ".amazonaws.com",
                           "requestId": "req-1", "messageId": "msg-1"},
        "headers": headers, "queryStringParameters": query, "body": body, "isBase64Encoded": False,
    }


def pushed(connection_id: str) -> list[dict[str, Any]]:
    """Messages moto recorded for a connection (it concatenates the posted bytes)."""
    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    backend = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    raw = backend.connections[connection_id].data.decode() if connection_id in backend.connections else ""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(raw):
        obj, i = decoder.raw_decode(raw, i)
        out.append(obj)
    return out
