"""AWS round trips per API request, counted with botocore's `before-call` hook under moto.

Dispatch must stay within a few calls (the settings, judge catalog, spend limits and price overrides
when their caches are cold — one GetItem each —, one DynamoDB transaction, one SQS send) and reading
a run within one. Spend governance adds no call to a warm dispatch that carries its estimate's quote
(the console's path), and exactly one write item to its transaction (the spend ledger's admission).
History adds one read to every dispatch: the session record, whose repository and retention end the
run copies (bench/history measures what it costs). A change that adds a call fails here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.dispatch_kit import FakeDaemons, configure_vendors, install_daemons, seed_session
from tests.conftest import GuardedClient, mint

DISPATCH_BUDGET = 7
DISPATCH_WARM_BUDGET = 3  # settings, catalog, limits and prices cached: none is read; the session record is
GET_RUN_BUDGET = 1


class CallCounter:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.transactions: list[list[dict[str, Any]]] = []
        self.active = False

    def __call__(self, model: Any, params: Any = None, **_: Any) -> None:
        if self.active:
            self.calls[f"{model.service_model.service_name}.{model.name}"] += 1
            if model.name == "TransactWriteItems" and isinstance(params, dict):
                self.transactions.append(list(params.get("TransactItems", [])))

    def measure(self) -> CallCounter:
        self.calls.clear()
        self.transactions.clear()
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
    session.events.register("before-parameter-build", counter)
    container = Container(runtime_config_from_env({**env, "SETTINGS_CACHE_SECONDS": cache_seconds}), session=session)
    use_container(container)
    install_daemons(container, FakeDaemons())
    try:
        with Client(app, stage_name="dev") as inner:
            yield GuardedClient(inner), container, counter
    finally:
        session.events.unregister("before-parameter-build", counter)
        reset_container()


@pytest.fixture
def cold(aws: Any, runtime_env: dict[str, str]) -> Iterator[tuple[GuardedClient, Any, CallCounter]]:
    yield from _client(aws, runtime_env, "0")


@pytest.fixture
def warm(aws: Any, runtime_env: dict[str, str]) -> Iterator[tuple[GuardedClient, Any, CallCounter]]:
    yield from _client(aws, runtime_env, "300")


def _quote(client: GuardedClient, token: str) -> str:
    estimate = client.post("/sessions/sess-1/eval-runs/estimate", token=token, json_body={"questions": ["safety"]})
    assert estimate.status_code == 200, estimate.json
    return str(estimate.json["quote"])


def _dispatch(client: GuardedClient, token: str, key: str | None = None, quote: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else None
    body: dict[str, Any] = {"questions": ["safety"]}
    if quote is not None:
        body["quote"] = quote
    resp = client.post("/sessions/sess-1/eval-runs", token=token, json_body=body, headers=headers)
    assert resp.status_code == 202, resp.json
    return resp


def _write_items(transaction: list[dict[str, Any]]) -> list[str]:
    """`<operation>:<sk prefix>` of each write item of a TransactWriteItems call."""
    out = []
    for item in transaction:
        for op, body in item.items():
            if op != "ConditionCheck":
                sk = body["Key"]["sk"]["S"] if "Key" in body else body["Item"]["sk"]["S"]
                out.append(f"{op}:{sk.split('#')[0]}")
    return out


def test_dispatch_and_read_budget_with_a_cold_settings_cache(cold: tuple[GuardedClient, Any, CallCounter]) -> None:
    client, container, counter = cold
    configure_vendors(client, "anthropic")
    seed_session(container)
    token = mint("acme", "bob", [])
    _dispatch(client, token, key="creates-the-ledger")  # a tenant's very first dispatch, see below
    quote = _quote(client, token)

    with counter.measure() as calls:
        resp = _dispatch(client, token, key="budget-1", quote=quote)
    assert counter.total <= DISPATCH_BUDGET, dict(calls)
    # settings, catalog, spend limits, price overrides (cold caches), the session record, then one
    # transaction and one send
    assert calls == Counter({"dynamodb.GetItem": 5, "dynamodb.TransactWriteItems": 1, "sqs.SendMessage": 1})

    with counter.measure() as calls:
        assert client.get(f"/eval-runs/{resp.json['eval_run_id']}", token=token).status_code == 200
    assert counter.total <= GET_RUN_BUDGET, dict(calls)


def test_dispatch_budget_with_a_warm_settings_cache(warm: tuple[GuardedClient, Any, CallCounter]) -> None:
    client, container, counter = warm
    configure_vendors(client, "anthropic")
    seed_session(container)
    token = mint("acme", "bob", [])
    _dispatch(client, token)  # fills the settings cache
    quote = _quote(client, token)

    with counter.measure() as calls:
        _dispatch(client, token, key="budget-2", quote=quote)
    assert counter.total <= DISPATCH_WARM_BUDGET, dict(calls)
    # One GetItem: the session record (history); settings, catalog, limits and prices come from the caches.
    assert calls == Counter({"dynamodb.GetItem": 1, "dynamodb.TransactWriteItems": 1, "sqs.SendMessage": 1})
    # The transaction's write items: the run, its idempotency record, and the ONE the spend ledger adds
    # (condition checks, the session's and the quote's, are not writes).
    [transaction] = counter.transactions
    assert sorted(_write_items(transaction)) == ["Put:IDEMPOTENCY", "Put:RUN", "Update:BUDGET"]


def test_a_dispatch_without_a_quote_estimates_for_itself(warm: tuple[GuardedClient, Any, CallCounter]) -> None:
    """An API client that skips the estimate pays for one: the session record and its trace are read."""
    client, container, counter = warm
    configure_vendors(client, "anthropic")
    seed_session(container)
    token = mint("acme", "bob", [])
    _dispatch(client, token)  # warms the caches and creates the ledger
    with counter.measure() as calls:
        _dispatch(client, token, key="no-quote")
    # The session record twice: history's facts, then the estimate's own read with the trace.
    assert calls == Counter({"dynamodb.GetItem": 2, "s3.GetObject": 1, "dynamodb.TransactWriteItems": 1,
                             "sqs.SendMessage": 1})


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
    quote = _quote(client, token)
    with counter.measure() as calls:
        _dispatch(client, token, quote=quote)
    # settings, catalog, limits, prices, the session record; the refused transaction; limits and prices
    # read fresh for the new ledger; the ledger's maps and its sweep marker; the transaction again; the send.
    assert calls == Counter({"dynamodb.GetItem": 7, "dynamodb.TransactWriteItems": 2, "dynamodb.UpdateItem": 1,
                             "dynamodb.PutItem": 1, "sqs.SendMessage": 1})
