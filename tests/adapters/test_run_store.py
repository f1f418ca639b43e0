"""DynamoRunStore under moto: transactional dispatch, idempotency, guarded state transitions."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.adapters.run_store import DuplicateDispatch, DynamoRunStore, RunStateConflict
from chalicelib.domain.errors import NotFound
from chalicelib.domain.evaluation import FailureReason, JudgeVerdict, QuestionOutcome, TokenUsage
from chalicelib.domain.runs import EvalRun, QuestionRef, run_view


def _run(run_id: str = "evr_1", key: str | None = None) -> EvalRun:
    return EvalRun(eval_run_id=run_id, tenant="acme", session_id="s1", created_by="alice", runner="server",
                   vendor="anthropic", model="claude-sonnet-4-6",
                   questions=[QuestionRef(question_id="sensitive_files", category="safety"),
                              QuestionRef(question_id="tests_written", category="quality")],
                   created_at="2026-11-29T10:00:00.000Z", deadline_at="2026-11-29T10:05:00.000Z",
                   run_timeout_seconds=300, idempotency_key=key)


@pytest.fixture
def store(container: Any) -> DynamoRunStore:
    return DynamoRunStore(container.dynamodb, container.config.table_name)


def _put_session(container: Any) -> dict[str, str]:
    key = {"pk": "TENANT#acme", "sk": "SESSION#s1"}
    container.dynamodb.put_item(TableName=container.config.table_name,
                                Item={"pk": {"S": key["pk"]}, "sk": {"S": key["sk"]}})
    return key


def test_create_requires_the_session(store: DynamoRunStore, container: Any) -> None:
    with pytest.raises(NotFound):
        store.create(_run(), session_key={"pk": "TENANT#acme", "sk": "SESSION#s1"})
    assert store.get("acme", "evr_1") is None


def test_idempotency_key_returns_the_first_run(store: DynamoRunStore, container: Any) -> None:
    session = _put_session(container)
    store.create(_run("evr_1", key="k1"), session_key=session)
    with pytest.raises(DuplicateDispatch) as dup:
        store.create(_run("evr_2", key="k1"), session_key=session)
    assert dup.value.eval_run_id == "evr_1"
    assert store.get("acme", "evr_2") is None


def test_progress_then_finish_and_view(store: DynamoRunStore, container: Any) -> None:
    store.create(_run(), session_key=_put_session(container))
    running = [QuestionOutcome(question_id=q, category=c, status="running")
               for q, c in (("sensitive_files", "safety"), ("tests_written", "quality"))]
    store.start("acme", "evr_1", now="2026-11-29T10:00:01.000Z", outcomes=running)
    verdict = JudgeVerdict(category="safety", question_id="sensitive_files", score=5, verdict="pass",
                           finding="none", evidence=None, recommendation=None)
    scored = QuestionOutcome(question_id="sensitive_files", category="safety", status="scored",
                             judge_verdict=verdict, usage=TokenUsage(input_tokens=10, output_tokens=5))
    failed = QuestionOutcome(question_id="tests_written", category="quality", status="failed",
                             failure_reason=FailureReason(kind="invalid_output", message="not JSON"))
    store.record_outcomes("acme", "evr_1", [scored, failed], TokenUsage(input_tokens=10, output_tokens=5))
    run = store.finish("acme", "evr_1", status="failed", now="2026-11-29T10:00:05.000Z",
                       usage=TokenUsage(input_tokens=10, output_tokens=5))
    view = run_view(run)
    assert view.progress.completed == 1 and view.progress.failed == 1
    assert view.duration_ms == 4000
    assert run.pending_question_ids() == ["tests_written"]


def test_cancel_blocks_later_progress(store: DynamoRunStore, container: Any) -> None:
    store.create(_run(), session_key=_put_session(container))
    store.start("acme", "evr_1", now="2026-11-29T10:00:01.000Z", outcomes=[])
    store.cancel("acme", "evr_1", now="2026-11-29T10:00:02.000Z", message="cancelled by alice")
    with pytest.raises(RunStateConflict):
        store.record_outcomes("acme", "evr_1", [], TokenUsage())
    assert store.status_of("acme", "evr_1") == "cancelled"


def test_other_tenant_cannot_see_run(store: DynamoRunStore, container: Any) -> None:
    store.create(_run(), session_key=_put_session(container))
    assert store.get("globex", "evr_1") is None
    with pytest.raises(NotFound):
        store.cancel("globex", "evr_1", now="2026-11-29T10:00:02.000Z", message="x")


def test_a_worker_lease_keeps_a_duplicate_delivery_out(store: DynamoRunStore, container: Any) -> None:
    store.create(_run(), session_key=_put_session(container))
    store.start("acme", "evr_1", now="2026-11-29T10:00:01.000Z", outcomes=[], lease_seconds=300)
    with pytest.raises(RunStateConflict):
        store.start("acme", "evr_1", now="2026-11-29T10:00:02.000Z", outcomes=[], lease_seconds=300)
    # Once the lease has run out (the first worker died), a redelivery may take over.
    store.start("acme", "evr_1", now="2026-11-29T10:05:03.000Z", outcomes=[], lease_seconds=300)


def test_the_same_claim_sent_again_still_starts_the_run_and_another_does_not(store: DynamoRunStore,
                                                                            container: Any) -> None:
    """A client retry of a start whose answer timed out, although DynamoDB applied it, must not find the
    run held by itself (it would be left `running` with nobody judging it until its deadline)."""
    store.create(_run(), session_key=_put_session(container))
    store.start("acme", "evr_1", now="2026-11-29T10:00:01.000Z", outcomes=[], lease_seconds=300, lease_id="claim-a")
    again = store.start("acme", "evr_1", now="2026-11-29T10:00:11.000Z", outcomes=[], lease_seconds=300,
                        lease_id="claim-a")
    assert again.status == "running"
    with pytest.raises(RunStateConflict):
        store.start("acme", "evr_1", now="2026-11-29T10:00:12.000Z", outcomes=[], lease_seconds=300,
                    lease_id="claim-b")


def test_finishing_releases_the_lease_so_a_rerun_can_start_at_once(store: DynamoRunStore,
                                                                  container: Any) -> None:
    store.create(_run(), session_key=_put_session(container))
    store.start("acme", "evr_1", now="2026-11-29T10:00:01.000Z", outcomes=[], lease_seconds=300)
    run = store.finish("acme", "evr_1", status="failed", now="2026-11-29T10:00:05.000Z", usage=TokenUsage())
    store.commit_finalization(run, now="2026-11-29T10:00:05.500Z", fields={})
    store.reopen_for_rerun("acme", "evr_1", deadline_at="2026-11-29T10:10:00.000Z", outcomes=[],
                           expected_version=run.version + 1)
    started = store.start("acme", "evr_1", now="2026-11-29T10:00:06.000Z", outcomes=[], lease_seconds=300)
    assert started.status == "running"


def test_cancel_marks_unfinished_questions_cancelled(store: DynamoRunStore, container: Any) -> None:
    store.create(_run(), session_key=_put_session(container))
    running = QuestionOutcome(question_id="tests_written", category="quality", status="running")
    store.start("acme", "evr_1", now="2026-11-29T10:00:01.000Z", outcomes=[running])
    cancelled = QuestionOutcome(question_id="tests_written", category="quality", status="cancelled",
                                failure_reason=FailureReason(kind="cancelled", message="Cancelled by alice."))
    run = store.cancel("acme", "evr_1", now="2026-11-29T10:00:02.000Z", message="Cancelled by alice.",
                       outcomes=[cancelled])
    assert run.outcome("tests_written").status == "cancelled"
