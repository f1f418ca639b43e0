"""Serves the Chalice REST API on 127.0.0.1 with `chalice local`'s threaded server (run by devstack.run)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from typing import Any

from chalice.cli import create_local_server
from chalice.cli.factory import CLIFactory
from chalice.local import ChaliceRequestHandler, ForbiddenError, LocalGatewayException

from chalicelib.api.cors import response_headers
from chalicelib.api.errors import error_body
from devstack.common import ROOT

# The deployed API Gateway's MISSING_AUTHENTICATION_TOKEN response (infra/chalice-overlay.json).
NO_ROUTE_MESSAGE = "No route matches this method and path; see GET /openapi.json."


def _answer_every_method() -> None:
    """`chalice local` handles only the seven REST methods and lets http.server answer any other
    (TRACE, QUERY, made-up ones) with a 501 HTML page. Route every method through the app like API
    Gateway does, so an unsupported one gets the contract's 405 error body."""

    def any_method(self: ChaliceRequestHandler, name: str) -> Any:
        if name.startswith("do_"):
            return self._generic_handle
        raise AttributeError(name)

    ChaliceRequestHandler.__getattr__ = any_method  # type: ignore[attr-defined]


def gateway_error(error: LocalGatewayException, *, origin: str | None,
                  allowed_origins: Iterable[str]) -> tuple[int, dict[str, str], bytes]:
    """What the local stack answers where `chalice local` itself would (no route matched): the deployed
    gateway's contract body, never chalice-local's, which echoes the whole Authorization header."""
    request_id = str((error.headers or {}).get("x-amzn-RequestId") or "")
    if isinstance(error, ForbiddenError):  # raised only for an unmatched route: this app has no authorizers
        status, body = 404, error_body("not_found", NO_ROUTE_MESSAGE, {"request_id": request_id})
    else:
        status, body = error.CODE, error_body("gateway_error", "The local gateway refused the request.",
                                              {"request_id": request_id})
    headers = {"Content-Type": "application/json", "x-amzn-RequestId": request_id,
               **response_headers(origin, allowed_origins)}
    return status, headers, json.dumps(body).encode()


def _answer_gateway_errors_like_api_gateway() -> None:
    def send_error_response(self: ChaliceRequestHandler, error: LocalGatewayException) -> None:
        origin = self.headers.get("Origin")
        status, headers, body = gateway_error(error, origin=origin, allowed_origins=_allowed_origins())
        self._send_http_response(status, headers, body)

    ChaliceRequestHandler._send_error_response = send_error_response  # type: ignore[method-assign]


def _allowed_origins() -> tuple[str, ...]:
    from chalicelib.wiring import container

    try:
        return container().config.cors_allowed_origins
    except RuntimeError:
        return ()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args()
    logging.getLogger("botocore").setLevel(logging.WARNING)
    import os

    _answer_every_method()
    _answer_gateway_errors_like_api_gateway()
    factory = CLIFactory(project_dir=str(ROOT), debug=False, environ=dict(os.environ))
    server = create_local_server(factory, args.host, args.port, args.stage)
    server.serve_forever()


if __name__ == "__main__":
    main()
