"""Daemon progress and results: the nine events and the SessionEvalCompleted post, applied to the run record.

Both runners write the same record through `DynamoRunStore`: a daemon's events update the same
per-question `QuestionOutcome`s the server worker writes, and its result is validated with the
same models, re-derived from the verdict scores with `recompute` and stored exactly like a server
result. Only the user owning the daemon that holds the job may post (other tenants: 404 because
the run is not found; same tenant: 403); anything after a terminal state is a 409, and anything
after the run's deadline turns the run `timed_out` (then 409).

Inconsistent aggregates are corrected, not rejected: the verdict scores are the data and every
other number is derived from them by the shared aggregation code, exactly as the reference
overrides a judge's own verdict string. Rejecting would throw away a whole evaluation (13 judge
calls on the user's own subscription) over a derivable field. What was corrected is returned in
`corrections` and logged, so a drifting daemon is visible.

Every terminal transition here (a result, `eval_failed`, a passed deadline) is finalized through
the run lifecycle (`services/run_lifecycle.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from chalicelib.adapters.daemon_store import DynamoDaemonStore
from chalicelib.adapters.run_store import DynamoRunStore, RunStateConflict
from chalicelib.domain.clock import Clock, iso, parse_iso
from chalicelib.domain.daemons import (
    JOB_RETENTION_SECONDS,
    EventAccepted,
    JobRecord,
    ResultAccepted,
    failure_kind_for_reason,
)
from chalicelib.domain.errors import Conflict, DomainError, Forbidden, InvalidRequest, NotFound
from chalicelib.domain.evaluation import (
    EvalFailed,
    EvalFinished,
    EvalProgressEvent,
    EvalQuestionCompleted,
    EvalQuestionFailed,
    EvalQuestionStarted,
    EvalRetrospectiveCompleted,
    EvalRetrospectiveFailed,
    EvalRetrospectiveStarted,
    EvalStarted,
    FailureReason,
    JudgeVerdict,
    QuestionOutcome,
    SessionEvalCompleted,
    TokenUsage,
    parse_progress_event,
)
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalRun, RunError
from chalicelib.judges.aggregation import aggregate, recompute
from chalicelib.judges.catalog import Question
from chalicelib.judges.verdicts import sanitize_reason
from chalicelib.observability import emit_run_status, log_judge_progress, logger
from chalicelib.services.run_lifecycle import RunLifecycle

DEADLINE_ERROR_CODE = "deadline_exceeded"
_REASON_LIMIT = 1000


def _usage_total(outcomes: Mapping[str, QuestionOutcome]) -> TokenUsage:
    total = TokenUsage()
    for o in outcomes.values():
        total = total + o.usage
    return total


def _failed(o: QuestionOutcome, status: str, kind: str, message: str) -> QuestionOutcome:
    return QuestionOutcome(question_id=o.question_id, category=o.category, status=status,
                           failure_reason=FailureReason(kind=kind, message=message),
                           usage=o.usage, usage_reported=o.usage_reported, latency_ms=o.latency_ms, attempts=o.attempts)


def close_open_questions(run: EvalRun, status: str, kind: str, message: str) -> list[QuestionOutcome]:
    """Every question still queued or running, ended with `status` (timed_out / failed / cancelled)."""
    closed = []
    for ref in run.questions:
        o = run.outcome(ref.question_id)
        if not o.is_terminal:
            closed.append(_failed(o, status, kind, message))
    return closed


def time_out_run(runs: DynamoRunStore, lifecycle: RunLifecycle, run: EvalRun, *, now: datetime,
                 message: str) -> EvalRun:
    """End a daemon run whose deadline passed: run `timed_out`, open questions `timed_out`, finalized.

    A conditional write, so a result racing the deadline either lands first (and this is a no-op)
    or loses with a 409.
    """
    outcomes = close_open_questions(run, "timed_out", "timed_out", message)
    merged = {**run.outcomes, **{o.question_id: o for o in outcomes}}
    try:
        ended = runs.finish(run.tenant, run.eval_run_id, status="timed_out", now=iso(now),
                            usage=_usage_total(merged), outcomes=outcomes,
                            error=RunError(code=DEADLINE_ERROR_CODE, message=message,
                                           details={"deadline_at": run.deadline_at}),
                            from_statuses=("queued", "running"))
    except (RunStateConflict, NotFound):
        current = runs.get(run.tenant, run.eval_run_id) or run
        if lifecycle.finalization_due(current, now):
            return lifecycle.finalize_quietly(current)
        return current
    logger.info("daemon run timed out", extra={"eval_run_id": run.eval_run_id})
    emit_run_status("timed_out", runner=run.runner, vendor=run.vendor)
    return lifecycle.finalize_quietly(ended)


def is_overdue(run: EvalRun, now: datetime) -> bool:
    return not run.is_terminal and now >= parse_iso(run.deadline_at)


# (tenant, session id, chain) → entries of the eval context: `SessionService.trace_length`.
TraceLength = Callable[[str, str, bool], int]


class DaemonRunReporter:
    """Applies a daemon's events and result to its run."""

    def __init__(self, *, store: DynamoDaemonStore, runs: DynamoRunStore, clock: Clock,
                 lifecycle: RunLifecycle, trace_length: TraceLength | None = None) -> None:
        self._store = store
        self._runs = runs
        self._lifecycle = lifecycle
        self._clock = clock
        self._trace_length = trace_length

    @property
    def lifecycle(self) -> RunLifecycle:
        return self._lifecycle

    # -- authorization and state ---------------------------------------------------------------
    def _load(self, principal: Principal, run_id: str, *, finished_ok: frozenset[str] = frozenset()
              ) -> tuple[EvalRun, JobRecord | None, datetime]:
        run = self._runs.get(principal.tenant, run_id) if run_id else None
        if run is None:
            raise NotFound(f"No eval run '{run_id[:64]}' in this tenant.", code="eval_run_not_found")
        if run.runner != "daemon" or run.daemon_id is None:
            raise Conflict("This eval run runs on the server runner; daemons cannot report for it.",
                           code="not_a_daemon_run")
        job = self._store.get_job(run.tenant, run.daemon_id, run_id)
        owner = job.owner if job is not None else run.created_by
        if principal.user != owner:
            raise Forbidden("Only the user whose daemon holds this eval run's job may report its progress.",
                            code="not_daemon_owner")
        now = self._clock.now()
        if run.is_terminal:
            if run.status in finished_ok:
                return run, job, now
            raise RunStateConflict(f"The eval run already ended ({run.status}); stop working on it.",
                                   details={"status": run.status})
        if is_overdue(run, now):
            self._time_out(run, job, now)
            raise Conflict("The eval run's deadline passed; it ended as timed_out and this post was discarded.",
                           code="run_timed_out", details={"status": "timed_out", "deadline_at": run.deadline_at})
        if job is None or job.status != "claimed":
            raise Conflict("This eval run's job has not been claimed; claim it with GET /daemons/{id}/jobs first.",
                           code="job_not_claimed", details={"status": run.status})
        return run, job, now

    def _time_out(self, run: EvalRun, job: JobRecord | None, now: datetime) -> EvalRun:
        message = (f"The daemon did not finish before the run's deadline ({run.deadline_at})."
                   if job is not None and job.status == "claimed" else
                   f"No daemon picked up the job before the run's deadline ({run.deadline_at}); "
                   "check that your daemon is running and polling.")
        ended = time_out_run(self._runs, self._lifecycle, run, now=now, message=message)
        if run.daemon_id is not None:
            self._end_job(run.tenant, run.daemon_id, run.eval_run_id, "expired", now)
        return ended

    def _end_job(self, tenant: str, daemon_id: str, run_id: str, status: str, now: datetime) -> None:
        self._store.end_job(tenant, daemon_id, run_id, status=status, now=iso(now),
                            expires_at=int(now.timestamp()) + JOB_RETENTION_SECONDS)

    def reconcile(self, run: EvalRun) -> EvalRun:
        """Lazy deadline enforcement for readers: an overdue daemon run becomes timed_out now."""
        now = self._clock.now()
        if run.runner != "daemon" or not is_overdue(run, now):
            return run
        job = self._store.get_job(run.tenant, run.daemon_id, run.eval_run_id) if run.daemon_id else None
        return self._time_out(run, job, now)

    # -- events --------------------------------------------------------------------------------
    def post_event(self, principal: Principal, run_id: str, data: Any) -> EventAccepted:
        if not isinstance(data, dict):
            raise InvalidRequest("The event must be a JSON object.", code="malformed_json")
        event = parse_progress_event(data)
        if event.eval_run_id != run_id:
            raise InvalidRequest("The event's eval_run_id does not match the eval run it was posted to.",
                                 code="eval_run_id_mismatch", details={"expected": run_id,
                                                                       "posted": event.eval_run_id})
        finished_ok = frozenset({"succeeded"}) if isinstance(event, EvalFinished) else frozenset()
        run, job, now = self._load(principal, run_id, finished_ok=finished_ok)
        applied = self._apply(run, job, event, now)
        status = self._runs.status_of(run.tenant, run_id) or run.status
        return EventAccepted(eval_run_id=run_id, type=event.type, status=status, applied=applied)

    def _apply(self, run: EvalRun, job: JobRecord | None, event: EvalProgressEvent, now: datetime) -> bool:
        if isinstance(event, EvalStarted):
            if run.model != event.judge_model:
                self._runs.set_fields(run.tenant, run.eval_run_id, {"model": event.judge_model},
                                      when_status=("running",))
            return True
        if isinstance(event, EvalQuestionStarted | EvalQuestionCompleted | EvalQuestionFailed):
            assert job is not None
            return self._apply_question(run, job, event, now)
        if isinstance(event, EvalRetrospectiveStarted | EvalRetrospectiveCompleted | EvalRetrospectiveFailed):
            status = {"eval_retrospective_started": "running", "eval_retrospective_completed": "succeeded",
                      "eval_retrospective_failed": "failed"}[event.type]
            self._runs.record_outcomes(run.tenant, run.eval_run_id, [], _usage_total(run.outcomes),
                                       extra={"retrospective_status": status})
            return True
        if isinstance(event, EvalFinished):
            return False  # a marker: the run ends with its result, not with this event
        if isinstance(event, EvalFailed):
            self._fail(run, event.reason, now)
            return True
        raise AssertionError(f"unhandled event {event.type}")  # pragma: no cover - the union is closed

    def _job_question(self, job: JobRecord, question_id: str) -> Question:
        for q in job.questions:
            if q.id == question_id:
                return q
        raise InvalidRequest(f"Question '{question_id}' is not part of this eval run's job.",
                             code="unknown_question",
                             details={"question_id": question_id, "valid_question_ids": [q.id for q in job.questions]})

    def _apply_question(self, run: EvalRun, job: JobRecord,
                        event: EvalQuestionStarted | EvalQuestionCompleted | EvalQuestionFailed,
                        now: datetime) -> bool:
        question = self._job_question(job, event.question_id)
        current = run.outcome(question.id)
        if isinstance(event, EvalQuestionCompleted) and current.status == "scored" and current.score == event.score:
            return False  # a retried post of the same event
        # A rerun's job may ask again for a question the failed attempt scored by event only;
        # it reopens once per attempt (question_started_at is per job).
        reopenable = (isinstance(event, EvalQuestionStarted) and current.status == "scored"
                      and current.judge_verdict is None and question.id not in job.question_started_at)
        if current.is_terminal and not reopenable:
            raise Conflict(f"Question '{question.id}' already ended ({current.status}).",
                           code="question_already_finished",
                           details={"question_id": question.id, "status": current.status})
        if isinstance(event, EvalQuestionStarted):
            outcome = QuestionOutcome(question_id=question.id, category=question.category, status="running",
                                      usage=current.usage,
                                      usage_reported=current.usage_reported, attempts=current.attempts + 1)
            self._store.record_question_started(run.tenant, job.daemon_id, run.eval_run_id, question.id,
                                                now=iso(now))
        elif isinstance(event, EvalQuestionCompleted):
            started = job.question_started_at.get(question.id)
            latency = int((now - parse_iso(started)).total_seconds() * 1000) if started else None
            # A CLI that reports no token counts leaves the run's cost unknown (null), never zero.
            reported = any(v is not None for v in (event.input_tokens, event.output_tokens,
                                                   event.cache_read_input_tokens, event.cache_creation_input_tokens))
            outcome = QuestionOutcome(question_id=question.id, category=question.category, status="scored",
                                      score=event.score, usage=current.usage + event.usage(), usage_reported=reported,
                                      latency_ms=max(latency, 0) if latency is not None else None,
                                      attempts=max(current.attempts, 1), retain_fact=event.retain_fact)
        else:
            reason = sanitize_reason(event.reason, _REASON_LIMIT)
            outcome = QuestionOutcome(question_id=question.id, category=question.category, status="failed",
                                      failure_reason=FailureReason(kind=failure_kind_for_reason(event.reason),
                                                                   message=reason),
                                      usage=current.usage,
                                      usage_reported=current.usage_reported, attempts=max(current.attempts, 1))
        merged = {**run.outcomes, question.id: outcome}
        self._runs.record_outcomes(run.tenant, run.eval_run_id, [outcome], _usage_total(merged))
        if outcome.is_terminal:
            log_judge_progress(outcome, event.index, event.total, runner="daemon")
        return True

    def _fail(self, run: EvalRun, reason: str, now: datetime) -> None:
        message = sanitize_reason(reason, _REASON_LIMIT)
        kind = failure_kind_for_reason(reason)
        closed = close_open_questions(run, "failed", kind, message)
        merged = {**run.outcomes, **{o.question_id: o for o in closed}}
        failed = self._runs.finish(run.tenant, run.eval_run_id, status="failed", now=iso(now),
                                   usage=_usage_total(merged), outcomes=closed,
                                   error=RunError(code=_daemon_failure_code(reason), message=message),
                                   from_statuses=("running",))
        if run.daemon_id is not None:
            self._end_job(run.tenant, run.daemon_id, run.eval_run_id, "finished", now)
        logger.info("daemon run failed", extra={"eval_run_id": run.eval_run_id})
        emit_run_status("failed", runner=run.runner, vendor=run.vendor)
        self._lifecycle.finalize_quietly(failed)

    # -- result --------------------------------------------------------------------------------
    def post_result(self, principal: Principal, run_id: str, data: Any) -> ResultAccepted:
        if not isinstance(data, dict):
            raise InvalidRequest("The result must be a JSON object.", code="malformed_json")
        posted = SessionEvalCompleted.model_validate(data)
        run, job, now = self._load(principal, run_id)
        assert job is not None
        derived = recompute(posted, job.questions, eval_run_id=run_id, trace_entries=self._entries_of(run))
        final = self._merge_with_earlier_verdicts(run, derived)
        corrections = result_corrections(posted, final)
        if corrections:
            logger.warning("daemon result corrected", extra={"eval_run_id": run_id, "corrections": len(corrections)})

        outcomes = self._final_outcomes(run, final.verdicts())
        merged = {**run.outcomes, **{o.question_id: o for o in outcomes}}
        extra: dict[str, Any] = {}
        if run.model != final.judge_model:
            extra["model"] = final.judge_model
        if run.retrospective_status is None:
            extra["retrospective_status"] = "succeeded" if final.retrospective is not None else "skipped"
        succeeded = self._runs.finish(run.tenant, run_id, status="succeeded", now=iso(now),
                                      usage=_usage_total(merged), result=final, outcomes=outcomes,
                                      from_statuses=("running",), extra=extra)
        if run.daemon_id is not None:
            self._end_job(run.tenant, run.daemon_id, run_id, "finished", now)
        logger.info("daemon run succeeded", extra={"eval_run_id": run_id, "overall_score": final.overall_score})
        emit_run_status("succeeded", runner=run.runner, vendor=run.vendor)
        self._lifecycle.finalize_quietly(succeeded)
        return ResultAccepted(eval_run_id=run_id, status="succeeded", overall_score=final.overall_score,
                              corrections=corrections)

    def _entries_of(self, run: EvalRun) -> int | None:
        """The length of the trace the daemon's judges saw, against which their cited positions are checked
        (None when the session cannot be read: the positions are then kept as posted)."""
        if self._trace_length is None:
            return None
        try:
            return self._trace_length(run.tenant, run.session_id, run.chain)
        except DomainError as exc:
            logger.warning("trace length unknown; evidence entries not checked",
                           extra={"eval_run_id": run.eval_run_id, "error_code": exc.code})
            return None

    def _merge_with_earlier_verdicts(self, run: EvalRun, derived: SessionEvalCompleted) -> SessionEvalCompleted:
        """A rerun's job carries only the questions still without a verdict; the stored result covers
        the whole run, so earlier verdicts are aggregated together with the new ones, in the run's order."""
        new = {v.question_id: v for v in derived.verdicts()}
        verdicts: list[JudgeVerdict] = []
        for ref in run.questions:
            if ref.question_id in new:
                verdicts.append(new[ref.question_id])
                continue
            earlier = run.outcome(ref.question_id)
            if earlier.status == "scored" and earlier.judge_verdict is not None:
                verdicts.append(earlier.judge_verdict)
        # The run record's questions carry their categories: the order needs nothing else, so a tenant
        # catalog is never read here.
        return aggregate(run.eval_run_id, derived.judge_model, run.questions, verdicts, derived.retrospective)

    @staticmethod
    def _final_outcomes(run: EvalRun, verdicts: Sequence[JudgeVerdict]) -> list[QuestionOutcome]:
        by_id = {v.question_id: v for v in verdicts}
        outcomes = []
        for ref in run.questions:
            current = run.outcome(ref.question_id)
            verdict = by_id.get(ref.question_id)
            if verdict is not None:
                if current.status == "scored" and current.judge_verdict == verdict:
                    continue
                # The judge's retained fact came with its question event; it stays with the question.
                fact = current.retain_fact if current.status == "scored" else None
                outcomes.append(QuestionOutcome(question_id=ref.question_id, category=ref.category, status="scored",
                                                judge_verdict=verdict, usage=current.usage,
                                                usage_reported=current.usage_reported,
                                                latency_ms=current.latency_ms, attempts=max(current.attempts, 1),
                                                retain_fact=fact))
            elif not current.is_terminal:
                outcomes.append(_failed(current, "failed", "invalid_output",
                                        "The daemon's result carries no verdict for this question."))
        return outcomes


