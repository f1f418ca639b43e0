"""The run lifecycle's finalizer: every terminal path of a run reaches it exactly once.

A recording participant is plugged into the container's `RunLifecycle` (the extension point other
features use) and counts `after_finalized` per run; each test drives one terminal path through the
real API, worker or daemon protocol (moto, the in-process fake vendor) and asserts the count, the
stored `finalized_at` and that the run's slot left the spend ledger's open-run map.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.services.eval_jobs import EvalJobService
from chalicelib.services.run_lifecycle import Contribution, Finalization, RunLifecycle
from devstack.fake_vendor import FakeVendor
from tests.api.daemon_kit import FrozenClock, claim, event, register, result_body, upload_session, verdict
from tests.api.daemon_kit import dispatch as dispatch_daemon
from tests.api.worker_kit import (
    ALL_QUESTIONS,
    TEST_TUNING,
    configure,
    dispatch,
    job_event,
    judge_requests,
    queued_event,
    trace,
    upload,
    view,
    work,
)
from tests.conftest import mint


class Recorder:
    """A lifecycle participant that only counts: what history/automation/evidence plug in the same way."""

    name = "recorder"

    def __init__(self) -> None:
        self.finalized: Counter[str] = Counter()
        self.statuses: dict[str, str] = {}
        self.usage: dict[str, int] = {}

    def contribute(self, final: Finalization, *, attempt: int, refused: Mapping[str, Any] | None) -> Contribution:
        return Contribution()

    def after_finalized(self, final: Finalization) -> None:
        self.finalized[final.run.eval_run_id] += 1
        self.statuses[final.run.eval_run_id] = final.run.status
        self.usage[final.run.eval_run_id] = final.usage.input_tokens + final.usage.cache_read_input_tokens \
            + final.usage.cache_creation_input_tokens


class ShiftedClock:
    def __init__(self, shift_seconds: float) -> None:
        self._shift = timedelta(seconds=shift_seconds)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._shift

    def monotonic(self) -> float:
        return time.monotonic()


def record(container: Any) -> Recorder:
    recorder = Recorder()
    container.run_lifecycle.add_participant(recorder)
    return recorder


def time_travel(container: Any, seconds: float) -> Recorder:
    """Rebuild the lifecycle-dependent services on a clock `seconds` ahead; returns a fresh recorder."""
    container.clock = ShiftedClock(seconds)
    for cached in ("eval_runs", "run_lifecycle", "spend", "daemon_service", "eval_jobs"):
        container.__dict__.pop(cached, None)
    return record(container)


def assert_finalized_once(container: Any, recorder: Recorder, run_id: str, status: str) -> None:
    assert recorder.finalized[run_id] == 1, dict(recorder.finalized)
    assert recorder.statuses[run_id] == status
    stored = container.run_store.require("acme", run_id)
    assert stored.status == status and stored.finalized_at is not None
    assert run_id not in container.budget_ledger.open_runs("acme")


# ------------------------------------------------------------------------------------ server worker


def test_worker_success_is_finalized_once_and_a_redelivery_does_not_repeat_it(
        client: Any, worker: Any, fake: FakeVendor) -> None:
    recorder = record(worker)
    configure(client, fake, "anthropic")
    upload(client, trace())
    run_id = dispatch(client)
    assert run_id in worker.budget_ledger.open_runs("acme")  # admitted: holds a slot while it runs
    work(queued_event(worker))
    assert_finalized_once(worker, recorder, run_id, "succeeded")
    work(job_event(run_id))  # SQS delivered the message again
    assert recorder.finalized[run_id] == 1


def test_worker_deadline_is_finalized_once(client: Any, worker: Any, fake: FakeVendor) -> None:
    recorder = record(worker)
    configure(client, fake, "anthropic")
    upload(client, trace())
    fake.script("direct_approach", hang=True, hang_seconds=30)
    run_id = dispatch(client)
    work(queued_event(worker), remaining_ms=4000)
    assert_finalized_once(worker, recorder, run_id, "timed_out")


def test_worker_failure_before_judging_is_finalized_once(client: Any, worker: Any, fake: FakeVendor) -> None:
    recorder = record(worker)
    configure(client, fake, "anthropic")
    upload(client, [{"kind": "user_message", "timestamp": "2025-06-01T10:00:00.000Z", "text": "hi"}])
    run_id = dispatch(client)
    # The session is replaced by an empty one after dispatch: the worker fails the run before judging.
    worker.dynamodb.delete_item(TableName=worker.config.table_name,
                                Key={"pk": {"S": "TENANT#acme"}, "sk": {"S": "SESSION#sess-worker-1"}})
    work(queued_event(worker))
    assert view(client, run_id)["status"] == "failed"
    assert_finalized_once(worker, recorder, run_id, "failed")


def test_worker_crash_is_finalized_once(client: Any, worker: Any, fake: FakeVendor) -> None:
    recorder = record(worker)
    configure(client, fake, "anthropic")
    upload(client, trace())
    run_id = dispatch(client)

    def broken_model_factory(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug in building the judge model")

    worker.__dict__["eval_jobs"] = EvalJobService(
        runs=worker.run_store, settings=worker.admin_settings, sessions=worker.sessions,
        questions=worker.catalog, build_judge_model=broken_model_factory, events=None, clock=worker.clock,
        grace_seconds=60, lifecycle=worker.run_lifecycle, tuning=TEST_TUNING)
    work(queued_event(worker))
    assert view(client, run_id)["error"]["code"] == "internal_error"
    assert_finalized_once(worker, recorder, run_id, "failed")


def test_a_cancel_the_worker_notices_is_finalized_once_by_the_worker_with_its_last_usage(
        client: Any, worker: Any, fake: FakeVendor) -> None:
    recorder = record(worker)
    configure(client, fake, "openai")
    upload(client, trace())
    fake.script("over_engineering", hang=True, hang_seconds=30)
    run_id = dispatch(client)
    event_ = queued_event(worker)
    thread = threading.Thread(target=lambda: work(event_), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while len(judge_requests(fake)) < ALL_QUESTIONS - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=mint("acme", "bob", []))
    assert resp.status_code == 200 and resp.json["status"] == "cancelled"
    # The cancel request leaves a running server run to its worker: the judges may still bill.
    assert recorder.finalized[run_id] == 0
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert_finalized_once(worker, recorder, run_id, "cancelled")
    # Everything the 12 answered judges billed is on the run, including what arrived after the cancel.
    stored = worker.run_store.require("acme", run_id)
    assert recorder.usage[run_id] == stored.usage.input_tokens + stored.usage.cache_read_input_tokens \
        + stored.usage.cache_creation_input_tokens > 0


# ------------------------------------------------------------------------------------ dispatch side


def test_cancel_of_a_queued_run_is_finalized_once_and_the_late_worker_adds_nothing(
        client: Any, worker: Any, fake: FakeVendor) -> None:
    recorder = record(worker)
    configure(client, fake, "anthropic")
    upload(client, trace())
    run_id = dispatch(client)
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=mint("acme", "bob", []))
    assert resp.status_code == 200
    assert_finalized_once(worker, recorder, run_id, "cancelled")
    work(queued_event(worker))
    assert recorder.finalized[run_id] == 1
    assert judge_requests(fake) == []


def test_a_failed_hand_off_is_finalized_once_and_its_retry_is_admitted_again(
        client: Any, worker: Any, fake: FakeVendor) -> None:
    recorder = record(worker)
    configure(client, fake, "anthropic")
    upload(client, trace())

    class DownQueue:
        def send(self, message: Any) -> str:
            raise ConnectionError("sqs down")

    real_queue = worker.job_queue
    worker.__dict__["job_queue"] = DownQueue()
    worker.__dict__.pop("eval_runs", None)
    headers = {"Idempotency-Key": "handoff-1"}
    first = client.post("/sessions/sess-worker-1/eval-runs", token=mint("acme", "bob", []), json_body={},
                        headers=headers)
    assert first.status_code == 503 and first.json["error"]["code"] == "dispatch_failed"
    run_id = first.json["error"]["details"]["eval_run_id"]
    assert_finalized_once(worker, recorder, run_id, "failed")

    worker.__dict__["job_queue"] = real_queue
    worker.__dict__.pop("eval_runs", None)
    again = client.post("/sessions/sess-worker-1/eval-runs", token=mint("acme", "bob", []), json_body={},
                        headers=headers)
    assert again.status_code == 202 and again.json["eval_run_id"] == run_id
    assert run_id in worker.budget_ledger.open_runs("acme")  # the retry is a new, admitted attempt
    work(queued_event(worker))
    assert recorder.finalized[run_id] == 2  # once per attempt
    assert run_id not in worker.budget_ledger.open_runs("acme")


def test_a_rerun_is_a_new_attempt_finalized_on_its_own(client: Any, worker: Any, fake: FakeVendor) -> None:
    recorder = record(worker)
    configure(client, fake, "anthropic")
    upload(client, trace())
    fake.script("tests_written", times=2, malformed=True)  # the answer and its repair: question failed
    run_id = dispatch(client)
    work(queued_event(worker))
    assert recorder.finalized[run_id] == 1
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=mint("acme", "bob", []))
    assert resp.status_code == 202, resp.json
    assert worker.run_store.require("acme", run_id).finalized_at is None
    assert run_id in worker.budget_ledger.open_runs("acme")
    work(queued_event(worker))
    assert recorder.finalized[run_id] == 2
    assert run_id not in worker.budget_ledger.open_runs("acme")


def test_an_overdue_server_run_is_finalized_once_by_its_reader(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic", timeout=60)
    upload(client, trace())
    run_id = dispatch(client)
    recorder = time_travel(worker, 60 + 60 + 61)  # past the deadline, the worker's grace and skew
    for _ in range(3):
        assert view(client, run_id)["status"] == "timed_out"
    client.get("/sessions/sess-worker-1/eval-runs", token=mint("acme", "bob", []))
    worker.run_lifecycle.sweep()
    assert_finalized_once(worker, recorder, run_id, "timed_out")


def test_the_sweep_finalizes_an_overdue_run_nobody_reads(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic", timeout=60)
    upload(client, trace())
    overdue = dispatch(client)
    recorder = time_travel(worker, 60 + 60 + 61)
    fresh = dispatch(client)  # dispatched "now": not overdue, left alone
    report = worker.run_lifecycle.sweep()
    assert report.timed_out == 1 and report.errors == 0
    assert_finalized_once(worker, recorder, overdue, "timed_out")
    assert recorder.finalized[fresh] == 0 and fresh in worker.budget_ledger.open_runs("acme")
    worker.run_lifecycle.sweep()
    assert recorder.finalized[overdue] == 1


def test_the_sweep_finalizes_a_terminal_run_whose_finalization_was_interrupted(
        client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic", timeout=60)
    upload(client, trace())
    run_id = dispatch(client)
    # The run ended but the process died before the finalization transaction (no marker, slot held).
    worker.run_store.finish("acme", run_id, status="failed", now="2026-01-01T00:00:00.000Z",
                            usage=worker.run_store.require("acme", run_id).usage, from_statuses=("queued",))
    assert run_id in worker.budget_ledger.open_runs("acme")
    recorder = time_travel(worker, 60 + 60 + 61)
    report = worker.run_lifecycle.sweep()
    assert report.finalized == 1
    assert_finalized_once(worker, recorder, run_id, "failed")


def test_racing_finalizers_settle_once(client: Any, worker: Any, fake: FakeVendor) -> None:
    """Each racer holds the same unfinalized snapshot (as a worker, a reader and the sweep would):
    the conditional marker lets exactly one commit. (Interleaved in order: in-process moto does not
    serialise concurrent transactions the way DynamoDB does; bench/spend races them on the stack.)"""
    recorder = record(worker)
    configure(client, fake, "anthropic")
    upload(client, trace())
    run_id = dispatch(client)
    ended = worker.run_store.finish("acme", run_id, status="failed", now="2026-01-01T00:00:00.000Z",
                                    usage=worker.run_store.require("acme", run_id).usage, from_statuses=("queued",))
    lifecycle: RunLifecycle = worker.run_lifecycle
    results = [lifecycle.finalize(ended) for _ in range(3)]
    assert all(r.finalized_at == results[0].finalized_at for r in results)
    assert_finalized_once(worker, recorder, run_id, "failed")


def test_the_maintenance_schedule_runs_the_sweep(client: Any, worker: Any, fake: FakeVendor) -> None:
    from app import app

    configure(client, fake, "anthropic", timeout=60)
    upload(client, trace())
    run_id = dispatch(client)
    schedules = {e.name: e for e in app.event_sources if type(e).__name__ == "ScheduledEventConfig"}
    assert "run_maintenance" in schedules  # a Lambda of its own, on an EventBridge schedule
    recorder = time_travel(worker, 60 + 60 + 61)
    result = client.lambda_.invoke("run_maintenance", client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))
    assert result.payload["timed_out"] == 1
    assert_finalized_once(worker, recorder, run_id, "timed_out")


# ------------------------------------------------------------------------------------ daemon runner


@pytest.fixture
def frozen(container: Any) -> FrozenClock:
    clock = FrozenClock()
    container.clock = clock
    return clock


def _claimed_daemon_run(client: Any, alice: str) -> tuple[str, str]:
    daemon_id = register(client, alice)
    upload_session(client, alice)
    run_id = dispatch_daemon(client, alice, questions=["sensitive_files", "destructive_commands"])["eval_run_id"]
    assert claim(client, alice, daemon_id).status_code == 200
    return daemon_id, run_id


def test_a_daemon_result_is_finalized_once(client: Any, container: Any, frozen: FrozenClock) -> None:
    recorder = record(container)
    alice = mint("acme", "alice", [])
    _, run_id = _claimed_daemon_run(client, alice)
    body = result_body(run_id, [verdict("sensitive_files", 5), verdict("destructive_commands", 4)],
                       ["sensitive_files", "destructive_commands"])
    assert client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body).status_code == 200
    assert client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body).status_code == 409
    assert_finalized_once(container, recorder, run_id, "succeeded")


def test_a_daemon_failure_event_is_finalized_once(client: Any, container: Any, frozen: FrozenClock) -> None:
    recorder = record(container)
    alice = mint("acme", "alice", [])
    _, run_id = _claimed_daemon_run(client, alice)
    resp = client.post(f"/eval-runs/{run_id}/events", token=alice,
                       json_body=event(run_id, "eval_failed", reason="claude CLI crashed"))
    assert resp.status_code == 200, resp.json
    assert_finalized_once(container, recorder, run_id, "failed")


def test_a_daemon_deadline_is_finalized_once_whoever_notices(client: Any, container: Any,
                                                              frozen: FrozenClock) -> None:
    recorder = record(container)
    alice = mint("acme", "alice", [])
    daemon_id, run_id = _claimed_daemon_run(client, alice)
    frozen.advance(301)
    assert client.get(f"/eval-runs/{run_id}", token=alice).json["status"] == "timed_out"
    late = client.post(f"/eval-runs/{run_id}/events", token=alice,
                       json_body=event(run_id, "eval_failed", reason="too late"))
    assert late.status_code == 409
    client.get("/eval/runners", token=alice)  # the daemon directory's own lazy sweep
    claim(client, alice, daemon_id)
    container.run_lifecycle.sweep()
    assert_finalized_once(container, recorder, run_id, "timed_out")


def test_cancelling_a_daemon_run_is_finalized_once(client: Any, container: Any, frozen: FrozenClock) -> None:
    recorder = record(container)
    alice = mint("acme", "alice", [])
    _, run_id = _claimed_daemon_run(client, alice)
    assert client.post(f"/eval-runs/{run_id}/cancel", token=alice).status_code == 200
    assert_finalized_once(container, recorder, run_id, "cancelled")
    assert client.post(f"/eval-runs/{run_id}/events", token=alice,
                       json_body=event(run_id, "eval_failed", reason="x")).status_code == 409
    assert recorder.finalized[run_id] == 1
