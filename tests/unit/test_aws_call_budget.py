"""AWS round trips per API request, counted with botocore's `before-call` hook under moto.

Dispatch must stay within a few calls (one settings read and one judge catalog read when their caches
are cold, one DynamoDB transaction, one SQS send) and reading a run within one. A change that adds a
call fails here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.test_eval_dispatch import FakeDaemons, configure_vendors, install_daemons, seed_session
from tests.conftest import GuardedClient, mint

DISPATCH_BUDGET = 4
DISPATCH_WARM_BUDGET = 2  # the settings and catalog caches are warm: neither is read
GET_RUN_BUDGET = 1


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.active = False

    def __call__(self, model: Any, **_: Any) -> None:
        if self.active:
            self.calls[f"{model.service_model.service_name}.{model.name}"] += 1

    def measure(self) -> CallCounter:
        self.calls.clear()
        self.active = True
        return self

    def __enter__(self) -> Counter[str]:
        return self.calls

    def __exit__(self, *_: Any) -> None:
        self.active = False

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _client(aws: Any, env: dict[str, str], cache_seconds: str) -> Iterator[tuple[GuardedClient, Any, CallCounter]]:
    from chalice.test import Client

    from app import app
    from chalicelib.config import runtime_config_from_env
    from chalicelib.wiring import Container, reset_container, use_container

    session, _ = aws
    counter = CallCounter()
    # Registered before the container builds its clients: each client copies the session's hooks.
    session.events.register("before-call", counter)
    container = Container(runtime_config_from_env({**env, "SETTINGS_CACHE_SECONDS": cache_seconds}), session=session)
    use_container(container)
    install_daemons(container, FakeDaemons())
    try:
        with Client(app, stage_name="dev") as inner:
            yield GuardedClient(inner), container, counter
    finally:
        session.events.unregister("before-call", counter)
        reset_container()


@pytest.fixture
def cold(aws: Any, runtime_env: dict[str, str]) -> Iterator[tuple[GuardedClient, Any, CallCounter]]:
    yield from _client(aws, runtime_env, "0")


@pytest.fixture
def warm(aws: Any, runtime_env: dict[str, str]) -> Iterator[tuple[GuardedClient, Any, CallCounter]]:
    yield from _client(aws, runtime_env, "300")


def _dispatch(client: GuardedClient, token: str, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else None
    resp = client.post("/sessions/sess-1/eval-runs", token=token, json_body={"questions": ["safety"]},
                       headers=headers)
    assert resp.status_code == 202, resp.json
    return resp


def test_dispatch_and_read_budget_with_a_cold_settings_cache(cold: tuple[GuardedClient, Any, CallCounter]) -> None:
    client, container, counter = cold
    configure_vendors(client, "anthropic")
    seed_session(container)
    token = mint("acme", "bob", [])
    _dispatch(client, token, key="creates-the-ledger")  # a tenant's very first dispatch, see below

    with counter.measure() as calls:
        resp = _dispatch(client, token, key="budget-1")
    assert counter.total <= DISPATCH_BUDGET, dict(calls)
    assert calls == Counter({"dynamodb.GetItem": 2, "dynamodb.TransactWriteItems": 1, "sqs.SendMessage": 1})

    with counter.measure() as calls:
        assert client.get(f"/eval-runs/{resp.json['eval_run_id']}", token=token).status_code == 200
    assert counter.total <= GET_RUN_BUDGET, dict(calls)


def test_dispatch_budget_with_a_warm_settings_cache(warm: tuple[GuardedClient, Any, CallCounter]) -> None:
    client, container, counter = warm
    configure_vendors(client, "anthropic")
    seed_session(container)
    token = mint("acme", "bob", [])
    _dispatch(client, token)  # fills the settings cache

    with counter.measure() as calls:
        _dispatch(client, token, key="budget-2")
    assert counter.total <= DISPATCH_WARM_BUDGET, dict(calls)
    assert "dynamodb.GetItem" not in calls, "settings or the catalog were read despite a warm cache"
    assert calls == Counter({"dynamodb.TransactWriteItems": 1, "sqs.SendMessage": 1})


def test_runners_dialog_reads_settings_at_most_once(cold: tuple[GuardedClient, Any, CallCounter]) -> None:
    client, _, counter = cold
    configure_vendors(client, "anthropic")
    with counter.measure() as calls:
        assert client.get("/eval/runners", token=mint("acme", "bob", [])).status_code == 200
    # The fake daemon directory makes no AWS call; the real one adds its own presence query.
    assert counter.total <= 1, dict(calls)



def test_a_tenants_first_dispatch_creates_its_spend_ledger_once(cold: tuple[GuardedClient, Any, CallCounter]) -> None:
    """The dispatch transaction finds no ledger, creates it (maps + sweep marker) and commits again."""
    client, container, counter = cold
    configure_vendors(client, "anthropic")
    seed_session(container)
    token = mint("acme", "bob", [])
    with counter.measure() as calls:
        _dispatch(client, token)
    assert calls == Counter({"dynamodb.GetItem": 2, "dynamodb.TransactWriteItems": 2, "dynamodb.UpdateItem": 1,
                             "dynamodb.PutItem": 1, "sqs.SendMessage": 1})