def result_corrections(posted: SessionEvalCompleted, final: SessionEvalCompleted) -> list[str]:
    """Human-readable list of what the service re-derived from the verdict scores."""
    out: list[str] = []
    if posted.overall_score != final.overall_score:
        out.append(f"overall_score {posted.overall_score} -> {final.overall_score}")
    if posted.summary != final.summary:
        out.append("summary re-derived")
    posted_cats = {c.name: c for c in posted.categories}
    for cat in final.categories:
        p = posted_cats.get(cat.name)
        if p is not None and (p.score, p.verdict) != (cat.score, cat.verdict):
            out.append(f"category {cat.name} {p.score}/{p.verdict} -> {cat.score}/{cat.verdict}")
    posted_cat_of = {v.question_id: name for name, c in posted_cats.items() for v in c.questions}
    posted_verdicts = {v.question_id: v for v in posted.verdicts()}
    for v in final.verdicts():
        p_v = posted_verdicts.get(v.question_id)
        if p_v is None:
            continue  # an earlier attempt's verdict
        if posted_cat_of.get(v.question_id) != v.category or p_v.category != v.category:
            out.append(f"question {v.question_id} moved to category {v.category}")
        if p_v.verdict != v.verdict:
            out.append(f"question {v.question_id} verdict {p_v.verdict} -> {v.verdict}")
        if p_v.recommendation is not None and v.recommendation is None:
            out.append(f"question {v.question_id} recommendation dropped at score 5")
        outside = sorted(set(p_v.evidence_entries) - set(v.evidence_entries))
        if outside:
            out.append(f"question {v.question_id} evidence_entries {outside[:5]} are not trace positions; dropped")
    return out


def _daemon_failure_code(reason: str) -> str:
    """The run's error code for a daemon's `eval_failed`: a context limit the judge CLI states and the
    trace cannot meet is `context_too_small`, as on the server runner; anything else `daemon_failed`."""
    return "context_too_small" if reason.startswith("context_too_small:") else "daemon_failed"
