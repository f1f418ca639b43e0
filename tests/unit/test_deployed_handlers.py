"""Every function as AWS runs it: its handler path, resolved without app.py, logs and flushes metrics."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

from chalicelib.observability import is_observed


def _handler_strings() -> dict[str, str]:
    """Function name → the Lambda handler path Chalice deploys (`module.attribute`), every kind but the
    REST API (which is `app.app`, wrapped by the app's HTTP middleware)."""
    from app import app

    found: dict[str, str] = {}
    for source in app.event_sources:
        found[source.name] = source.handler_string
    for config in app.websocket_handlers.values():
        found[config.name] = config.handler_string
    for function in app.pure_lambda_functions:
        found[function.name] = function.handler_string
    for auth in app.builtin_auth_handlers:
        found[auth.name] = auth.handler_string
    return found


def _resolve(handler_string: str) -> Any:
    module, _, attribute = handler_string.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def test_the_worker_and_websocket_handlers_are_their_own_modules() -> None:
    handlers = _handler_strings()
    assert handlers["eval_worker"] == "chalicelib.worker.eval_worker.eval_worker"
    assert {"daemon_ws_connect", "daemon_ws_message", "daemon_ws_disconnect"} <= set(handlers)
    assert not any(h.startswith("app.") for h in handlers.values())


@pytest.mark.parametrize("name", sorted(_handler_strings()))
def test_every_non_api_handler_carries_its_own_logging_and_metrics(name: str) -> None:
    handler = _resolve(_handler_strings()[name])
    assert is_observed(handler), (
        f"{name}: decorate it with chalicelib.observability.lambda_entry (under the Chalice decorator): "
        "its Lambda handler is its own module, so app.py's middleware never wraps it in AWS")


def test_a_websocket_handler_logs_with_its_lambda_context(container: Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from chalicelib.api.ws_handlers import daemon_ws_connect

    class Context:
        function_name = "eval-runner-prod-WebsocketConnect"
        memory_limit_in_mb = 512
        invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:eval-runner-prod-WebsocketConnect"
        aws_request_id = "req-ws-1"

    capsys.readouterr()
    # No token: rejected, and logged with the function's context (the deploy rehearsal shows the
    # cold-start metric of every function in a fresh process).
    response = daemon_ws_connect({"requestContext": {"connectionId": "c-1", "routeKey": "$connect"}}, Context())
    assert response["statusCode"] == 401
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    logs = [r for r in records if "_aws" not in r]
    assert logs and all(r["function_name"] == Context.function_name and r["function_request_id"] == "req-ws-1"
                        for r in logs)
    assert any(r["message"] == "daemon websocket rejected" for r in logs)
