"""WebSocket API handlers for daemons: `$connect` (authenticates itself), `$default` messages, `$disconnect`.

Registered through a Blueprint: Chalice 1.34 registers Blueprint WebSocket handlers on the app
but does not wrap them in its `WebsocketEventSourceHandler` (only `app.on_ws_*` does), so these
receive the raw API Gateway event dict and Lambda context. That is all they need, and it keeps
`app.py` free of handlers. Their Lambda handler path is this module, which never imports `app.py`,
so each carries its own logging and metrics (`lambda_entry`).

`$connect` gets no API Gateway authorizer, so it verifies the bearer token itself, taken from (in
order) the `Authorization: Bearer <token>` header (daemons), the `Sec-WebSocket-Protocol: bearer,
<token>` header (browsers, which cannot set Authorization; the `bearer` subprotocol is echoed),
or `?token=<token>` (last resort: query strings can end up in access logs). The daemon id comes
from `?daemon_id=` or the `X-Daemon-Id` header. Any non-2xx from `$connect` makes API Gateway
refuse the upgrade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalice import Blueprint

from chalicelib.domain.errors import DomainError
from chalicelib.observability import lambda_entry, logger

if TYPE_CHECKING:
    from chalicelib.services.daemons import DaemonService

ws_bp = Blueprint(__name__)

BEARER_SUBPROTOCOL = "bearer"


def _service(event: dict[str, Any]) -> DaemonService:
    from chalicelib.adapters.ws_push import management_endpoint
    from chalicelib.wiring import container

    c = container()
    ctx = event.get("requestContext") or {}
    if ctx.get("apiId") and ctx.get("stage"):
        # The API that invoked us is the one to reply on, unless config names an endpoint explicitly.
        c.ws_push.configure_default(management_endpoint(endpoint_url=None, api_id=str(ctx["apiId"]),
                                                        stage=str(ctx["stage"]), region=c.config.region))
    service: DaemonService = c.daemon_service
    return service


def _as_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, dict):
        return event
    to_dict = getattr(event, "to_dict", None)  # a Chalice WebsocketEvent, should Chalice ever wrap these
    return dict(to_dict()) if callable(to_dict) else {}


def _headers(event: dict[str, Any]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}


def _query(event: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()}


def connection_credentials(event: dict[str, Any]) -> tuple[str, str, bool]:
    """(token, daemon_id, via_subprotocol) from a `$connect` event."""
    headers = _headers(event)
    query = _query(event)
    token = ""
    via_subprotocol = False
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    if not token and "sec-websocket-protocol" in headers:
        parts = [p.strip() for p in headers["sec-websocket-protocol"].split(",")]
        if len(parts) >= 2 and parts[0].lower() == BEARER_SUBPROTOCOL:
            token, via_subprotocol = parts[1], True
    if not token:
        token = query.get("token", "").strip()
    daemon_id = query.get("daemon_id", "") or headers.get("x-daemon-id", "")
    return token, daemon_id.strip(), via_subprotocol


def _reject(status: int, code: str, message: str) -> dict[str, Any]:
    import json

    return {"statusCode": status, "body": json.dumps({"error": {"code": code, "message": message, "details": None}})}


@ws_bp.on_ws_connect(name="daemon_ws_connect")
@lambda_entry
def daemon_ws_connect(event: Any, context: Any = None) -> dict[str, Any]:
    data = _as_dict(event)
    connection_id = str((data.get("requestContext") or {}).get("connectionId", ""))
    token, daemon_id, via_subprotocol = connection_credentials(data)
    try:
        _service(data).ws_connect(token=token, daemon_id=daemon_id, connection_id=connection_id)
    except DomainError as exc:
        logger.info("daemon websocket rejected", extra={"code": exc.code})
        return _reject(exc.status, exc.code, exc.message)
    response: dict[str, Any] = {"statusCode": 200}
    if via_subprotocol:
        response["headers"] = {"Sec-WebSocket-Protocol": BEARER_SUBPROTOCOL}
    return response


@ws_bp.on_ws_message(name="daemon_ws_message")
@lambda_entry
def daemon_ws_message(event: Any, context: Any = None) -> dict[str, Any]:
    data = _as_dict(event)
    connection_id = str((data.get("requestContext") or {}).get("connectionId", ""))
    body = data.get("body")
    if isinstance(body, str) and data.get("isBase64Encoded"):
        import base64

        body = base64.b64decode(body).decode("utf-8", "replace")
    _service(data).ws_message(connection_id, body if isinstance(body, str) else None)
    return {"statusCode": 200}


@ws_bp.on_ws_disconnect(name="daemon_ws_disconnect")
@lambda_entry
def daemon_ws_disconnect(event: Any, context: Any = None) -> dict[str, Any]:
    data = _as_dict(event)
    connection_id = str((data.get("requestContext") or {}).get("connectionId", ""))
    if connection_id:
        _service(data).ws_disconnect(connection_id)
    return {"statusCode": 200}
