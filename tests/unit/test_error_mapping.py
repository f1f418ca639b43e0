"""The one error mapping: a botocore timeout, lost connection or throttle that an adapter let through is a
retryable 503 (never AWS text), any other unexpected failure a 500."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from chalicelib.api.errors import response_for_exception


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"secret-ish AWS text for {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "TransactWriteItems")


@pytest.mark.parametrize("exc", [
    EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
    ReadTimeoutError(endpoint_url="https://sqs.us-east-1.amazonaws.com"),
    _client_error("ProvisionedThroughputExceededException", 400),
    _client_error("ThrottlingException", 400),
    _client_error("InternalServerError", 500),
], ids=["connection", "read-timeout", "throughput", "throttling", "aws-5xx"])
def test_a_transient_aws_failure_is_a_retryable_503_without_aws_text(exc: Exception) -> None:
    resp = response_for_exception(exc)
    body = resp.body if isinstance(resp.body, dict) else json.loads(resp.body)
    assert (resp.status_code, body["error"]["code"]) == (503, "dependency_unavailable")
    assert resp.headers["Retry-After"] == "5"
    assert "amazonaws" not in json.dumps(body) and "AWS text" not in json.dumps(body)


@pytest.mark.parametrize("exc", [_client_error("AccessDeniedException", 400), ValueError("a bug")],
                         ids=["access-denied", "bug"])
def test_anything_else_unexpected_is_a_500_that_says_nothing_internal(exc: Exception) -> None:
    resp = response_for_exception(exc)
    body = resp.body if isinstance(resp.body, dict) else json.loads(resp.body)
    assert (resp.status_code, body["error"]["code"]) == (500, "internal_error")
    assert "AWS text" not in json.dumps(body) and "a bug" not in json.dumps(body)
