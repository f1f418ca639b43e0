"""HTTP middleware: rewrites Chalice's own error bodies (405, 415, 500) into the contract's shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalice import Response

from chalicelib.api.errors import error_body

_CODES = {405: "method_not_allowed", 415: "unsupported_media_type", 500: "internal_error"}
_MESSAGES = {
    405: "This method is not supported on this path.",
    415: "This content type is not supported here.",
    500: "An internal error occurred; retry, and contact support if it persists.",
}


def normalise_error_bodies(event: Any, get_response: Callable[[Any], Response]) -> Response:
    response = get_response(event)
    body = response.body
    if isinstance(body, str | bytes) and response.status_code >= 400:
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    if isinstance(body, dict) and "Code" in body and "error" not in body:
        status = response.status_code
        code = _CODES.get(status, "error")
        message = _MESSAGES.get(status, str(body.get("Message", "Request failed.")))
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
        headers["Content-Type"] = "application/json"
        return Response(body=error_body(code, message), status_code=status, headers=headers)
    return response
