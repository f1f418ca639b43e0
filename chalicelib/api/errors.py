"""The one place that maps domain errors and validation failures to the contract's error body."""

from __future__ import annotations

from typing import Any

from chalice import Response
from pydantic import ValidationError

from chalicelib.domain.errors import DomainError
from chalicelib.observability import logger


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(body=error_body(code, message, details), status_code=status,
                    headers={"Content-Type": "application/json", **(headers or {})})


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def validation_details(exc: ValidationError) -> dict[str, Any]:
    fields = []
    for err in exc.errors(include_url=False, include_input=False):
        fields.append({"field": _field_path(err["loc"]), "message": err["msg"], "type": err["type"]})
    return {"fields": fields}


def response_for_exception(exc: Exception) -> Response:
    if isinstance(exc, DomainError):
        headers = {}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)
    if isinstance(exc, ValidationError):
        details = validation_details(exc)
        names = ", ".join(f["field"] for f in details["fields"][:5])
        return error_response(400, "validation_failed", f"The request body is invalid: check {names}.",
                              details)
    if _is_transient_aws_failure(exc):
        # An adapter that let a timeout or throttle through: the caller can retry, as with any
        # DependencyUnavailable; the AWS text stays in the log.
        logger.warning("AWS dependency failed without translation", extra={"error_type": type(exc).__name__})
        return error_response(503, "dependency_unavailable",
                              "A service this request depends on is unavailable; retry shortly.",
                              headers={"Retry-After": "5"})
    # Unknown failures: log the type and traceback server-side, return nothing internal.
    logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
    return error_response(500, "internal_error",
                          "An internal error occurred; retry, and contact support if it persists.")


_THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "RequestLimitExceeded", "SlowDown",
                               "ProvisionedThroughputExceededException", "RequestThrottled",
                               "TransactionInProgressException", "ServiceUnavailable", "InternalError",
                               "InternalServerError"})


def _is_transient_aws_failure(exc: Exception) -> bool:
    """A botocore timeout, lost connection or throttle/5xx answer (botocore is imported only when one is raised,
    so a route that never touches AWS does not load it)."""
    if not type(exc).__module__.startswith("botocore"):
        return False
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as AwsConnectionError

    if isinstance(exc, AwsConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in _THROTTLING_CODES or status >= 500
    return False
