"""Domain error tree: every failure a service can report, with its stable code and HTTP status.

Services and adapters raise these; `chalicelib.api.errors` is the one place that turns them into
the contract's `{"error": {"code", "message", "details"}}` body.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class. `code` is a stable snake_case identifier clients may switch on."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class InvalidRequest(DomainError):
    status = 400
    code = "invalid_request"


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class PreconditionFailed(DomainError):
    status = 412
    code = "precondition_failed"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"


class DependencyUnavailable(DomainError):
    """An AWS dependency failed in a way the caller can retry; never carries AWS error text."""

    status = 503
    code = "dependency_unavailable"
