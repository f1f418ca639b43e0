"""Shared fixtures: moto-backed AWS with the infra template's resources, a wired container,
the Chalice test client, token minting, and a suite-wide guard against leaked API keys."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

# Hermetic AWS: fake credentials and region before boto3 is imported anywhere.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
})
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("AWS_PROFILE", None)

DEV_SECRET = "test-dev-secret-0123456789abcdef0123456789"

# Every API key a test hands to the service is registered here; the guard below fails the test if
# one shows up in any HTTP response body or captured log line.
_SEEN_KEYS: set[str] = set()


def register_secret(value: str) -> str:
    _SEEN_KEYS.add(value)
    return value


class _CurrentStdout:
    """A stream that resolves sys.stdout at write time (pytest swaps it per test and per phase)."""

    def write(self, text: str) -> int:
        import sys

        return sys.stdout.write(text)

    def flush(self) -> None:
        import sys

        sys.stdout.flush()


@pytest.fixture(autouse=True)
def _key_leak_guard(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    # Our loggers at DEBUG; botocore's wire logs are off in Lambda and would echo request bodies.
    caplog.set_level(logging.DEBUG)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "moto", "werkzeug", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Powertools binds its StreamHandler to whatever sys.stdout was at first import (an earlier test's
    # capsys, closed by now): write to the *current* stdout instead, so JSON log lines reach the check below.
    from chalicelib.observability import logger as _service_logger
    for handler in _service_logger.handlers:
        if type(handler) is logging.StreamHandler and not isinstance(handler.stream, _CurrentStdout):
            handler.stream = _CurrentStdout()  # not setStream(): it would flush the closed stream
    _SEEN_KEYS.clear()
    yield
    out, err = capsys.readouterr()
    logs = "\n".join(r.getMessage() + " " + json.dumps(r.__dict__, default=str) for r in caplog.records)
    for key in _SEEN_KEYS:
        assert key not in logs, "an API key appeared in a log record"
        assert key not in out and key not in err, "an API key appeared on stdout/stderr"
    # Re-emit captured output so -s / failures still show it.
    print(out, end="")


@pytest.fixture
def aws() -> Iterator[Any]:
    from moto import mock_aws

    from devstack.moto_server import serialize_in_process_dynamodb

    # Worker threads and the test's own calls share moto's in-memory backend; DynamoDB serialises
    # writes to an item, moto does not (see tests/adapters/test_in_process_aws.py).
    serialize_in_process_dynamodb()
    with mock_aws():
        import boto3

        from devstack.resources import provision

        session = boto3.Session(region_name="us-east-1")
        resources = provision(session, stack_name="eval-runner-test")
        yield session, resources


@pytest.fixture
def runtime_env(aws: Any) -> dict[str, str]:
    _, resources = aws
    env = resources.env(stage="test")
    env.update({"STAGE": "test", "AUTH_MODE": "hs256", "DEV_JWT_SECRET": DEV_SECRET,
                "ALLOWED_BASE_URL_HOSTS": "127.0.0.1,localhost", "ALLOW_HTTP_BASE_URLS": "true",
                "MAX_RUN_TIMEOUT_SECONDS": "840", "WORKER_GRACE_SECONDS": "60",
                "SETTINGS_CACHE_SECONDS": "0"})
    return env


@pytest.fixture
def container(aws: Any, runtime_env: dict[str, str]) -> Iterator[Any]:
    from chalicelib.config import runtime_config_from_env
    from chalicelib.wiring import Container, reset_container, use_container

    session, _ = aws
    c = Container(runtime_config_from_env(runtime_env), session=session)
    use_container(c)
    yield c
    reset_container()


@pytest.fixture
def client(container: Any) -> Iterator[Any]:
    from chalice.test import Client

    from app import app

    with Client(app, stage_name="dev") as c:
        yield GuardedClient(c)


class GuardedClient:
    """Wraps chalice.test.Client: JSON helpers, and every response body is checked for keys."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lambda_ = inner.lambda_
        self.events = inner.events

    def request(self, method: str, path: str, *, token: str | None = None, json_body: Any = None,
                body: bytes | str | None = None, headers: dict[str, str] | None = None) -> Any:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs.setdefault("Authorization", f"Bearer {token}")
        if json_body is not None:
            body = json.dumps(json_body)
            hdrs.setdefault("Content-Type", "application/json")
        resp = getattr(self.inner.http, method.lower())(path, headers=hdrs, body=body)
        text = resp.body.decode("utf-8", "replace") if isinstance(resp.body, bytes) else str(resp.body)
        for key in _SEEN_KEYS:
            assert key not in text, f"an API key leaked in the response to {method} {path}"
        try:
            resp.json = json.loads(text) if text and text.lstrip().startswith(("{", "[")) else None
        except ValueError:
            resp.json = None  # not one JSON document (e.g. a JSON Lines export)
        return resp

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


def mint(tenant: str = "acme", user: str = "alice", roles: list[str] | None = None, **kw: Any) -> str:
    from chalicelib.adapters.jwt_tokens import HS256TokenVerifier

    return HS256TokenVerifier(DEV_SECRET).mint(tenant=tenant, user=user,
                                               roles=roles if roles is not None else ["admin"], **kw)


@pytest.fixture
def admin_token() -> str:
    return mint("acme", "alice", ["admin"])


@pytest.fixture
def member_token() -> str:
    return mint("acme", "bob", [])


@pytest.fixture
def other_tenant_admin() -> str:
    return mint("globex", "mallory", ["admin"])


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real local stack (`make run`) on free ports, shared by the e2e and browser tests; on
    teardown it is stopped like Ctrl-C and no process it started may be left running."""
    from pathlib import Path

    from tests.e2e.stack import start_stack

    stack = start_stack(Path(tmp_path_factory.mktemp("stack")))
    yield stack
    leftovers = stack.stop()
    assert not leftovers, f"processes left running after the stack stopped: {leftovers}"
