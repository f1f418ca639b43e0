"""Each vendor's error answers: status, body shape, retry headers and "too long" messages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from devstack.fake_vendor.options import Rule, Vendor


class _VendorHTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.headers = dict(headers or {})


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
    529: "server_error",
}


_DEFAULT_MESSAGES = {
    401: "Invalid API key.",
    403: "This key does not have permission to use this resource.",
    429: "Rate limit exceeded; retry later.",
    500: "Internal server error.",
    503: "The server is overloaded or not ready yet.",
    529: "Overloaded",
}


_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def _error_body(vendor: Vendor, err: _VendorHTTPError, request_id: str) -> Any:
    if vendor == "anthropic":
        error_type = err.error_type or _ANTHROPIC_TYPES.get(err.status, "api_error")
        return {
            "type": "error",
            "error": {"type": error_type, "message": err.message},
            "request_id": request_id,
        }
    error_type = err.error_type or _OPENAI_TYPES.get(err.status, "server_error")
    code = err.code if err.code is not None else _OPENAI_CODES.get(err.status)
    return {"error": {"message": err.message, "type": error_type, "param": None, "code": code}}


def _retry_headers(seconds: float) -> dict[str, str]:
    return {
        "retry-after-ms": str(max(int(seconds * 1000), 1)),
        "retry-after": str(max(math.ceil(seconds), 1)),
    }


def _auth_error(vendor: Vendor, message: str) -> _VendorHTTPError:
    return _VendorHTTPError(401, message)


def _bad_request(vendor: Vendor, message: str) -> _VendorHTTPError:
    return _VendorHTTPError(400, message)


def _not_found(vendor: Vendor, model: str) -> _VendorHTTPError:
    if vendor == "anthropic":
        return _VendorHTTPError(404, f"model: {model}", error_type="not_found_error")
    return _VendorHTTPError(
        404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
    )


def _rate_limited(vendor: Vendor, wait: float) -> _VendorHTTPError:
    return _VendorHTTPError(429, "Rate limit exceeded: too many requests per minute.", headers=_retry_headers(wait))


def _too_long(vendor: Vendor, tokens: int, window: int) -> _VendorHTTPError:
    if vendor == "anthropic":
        return _VendorHTTPError(400, f"prompt is too long: {tokens} tokens > {window} maximum")
    return _VendorHTTPError(
        400,
        f"This model's maximum context length is {window} tokens. However, your messages resulted in "
        f"{tokens} tokens. Please reduce the length of the messages.",
        code="context_length_exceeded",
    )


def _scripted_error(vendor: Vendor, rule: Rule) -> _VendorHTTPError:
    status = int(rule.status or 500)
    headers: dict[str, str] = {}
    if rule.retry_after is not None:
        headers.update(_retry_headers(rule.retry_after))
    if rule.should_retry is not None:
        headers["x-should-retry"] = "true" if rule.should_retry else "false"
    message = rule.message or _DEFAULT_MESSAGES.get(status, f"Scripted error {status}.")
    return _VendorHTTPError(status, message, error_type=rule.error_type, code=rule.error_code, headers=headers)
