"""The worker's use case: take one queued eval run, judge it within its deadline, store and announce the result.

Idempotency lives in the run record: a redelivered message for a finished run does nothing, and a
redelivery after a crash (or a rerun) judges only questions without a stored verdict, so a
question already scored is never billed twice. Every write is conditional on the run's status, so
a cancel or a late duplicate can never be overwritten.

Writes per run: `start` (claims the run, marks the questions running), a few coalesced progress
writes while judges finish, and `finish` (status, result, usage, last outcomes) — at most
2 + number of questions, in practice 3-6 for 13 questions — then the run lifecycle's finalization
transaction (`services/run_lifecycle.py`). A cancel the worker notices mid-run is finalized here
too, with the usage the judges billed until they were stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from chalicelib.domain.clock import Clock, iso, parse_iso
from chalicelib.domain.errors import Conflict, DependencyUnavailable, DomainError
from chalicelib.domain.evaluation import (
    FailureKind,
    FailureReason,
    JudgeVerdict,
    QuestionOutcome,
    SessionEvalCompleted,
    TokenUsage,
)
from chalicelib.domain.runs import EvalJobMessage, EvalRun, QuestionRef, RunError
from chalicelib.judges.aggregation import aggregate
from chalicelib.judges.catalog import Question
from chalicelib.judges.evidence import number_entries
from chalicelib.observability import SERVICE, bind_log_keys, emit_run_status, logger
from chalicelib.services.admin_settings import VendorCredentials
from chalicelib.services.eval_job_ports import (
    ContextLimitMemory,
    EvalContextSource,
    EventPublisher,
    JudgeModelFactory,
    KnownPatternSource,
    RateGateFactory,
    RunQuestionSource,
    RunStore,
    VendorCredentialSource,
)
from chalicelib.services.eval_job_run_ports import JobRunPorts, dedupe_outcomes
from chalicelib.services.judge_runner import (
    Deadline,
    JudgeRunInput,
    JudgeRunResult,
    QuestionJob,
    RunnerTuning,
    judge_run,
    run_guarded,
)
from chalicelib.services.run_events import announce_completed
from chalicelib.services.run_lifecycle import RunLifecycle
from chalicelib.services.session_tools import StoredEntrySource, start_run_tools
from chalicelib.services.sessions import EvalContextDoc

METRICS_NAMESPACE = "EvalRunner"
# Below this much Lambda time nothing useful can be judged and persisted: hand the message back.
_MIN_BUDGET_SECONDS = 1.0


@dataclass(frozen=True)
class _RunPlan:
    """What a claimed run judges, besides its context (read once the run has started)."""

    model_name: str
    questions: list[Question]
    jobs: list[QuestionJob]
    prior_verdicts: dict[str, JudgeVerdict]
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class JobOutcome:
    """What processing one message did (logged by the handler; asserted on by tests)."""

    action: Literal["dropped", "skipped", "finished", "cancelled"]
    status: str | None = None
    writes: int = 0


def run_budget_seconds(*, deadline_at: str, now_iso: str, remaining_ms: int, grace_seconds: float) -> float:
    """Seconds the judges may use: the run's deadline, clamped to the Lambda's remaining time minus a
    grace for persisting. The grace scales down with a short invocation (a fifth of it, at least 1 s)
    so a small remaining time is not swallowed whole by a grace sized for a 900 s function."""
    lambda_seconds = remaining_ms / 1000.0
    grace = min(grace_seconds, max(1.0, lambda_seconds * 0.2))
    run_left = (parse_iso(deadline_at) - parse_iso(now_iso)).total_seconds()
    return min(run_left, lambda_seconds - grace)


class EvalJobService:
    def __init__(self, *, runs: RunStore, settings: VendorCredentialSource, sessions: EvalContextSource,
                 questions: RunQuestionSource,
                 build_judge_model: JudgeModelFactory, events: EventPublisher | None, clock: Clock,
                 grace_seconds: float, lifecycle: RunLifecycle, tuning: RunnerTuning | None = None,
                 rate_gates: RateGateFactory | None = None, context_limits: ContextLimitMemory | None = None,
                 stored: StoredEntrySource | None = None, facts: KnownPatternSource | None = None) -> None:
        self._runs = runs
        self._stored = stored
        self._facts = facts
        self._lifecycle = lifecycle
        self._settings = settings
        self._sessions = sessions
        self._questions = questions
        self._build = build_judge_model
        self._events = events
        self._clock = clock
        self._grace = grace_seconds
        self.tuning = tuning or RunnerTuning()
        self._rate_gates = rate_gates
        self._context_limits = context_limits

    # ------------------------------------------------------------------------------------ entry

    def process(self, message: EvalJobMessage, *, remaining_ms: Callable[[], int]) -> JobOutcome:
        """Judge the message's run. `remaining_ms` is the Lambda context's countdown (read again right
        before judging, so loading the session and the vendor SDK counts against the budget)."""
        fields = {"tenant": message.tenant, "eval_run_id": message.eval_run_id, "job_kind": message.kind}
        run = self._runs.get(message.tenant, message.eval_run_id)
        if run is None:
            logger.warning("eval job for an unknown run dropped", extra=fields)
            return JobOutcome("dropped")
        bind_log_keys(user=run.created_by)
        if run.is_terminal:
            # A redelivery (or a duplicate) of a finished run: the record is the idempotency state.
            # If the finalization of its first delivery did not commit, it happens now.
            if self._lifecycle.finalization_due(run, self._clock.now()):
                self._lifecycle.finalize(run)
            logger.info("eval run already finished; job ignored", extra={**fields, "status": run.status})
            return JobOutcome("skipped", run.status)
        if run.runner != "server" or run.vendor is None:
            logger.warning("eval job for a run the server does not judge dropped", extra=fields)
            return JobOutcome("dropped", run.status)

        now = iso(self._clock.now())
        budget = run_budget_seconds(deadline_at=run.deadline_at, now_iso=now, remaining_ms=remaining_ms(),
                                    grace_seconds=self._grace)
        known = self._questions.questions_for_run(run)
        questions = {ref.question_id: known.get(ref.question_id) for ref in run.questions}
        pending = [ref for ref in run.questions if run.outcome(ref.question_id).status != "scored"]
        run_left = (parse_iso(run.deadline_at) - parse_iso(now)).total_seconds()
        if run_left <= 0:
            return self._finish_expired(run, pending, fields)
        if budget < _MIN_BUDGET_SECONDS:
            raise DependencyUnavailable("Too little time left in this invocation to judge; the job is retried.",
                                        code="worker_out_of_time")

        try:
            creds = self._settings.resolve_vendor_credentials(run.tenant, run.vendor)
        except Conflict as exc:
            return self._fail_before_start(run, exc.code, exc.message, fields, details={"vendor": run.vendor})
        if creds.status == "suspended":
            return self._fail_before_start(
                run, "vendor_suspended", f"The {run.vendor} key is suspended (the vendor rejected it); an admin "
                                         "must replace it before evaluations can run.", fields,
                details={"vendor": run.vendor})
        jobs: list[QuestionJob] = []
        unknown: list[QuestionOutcome] = []
        for ref in pending:
            question = questions[ref.question_id]
            prior = run.outcome(ref.question_id)
            if question is None:
                unknown.append(_outcome_failed(ref, prior, "internal", "The question is not in the catalog."))
            else:
                jobs.append(QuestionJob(question=question, prior=prior))
        running = [QuestionOutcome(question_id=j.question.id, category=j.question.category, status="running",
                                   usage=j.prior.usage, attempts=j.prior.attempts) for j in jobs]
        # The run is claimed before its session is read: loading a large (or hostile) session is part
        # of the run, under its deadline and its cancel like the judges, never before or outside them.
        try:
            started = self._runs.start(run.tenant, run.eval_run_id, now=now, outcomes=running,
                                       lease_seconds=budget + self._grace, lease_id=uuid.uuid4().hex)
        except Conflict:
            logger.info("eval run changed before it started (cancelled, or another worker holds it); "
                        "job ignored", extra=fields)
            return JobOutcome("cancelled")
        logger.info("eval run started", extra={**fields, "vendor": run.vendor, "model": run.model or creds.model,
                                               "questions": len(run.questions), "pending": len(jobs),
                                               "budget_seconds": round(budget, 1)})

        ports = JobRunPorts(started, creds, runs=self._runs, settings=self._settings, build_judge_model=self._build,
                            clock=self._clock, context_limits=self._context_limits)
        prior_verdicts: dict[str, JudgeVerdict] = {
            ref.question_id: o.judge_verdict for ref in run.questions
            if (o := run.outcome(ref.question_id)).status == "scored" and o.judge_verdict is not None}
        plan = _RunPlan(model_name=run.model or creds.model, questions=[q for q in questions.values() if q is not None],
                        jobs=jobs, prior_verdicts=prior_verdicts, fields=fields)
        outcome = asyncio.run(self._judge(plan, ports, creds, budget, remaining_ms))
        if isinstance(outcome, DomainError):
            if outcome.status >= 500:
                raise outcome  # storage trouble: let SQS redeliver (the lease lets the next delivery start)
            return self._fail_before_start(started, outcome.code, outcome.message, fields)
        return self._persist(started, outcome, ports, unknown, fields)

    async def _load_context(self, plan: _RunPlan, ports: JobRunPorts, deadline: Deadline
                            ) -> EvalContextDoc | DomainError | JudgeRunResult:
        """The run's eval context, read under the run's deadline and cancel.

        Reading runs in a worker thread that checks a stop flag between entries: the deadline or a
        cancel sets it, the thread ends at its next entry, and the run ends timed out or cancelled.
        """
        run = ports.run
        stop = threading.Event()
        load = asyncio.to_thread(self._sessions.load_eval_context_doc, run.tenant, run.session_id, run.threshold,
                                 run.chain, stop=stop.is_set)
        guarded = await run_guarded(load, deadline=deadline, poll_seconds=self.tuning.cancel_poll_seconds,
                                    is_cancelled=ports.is_cancelled)
        if guarded.stop != "done":
            stop.set()
            logger.warning("eval run stopped while its session was loading",
                           extra={**plan.fields, "stop": guarded.stop})
            return JudgeRunResult(stop=guarded.stop, unfinished=[j.question.id for j in plan.jobs])
        if isinstance(guarded.error, DomainError):
            return guarded.error
        if guarded.error is not None:
            raise guarded.error
        context = guarded.value
        assert isinstance(context, EvalContextDoc)
        if not context.doc["trace"]:
            return Conflict("The session has no recorded activity to evaluate.", code="session_empty")
        return context

    async def _judge(self, plan: _RunPlan, ports: JobRunPorts, creds: VendorCredentials, budget: float,
                     remaining_ms: Callable[[], int]) -> JudgeRunResult | DomainError:
        # SDK clients bind to the event loop that first uses them: build inside it. On a cold container
        # this imports the SDK (about a second), so the deadline is taken after it. So does the rate
        # gate, whose first read of the shared state overlaps the context fit.
        run = ports.run
        if self._rate_gates is not None and run.vendor is not None:
            ports.gate = self._rate_gates(run.tenant, run.vendor, log_fields=plan.fields)
            ports.gate.prefetch()
        try:
            model = ports.build_model(creds, budget)
            budget = run_budget_seconds(deadline_at=run.deadline_at, now_iso=iso(self._clock.now()),
                                        remaining_ms=remaining_ms(), grace_seconds=self._grace)
            deadline = Deadline(budget, self._clock.monotonic)
            try:
                loaded = await self._load_context(plan, ports, deadline)
            except BaseException:
                await model.aclose()
                raise
            if not isinstance(loaded, EvalContextDoc):
                await model.aclose()
                return loaded
            number_entries(loaded.doc)  # judges see and cite each entry's `pos` (reload keeps it)
            stored = self._stored if any(j.question.needs_tools for j in plan.jobs) else None
            outputs, tools = (start_run_tools(stored, ports.run, loaded.doc, deadline.remaining)
                              if stored is not None else (None, None))
            try:
                run_input = JudgeRunInput(
                    eval_run_id=run.eval_run_id, session_id=run.session_id, model_name=plan.model_name,
                    questions=plan.questions, jobs=plan.jobs, prior_verdicts=plan.prior_verdicts,
                    context_doc=loaded.doc, reload_context=loaded.reload,
                    requested_threshold=run.threshold, deadline=deadline, log_fields=plan.fields,
                    learned_context_limit=await asyncio.to_thread(self._learned_limit, run.tenant, creds,
                                                                  plan.model_name, plan.fields),
                    tools=tools, known_patterns=await asyncio.to_thread(self._known_patterns, run, plan.fields))
                # A try-it run asks one question to see its verdict: a retrospective of it adds a call and
                # nothing to learn.
                tuning = dataclasses.replace(self.tuning, retrospective=False) if run.trial_questions else self.tuning
                result = await judge_run(run_input, model, ports, tuning)
            finally:
                if outputs is not None:
                    outputs.close()  # ends the background read if it is still going
            if tools is not None and result.context_report is not None:
                result.context_report["tool_calls"] = tools.calls
                result.context_report["tool_calls_refused"] = tools.refused
            return result
        finally:
            if ports.gate is not None:
                await ports.gate.aclose()

    def _known_patterns(self, run: EvalRun, fields: Mapping[str, Any]) -> list[str] | None:
        """The repository's judge facts for this run's prompts, when the tenant gives them to judges."""
        if self._facts is None or run.trial_questions:
            return None
        try:
            return self._facts.known_patterns(run.tenant, run.session_id)
        except DomainError as exc:
            logger.warning("judge facts unreadable; judging without them", extra={**fields, "error_code": exc.code})
            return None

    def _learned_limit(self, tenant: str, creds: VendorCredentials, model: str,
                       fields: Mapping[str, Any]) -> int | None:
        """A limit the vendor stated for this (base_url, model) on an earlier run: the fit aims at it."""
        if self._context_limits is None:
            return None
        try:
            learned = self._context_limits.get(tenant, creds.vendor, creds.base_url, model)
        except DomainError as exc:
            logger.warning("learned context limit unreadable; fitting to the model table",
                           extra={**fields, "error_code": exc.code})
            return None
        return learned.limit_tokens if learned is not None else None

    # ------------------------------------------------------------------------------------ endings

    def _persist(self, run: EvalRun, res: JudgeRunResult, ports: JobRunPorts, unknown: list[QuestionOutcome],
                 fields: Mapping[str, Any]) -> JobOutcome:
        usage = run.usage + res.usage
        self._emit_judge_metrics(run, res)
        if res.stop == "cancelled":
            logger.info("eval run cancelled; in-flight judges aborted", extra={**fields, "calls": res.calls})
            self._emit_run_metric(run, "cancelled")
            self._finalize_stopped(run, usage, ports)
            return JobOutcome("cancelled", "cancelled", writes=1 + ports.writes)

        by_id = {ref.question_id: ref for ref in run.questions}
        outcomes = [*ports.carry, *res.unflushed, *unknown]
        result: SessionEvalCompleted | None = None
        error: RunError | None = None
        if res.abort is not None and res.abort.kind == "budget_exhausted":
            # The spend guard stopped the run: what was judged is kept, the rest is not asked.
            status = "failed"
            outcomes += [_outcome_failed(by_id[q], run.outcome(q), "budget_exhausted",
                                         "Not judged: the run's budget reservation would have been passed.")
                         for q in res.unfinished]
            result = self._partial_result(run, res)
            error = RunError(code="budget_exhausted",
                             message=f"The run stopped before passing the ${_usd(ports.reserved_micros)} it reserved "
                                     f"of the budget, with {len(result.verdicts()) if result else 0} of "
                                     f"{len(run.questions)} questions judged; rerun it to judge the rest.",
                             details={"reserved_usd": _usd(ports.reserved_micros), "detail": res.abort.message})
        elif res.abort is not None and res.abort.error is not None:
            # A vendor-stated context limit that cannot be met (context_too_small): every question fails alike.
            status = "failed"
            cause = res.abort.error
            outcomes += [_outcome_failed(by_id[q], run.outcome(q), "context_overflow", cause.message)
                         for q in res.unfinished]
            error = RunError(code=cause.code, message=cause.message, details=cause.details)
        elif res.abort is not None:
            status = "failed"
            kind: FailureKind = res.abort.kind
            message = "Not judged: the vendor rejected the API key." if kind == "auth" else \
                "Not judged: the vendor does not know the configured model."
            outcomes += [_outcome_failed(by_id[q], run.outcome(q), kind, message) for q in res.unfinished]
            error = self._abort_error(run, res, ports)
        elif res.context_error is not None:
            status = "failed"
            outcomes += [_outcome_failed(by_id[q], run.outcome(q), "context_overflow", res.context_error.message)
                         for q in res.unfinished]
            error = RunError(code=res.context_error.code, message=res.context_error.message,
                             details=res.context_error.details)
        elif res.stop == "deadline":
            status = "timed_out"
            outcomes += [_outcome_failed(by_id[q], run.outcome(q), "timed_out",
                                         "The run reached its deadline before this judge answered.",
                                         status="timed_out") for q in res.unfinished]
            result = res.result
            judged = len(result.verdicts()) if result else 0
            error = RunError(code="run_timed_out",
                             message=f"The run reached its deadline with {judged} of {len(run.questions)} questions "
                                     "judged; rerun it to judge the rest, or raise run_timeout_seconds.",
                             details={"run_timeout_seconds": run.run_timeout_seconds})
        elif res.result is None:
            status = "failed"
            failures = Counter(o.failure_reason.kind for o in [*res.outcomes.values(), *unknown] if o.failure_reason)
            error = RunError(code="all_judges_failed", message="No judge produced a usable verdict; see the per-"
                                                                "question failure reasons, then rerun.",
                             details={"failures": dict(failures)})
        else:
            status = "succeeded"
            result = res.result
        extra: dict[str, Any] = {}
        if res.context_report is not None:
            extra["context"] = res.context_report
        if res.retrospective_status is not None:
            extra["retrospective_status"] = res.retrospective_status
        try:
            finished = self._runs.finish(run.tenant, run.eval_run_id, status=status, now=iso(self._clock.now()),
                                         usage=usage, result=result, error=error, outcomes=dedupe_outcomes(outcomes),
                                         from_statuses=("running",), extra=extra)
        except Conflict:
            logger.info("eval run changed while judging (cancelled?); result discarded", extra=fields)
            self._emit_run_metric(run, "cancelled")
            self._finalize_stopped(run, usage, ports)
            return JobOutcome("cancelled", "cancelled", writes=2 + ports.writes)
        logger.info(f"eval run {status}", extra={
            **fields, "status": status, "overall_score": result.overall_score if result else None,
            "error_code": error.code if error else None, "calls": res.calls, "wall_ms": res.wall_ms,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            **(ports.gate.summary() if ports.gate is not None else {})})
        self._emit_run_metric(run, status)
        self._announce(finished)
        self._lifecycle.finalize(finished, facts=ports.spend_facts())
        return JobOutcome("finished", status, writes=2 + ports.writes)

    def _partial_result(self, run: EvalRun, res: JudgeRunResult) -> SessionEvalCompleted | None:
        """The verdicts a stopped run did get (this attempt's and earlier ones), aggregated."""
        known = self._questions.questions_for_run(run)
        selected = [q for ref in run.questions if (q := known.get(ref.question_id)) is not None]
        verdicts = []
        for ref in run.questions:
            new = res.outcomes.get(ref.question_id)
            verdict = new.judge_verdict if new is not None else run.outcome(ref.question_id).judge_verdict
            if verdict is not None:
                verdicts.append(verdict)
        if not verdicts:
            return None
        return aggregate(run.eval_run_id, run.model or "unknown", selected, verdicts, None)

    def _finalize_stopped(self, run: EvalRun, usage: TokenUsage, ports: JobRunPorts) -> None:
        """Someone else ended the run while its judges ran (a cancel): finalize it with everything
        this worker's judges billed, which the cancel could not know."""
        current = self._runs.get(run.tenant, run.eval_run_id)
        if current is not None and current.is_terminal and current.finalized_at is None:
            self._lifecycle.finalize(current, usage=usage, facts=ports.spend_facts())

    def _abort_error(self, run: EvalRun, res: JudgeRunResult, ports: JobRunPorts) -> RunError:
        assert res.abort is not None and run.vendor is not None
        if res.abort.kind == "auth":
            try:
                self._settings.mark_vendor_suspended(run.tenant, run.vendor, res.abort.message,
                                                     secret_version_id=ports.creds.secret_version_id)
            except DomainError as exc:
                logger.error("could not suspend the vendor after an auth failure",
                             extra={"tenant": run.tenant, "vendor": run.vendor, "error_code": exc.code})
            return RunError(code="vendor_auth_failed",
                            message=f"{run.vendor} rejected the API key (HTTP 401/403), also after re-reading it; "
                                    "the vendor is suspended until an admin replaces the key.",
                            details={"vendor": run.vendor, "kind": "auth", "vendor_message": res.abort.message})
        return RunError(code="vendor_model_not_found",
                        message=f"{run.vendor} does not offer the configured model; an admin must change it.",
                        details={"vendor": run.vendor, "model": run.model, "kind": res.abort.kind,
                                 "vendor_message": res.abort.message})

    def _fail_before_start(self, run: EvalRun, code: str, message: str, fields: Mapping[str, Any], *,
                           details: dict[str, Any] | None = None) -> JobOutcome:
        logger.warning("eval run failed before judging", extra={**fields, "error_code": code})
        try:
            finished = self._runs.finish(run.tenant, run.eval_run_id, status="failed", now=iso(self._clock.now()),
                                         usage=run.usage, error=RunError(code=code, message=message, details=details),
                                         from_statuses=("queued", "running"))
        except Conflict:
            return JobOutcome("cancelled")
        self._emit_run_metric(run, "failed")
        self._announce(finished)
        self._lifecycle.finalize(finished)
        return JobOutcome("finished", "failed", writes=1)

    def _finish_expired(self, run: EvalRun, pending: Sequence[QuestionRef], fields: Mapping[str, Any]) -> JobOutcome:
        """The deadline passed before this delivery could start (e.g. a redelivery after a crash)."""
        outcomes = [_outcome_failed(ref, run.outcome(ref.question_id), "timed_out",
                                    "The run reached its deadline before this judge ran.", status="timed_out")
                    for ref in pending]
        verdicts = [o.judge_verdict for ref in run.questions
                    if (o := run.outcome(ref.question_id)).judge_verdict is not None]
        result = aggregate(run.eval_run_id, run.model or "unknown", run.questions, verdicts, None) if verdicts else None
        error = RunError(code="run_timed_out", message=f"The run reached its deadline with {len(verdicts)} of "
                                                        f"{len(run.questions)} questions judged; rerun it to judge "
                                                        "the rest.")
        try:
            finished = self._runs.finish(run.tenant, run.eval_run_id, status="timed_out", now=iso(self._clock.now()),
                                         usage=run.usage, result=result, error=error, outcomes=outcomes,
                                         from_statuses=("queued", "running"))
        except Conflict:
            return JobOutcome("cancelled")
        logger.warning("eval run expired before judging", extra=dict(fields))
        self._emit_run_metric(run, "timed_out")
        self._announce(finished)
        self._lifecycle.finalize(finished)
        return JobOutcome("finished", "timed_out", writes=1)

    # ------------------------------------------------------------------------------------ outputs

    def _announce(self, run: EvalRun) -> None:
        announce_completed(self._events, run)

    def _emit_run_metric(self, run: EvalRun, status: str) -> None:
        if status == "cancelled":
            return  # counted once, by the cancel request that made the run cancelled (eval_runs)
        emit_run_status(status, runner=run.runner, vendor=run.vendor)

    def _emit_judge_metrics(self, run: EvalRun, res: JudgeRunResult) -> None:
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric

        vendor = run.vendor or "none"
        if res.latencies_ms or res.calls:
            metrics = EphemeralMetrics(namespace=METRICS_NAMESPACE, service=SERVICE)
            metrics.add_dimension(name="vendor", value=vendor)
            for latency in res.latencies_ms:
                metrics.add_metric(name="JudgeLatency", unit=MetricUnit.Milliseconds, value=latency)
            for name, value in (("InputTokens", res.usage.input_tokens), ("OutputTokens", res.usage.output_tokens),
                                ("CacheReadInputTokens", res.usage.cache_read_input_tokens),
                                ("CacheCreationInputTokens", res.usage.cache_creation_input_tokens),
                                ("JudgeCalls", res.calls)):
                metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
            metrics.add_metric(name="JudgePhaseDuration", unit=MetricUnit.Milliseconds, value=res.wall_ms)
            metrics.flush_metrics()
        for kind, count in sorted(res.vendor_errors.items()):
            with single_metric(name="VendorErrors", unit=MetricUnit.Count, value=count, namespace=METRICS_NAMESPACE,
                               default_dimensions={"service": SERVICE, "vendor": vendor, "kind": kind}):
                pass  # single_metric emits the EMF record when the block exits


# ------------------------------------------------------------------------------------ helpers


def _outcome_failed(ref: QuestionRef, prior: QuestionOutcome, kind: FailureKind, message: str, *,
                    status: Literal["failed", "timed_out"] = "failed") -> QuestionOutcome:
    return QuestionOutcome(question_id=ref.question_id, category=ref.category, status=status,
                           failure_reason=FailureReason(kind=kind, message=message), usage=prior.usage,
                           attempts=prior.attempts)


def _usd(micros: int) -> str:
    return f"{micros / 1_000_000:.4f}"
