"""The local API server's own answers (no route matched) in the contract's shape, echoing nothing."""

from __future__ import annotations

import json

from chalice.local import ForbiddenError, NotAuthorizedError

from devstack.api_server import NO_ROUTE_MESSAGE, gateway_error

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def _chalice_local_no_route() -> ForbiddenError:
    # What chalice local raises for an unmatched route when an Authorization header was sent.
    return ForbiddenError({"x-amzn-RequestId": "req-1", "x-amzn-ErrorType": "UnauthorizedException"},
                          b'{"message": "Authorization header requires ... Authorization=Bearer ' + TOKEN.encode()
                          + b'"}')


def test_no_route_is_the_gateways_contract_404_without_the_token() -> None:
    status, headers, body = gateway_error(_chalice_local_no_route(), origin=None, allowed_origins=())
    assert status == 404
    assert json.loads(body) == {"error": {"code": "not_found", "message": NO_ROUTE_MESSAGE,
                                          "details": {"request_id": "req-1"}}}
    assert TOKEN.encode() not in body
    assert headers["Content-Type"] == "application/json"
    assert "x-amzn-ErrorType" not in headers


def test_no_route_carries_cors_headers_for_an_allowed_dashboard() -> None:
    _, headers, _ = gateway_error(_chalice_local_no_route(), origin="https://dash.example.com",
                                  allowed_origins=("https://dash.example.com",))
    assert headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    _, headers, _ = gateway_error(_chalice_local_no_route(), origin="https://evil.example", allowed_origins=())
    assert "Access-Control-Allow-Origin" not in headers


def test_any_other_local_gateway_refusal_is_in_the_contract_shape_too() -> None:
    status, _, body = gateway_error(NotAuthorizedError({}, b'{"message": "Unauthorized ' + TOKEN.encode() + b'"}'),
                                    origin=None, allowed_origins=())
    assert status == 401
    assert json.loads(body)["error"]["code"] == "gateway_error"
    assert TOKEN.encode() not in body
