"""AWS round-trip budgets of the admin settings requests and of a whole worker run (issue 7 item 2).

Runs the scenarios of `bench/roundtrips/bench_roundtrips.py` (moto, the real app, the anthropic SDK
against an in-process FakeVendor) and fails when a count grows past its budget. Dispatch and GET run
are budgeted in `test_aws_call_budget.py`. Counts are of AWS API calls, so they do not depend on timing,
except the worker's cancel polls (one per second of judging), which are therefore not asserted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from bench.roundtrips.bench_roundtrips import (
    DISPATCH_BUDGET,
    RUN_WRITES_BUDGET,
    Harness,
    Measured,
    WorkerRun,
    api_requests,
    harness,
    staggered_worst_case,
    worker_runs,
)
from chalicelib.services.judge_runner import RunnerTuning
from tests.conftest import register_secret

# What each request may cost; equal to today's counts, so any extra call fails here. A settings view
# (GET, and the answer to a PUT) lists the vendors' learned context limits: one Query of `CTXLIMIT#`.
API_BUDGETS: dict[str, Counter[str]] = {
    "PUT settings: first key (creates the secret)": Counter({
        "dynamodb.GetItem": 1, "dynamodb.TransactWriteItems": 1, "secretsmanager.DescribeSecret": 1,
        "secretsmanager.CreateSecret": 1, "dynamodb.Query": 1}),
    "GET settings (admin)": Counter({"dynamodb.GetItem": 1, "dynamodb.Query": 1}),
    "GET settings (admin), warm container": Counter({"dynamodb.GetItem": 1, "dynamodb.Query": 1}),
    "PUT settings: run timeout only, If-Match": Counter({"dynamodb.GetItem": 1, "dynamodb.TransactWriteItems": 1,
                                                         "dynamodb.Query": 1}),
    "PUT settings: stale If-Match → 412": Counter({"dynamodb.GetItem": 1}),
    "PUT settings: same key re-sent (not a rotation)": Counter({"dynamodb.GetItem": 1,
                                                               "secretsmanager.GetSecretValue": 1,
                                                               "dynamodb.Query": 1}),
    "test connection, cold container": Counter({"dynamodb.GetItem": 1, "secretsmanager.GetSecretValue": 1}),
    "test connection, warm container": Counter({"dynamodb.GetItem": 1}),
    # + the daemon directory's presence query
    "GET /eval/runners, cold settings cache": Counter({"dynamodb.GetItem": 1, "dynamodb.Query": 1}),
    "GET /eval/runners, warm": Counter({"dynamodb.Query": 1}),
}


@pytest.fixture(scope="module")
def api() -> dict[str, Measured]:
    with harness() as h:
        _register_keys(h)
        return api_requests(h)


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, WorkerRun]]:
    with harness() as h:
        _register_keys(h)
        yield worker_runs(h)


def _register_keys(h: Harness) -> None:
    for key in h.keys:
        register_secret(key)


@pytest.mark.parametrize("name", sorted(API_BUDGETS))
def test_request_stays_within_its_budget(api: dict[str, Measured], name: str) -> None:
    ops = api[name].ops()
    over = {op: n for op, n in ops.items() if n > API_BUDGETS[name].get(op, 0)}
    assert not over, f"{name}: {dict(ops)} exceeds {dict(API_BUDGETS[name])}"


def test_settings_reads_of_the_runner_side_are_cached(api: dict[str, Measured]) -> None:
    def settings_reads(name: str) -> int:
        return sum(1 for c in api[name].calls if c.target == "SETTINGS")

    assert settings_reads("GET /eval/runners, cold settings cache") == 1
    assert settings_reads("GET /eval/runners, warm") == 0
    assert settings_reads("dispatch, warm") == 0
    assert api["dispatch, cold settings cache"].total <= DISPATCH_BUDGET


def test_a_worker_run_reads_each_input_once(runs: dict[str, WorkerRun]) -> None:
    for name, run in runs.items():
        assert run.status == "succeeded" and run.questions == 13, name
        parts = run.breakdown()
        assert parts["run read (GetItem)"] == 1, (name, parts)
        assert parts["session metadata (GetItem)"] == 1, (name, parts)
        assert parts["session trace (S3 GetObject)"] == 1, (name, parts)
        assert parts["SessionEvalCompleted (EventBridge PutEvents)"] == 1, (name, parts)
    assert runs["cold"].breakdown()["settings read (DynamoDB GetItem)"] == 1
    assert runs["warm"].breakdown()["settings read (DynamoDB GetItem)"] == 0


def test_secrets_manager_is_read_once_per_key_version_per_container(runs: dict[str, WorkerRun]) -> None:
    secret_reads = {name: run.breakdown()["secret (GetSecretValue)"] for name, run in runs.items()}
    assert secret_reads == {"cold": 1, "warm": 0, "rotated": 1}


def test_progress_writes_are_batched(runs: dict[str, WorkerRun]) -> None:
    for name, run in runs.items():
        assert run.writes <= RUN_WRITES_BUDGET, (name, run.breakdown())


def test_progress_writes_stay_bounded_when_judges_finish_one_by_one() -> None:
    # Every judge finishes after the flush interval has passed: the most writes coalescing allows,
    # start + one per finished judge but the last (it rides on the finish write) + finish.
    with harness(tuning=RunnerTuning(progress_flush_seconds=0.02)) as h:
        _register_keys(h)
        run = staggered_worst_case(h)
    assert run.status == "succeeded" and run.questions == 13
    assert run.writes <= 2 + 13 <= RUN_WRITES_BUDGET, run.breakdown()
