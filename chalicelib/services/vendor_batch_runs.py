"""Batch-mode runs: a run's judge calls sent as one vendor batch at the vendor's discount, and the
scheduled poll that turns finished vendor batches into verdicts and finished runs.

Submit (the worker, on the run's job message): the run is claimed for its attempt (a `VBATCH#` record
written only if this attempt has none, so a redelivered message never submits, and bills, twice),
marked running, its session read and fitted to the model's window exactly like a direct run, and one
request per pending question goes to the vendor in one batch. The run's deadline is the vendor's
window (24 h from dispatch), not RunTimeoutSeconds.

Poll (`automation_poller`, every minute): each open vendor batch is asked where it is; once it has
ended its results are parsed into verdicts (a request that errored or expired fails its question with
`batch_errored` / `batch_expired`), the run is finished and finalized through the run lifecycle (the
spend ledger settles it at the batch price). A run cancelled while the vendor works gets its vendor
batch cancelled and is finalized with what the vendor still billed. Batch runs skip the
retrospective and judge `needs_tools` questions without the session tools: either would need more
vendor round trips than one batch has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

from chalicelib.adapters.automation_store import DynamoAutomationStore
from chalicelib.adapters.run_store import DynamoRunStore
from chalicelib.adapters.vendor_batches import AnthropicBatches, BatchRequest, OpenAIBatches
from chalicelib.domain.clock import Clock, iso, parse_iso
from chalicelib.domain.context_limits import ContextTooSmall, LearnedContextLimit, assumed_window
from chalicelib.domain.errors import Conflict, DependencyUnavailable, DomainError
from chalicelib.domain.evaluation import (
    FailureKind,
    FailureReason,
    JudgeVerdict,
    QuestionOutcome,
    QuestionStatus,
    TokenUsage,
    VendorName,
)
from chalicelib.domain.judging import JudgeCall, JudgeModel, VendorCallError, matches_known_model
from chalicelib.domain.runs import EvalJobMessage, EvalRun, QuestionRef, RunError
from chalicelib.domain.vendor_batches import RequestOutcome, VendorBatchRecord, custom_id, failure_for
from chalicelib.judges.aggregation import aggregate
from chalicelib.judges.catalog import Question
from chalicelib.judges.evidence import number_entries
from chalicelib.judges.prompts import build_question_prompt, build_shared_context
from chalicelib.judges.schema import VERDICT_SCHEMA_NAME, verdict_json_schema
from chalicelib.judges.verdicts import VerdictFailure, parse_verdict
from chalicelib.observability import emit_run_status, logger
from chalicelib.services.admin_settings import VendorCredentials
from chalicelib.services.context_fit import (
    ContextFitter,
    ContextTooLarge,
    FittedContext,
    PromptOverWindow,
    TokenMeter,
)
from chalicelib.services.eval_job_ports import EvalContextSource, RunQuestionSource
from chalicelib.services.judge_runner import RunnerTuning
from chalicelib.services.run_events import announce_completed
from chalicelib.services.run_lifecycle import RunLifecycle
from chalicelib.services.session_models import EvalContextDoc

# Ask the vendor to stop this long before the run's deadline, so the results of whatever it did are
# collected (and the run finished) before a reader would end it as overdue.
CANCEL_BEFORE_DEADLINE = timedelta(minutes=5)
# One poll pass stops starting new work after this long (the scheduled function runs every minute).
POLL_BUDGET_SECONDS = 40.0
POLL_BATCH = 100

VendorBatchClients = AnthropicBatches | OpenAIBatches


class BatchClientFactory(Protocol):
    def __call__(self, vendor: VendorName, *, api_key: str, base_url: str | None) -> VendorBatchClients: ...


class CredentialSource(Protocol):
    def resolve_vendor_credentials(self, tenant: str, vendor: VendorName, *,
                                   fresh: bool = False) -> VendorCredentials: ...

    def mark_vendor_suspended(self, tenant: str, vendor: VendorName, reason: str, *,
                              secret_version_id: str | None = None, actor: str = ...) -> bool: ...


class CountingModelFactory(Protocol):
    """A judge model of the tenant's key, used here only for its token count and context window."""

    def __call__(self, vendor: Literal["anthropic", "openai"], *, api_key: str, base_url: str | None,
                 max_retries: int, timeout_seconds: float) -> JudgeModel: ...


class ContextLimits(Protocol):
    def get(self, tenant: str, vendor: str, base_url: str | None, model: str) -> LearnedContextLimit | None: ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class PollReport:
    open: int = 0
    finished: int = 0
    cancelled: int = 0
    waiting: int = 0
    errors: int = 0


class VendorBatchRuns:
    def __init__(self, *, runs: DynamoRunStore, store: DynamoAutomationStore, settings: CredentialSource,
                 sessions: EvalContextSource, questions: RunQuestionSource, clients: BatchClientFactory,
                 counting_model: CountingModelFactory, lifecycle: RunLifecycle, events: EventPublisher | None,
                 clock: Clock, tuning: RunnerTuning | None = None, context_limits: ContextLimits | None = None) -> None:
        self._runs = runs
        self._store = store
        self._settings = settings
        self._sessions = sessions
        self._questions = questions
        self._clients = clients
        self._counting_model = counting_model
        self._lifecycle = lifecycle
        self._events = events
        self._clock = clock
        self._tuning = tuning or RunnerTuning()
        self._context_limits = context_limits

    # ------------------------------------------------------------------------------------ submit

    def submit(self, message: EvalJobMessage) -> str:
        """The worker's half: send the run's pending questions as one vendor batch. Returns what it did."""
        run = self._runs.get(message.tenant, message.eval_run_id)
        if run is None:
            return "dropped"
        if run.is_terminal:
            if self._lifecycle.finalization_due(run, self._clock.now()):
                self._lifecycle.finalize(run)
            return "skipped"
        if run.runner != "server" or run.vendor is None or run.delayed or run.mode != "batch":
            logger.warning("vendor batch job for a run that is not a started batch-mode run dropped",
                           extra={"tenant": run.tenant, "eval_run_id": run.eval_run_id})
            return "dropped"
        try:
            creds = self._settings.resolve_vendor_credentials(run.tenant, run.vendor)
        except Conflict as exc:
            return self._fail(run, exc.code, exc.message, from_statuses=("queued", "running"))
        if creds.status == "suspended":
            return self._fail(run, "vendor_suspended", f"The {run.vendor} key is suspended; an admin must replace it.",
                              from_statuses=("queued", "running"))
        record = VendorBatchRecord(tenant=run.tenant, eval_run_id=run.eval_run_id, attempt=run.deadline_at,
                                   vendor=run.vendor, model=run.model or creds.model, deadline_at=run.deadline_at)
        if not self._store.claim_vendor_batch(record):
            logger.info("vendor batch of this attempt already submitted; job ignored",
                        extra={"tenant": run.tenant, "eval_run_id": run.eval_run_id})
            return "skipped"
        try:
            return self._submit(run, creds, record)
        except BaseException:
            # Nothing reached the vendor (or it refused): the next delivery may try again.
            self._store.release_vendor_batch_claim(record)
            raise

    def _submit(self, run: EvalRun, creds: VendorCredentials, record: VendorBatchRecord) -> str:
        known = self._questions.questions_for_run(run)
        pending = [ref for ref in run.questions if run.outcome(ref.question_id).status != "scored"]
        questions = [(ref, known.get(ref.question_id)) for ref in pending]
        # One round per question: a vendor batch has no back-and-forth, so `needs_tools` questions are
        # judged on the trace alone, without the session tools (and without their prompt section).
        jobs = [(ref, q.model_copy(update={"needs_tools": False}) if q.needs_tools else q)
                for ref, q in questions if q is not None]
        unknown = [_failed(ref, run.outcome(ref.question_id), "internal", "The question is not in the catalog.")
                   for ref, q in questions if q is None]
        now = iso(self._clock.now())
        running = [QuestionOutcome(question_id=ref.question_id, category=ref.category, status="running",
                                   usage=run.outcome(ref.question_id).usage,
                                   attempts=run.outcome(ref.question_id).attempts) for ref, _ in jobs]
        try:
            started = self._runs.start(run.tenant, run.eval_run_id, now=now, outcomes=running)
        except Conflict:
            return "cancelled"
        if not jobs:
            return self._finish(started, record, {}, unknown)
        context = self._sessions.load_eval_context_doc(run.tenant, run.session_id, run.threshold, run.chain)
        if not context.doc["trace"]:
            return self._fail(started, "session_empty", "The session has no recorded activity to evaluate.")
        number_entries(context.doc)  # judges cite each entry's `pos`, as in a direct run
        try:
            submitted = asyncio.run(self._fit_and_submit(started, creds, record, context, jobs))
        except VendorCallError as exc:
            if exc.kind in ("auth", "model_not_found"):
                if exc.kind == "auth":
                    self._settings.mark_vendor_suspended(run.tenant, creds.vendor, exc.message,
                                                         secret_version_id=creds.secret_version_id)
                code = "vendor_auth_failed" if exc.kind == "auth" else "vendor_model_not_found"
                return self._fail(started, code, f"{run.vendor} refused the batch: {exc.message}")
            raise DependencyUnavailable(f"The {run.vendor} batch API could not be reached; retried.",
                                        code="vendor_batch_unavailable") from exc
        except (ContextTooLarge, ContextTooSmall) as exc:
            return self._fail(started, exc.code, exc.message)
        if unknown:
            self._runs.record_outcomes(run.tenant, run.eval_run_id, unknown, started.usage)
        logger.info("vendor batch submitted", extra={
            "tenant": run.tenant, "eval_run_id": run.eval_run_id, "vendor": run.vendor,
            "vendor_batch_id": submitted.vendor_batch_id, "requests": len(submitted.custom_ids)})
        return "submitted"

    async def _fit_and_submit(self, run: EvalRun, creds: VendorCredentials, record: VendorBatchRecord,
                              context: EvalContextDoc, jobs: Sequence[tuple[QuestionRef, Question]]
                              ) -> VendorBatchRecord:
        model_name = record.model
        assert run.vendor is not None
        counter = self._counting_model(run.vendor, api_key=creds.api_key, base_url=creds.base_url, max_retries=2,
                                       timeout_seconds=60.0)
        try:
            fitted = await self._fit(run, creds, counter, model_name, context, [q for _, q in jobs])
        finally:
            await counter.aclose()
        custom_ids = {custom_id(i): ref.question_id for i, (ref, _) in enumerate(jobs)}
        requests = [BatchRequest(custom_id=custom_id(i), call=JudgeCall(
            model=model_name, shared_context=fitted.shared_context, prompt=build_question_prompt(q),
            response_schema=verdict_json_schema(), schema_name=VERDICT_SCHEMA_NAME,
            max_output_tokens=self._tuning.max_output_tokens, cache_key=run.eval_run_id, timeout_seconds=60.0))
            for i, (_, q) in enumerate(jobs)]
        client = self._clients(run.vendor, api_key=creds.api_key, base_url=creds.base_url)
        try:
            submitted = await client.submit(requests, metadata={"eval_run_id": run.eval_run_id})
        finally:
            await client.aclose()
        opened = record.model_copy(update={
            "status": "in_progress", "custom_ids": custom_ids, "vendor_batch_id": submitted.vendor_batch_id,
            "input_file_id": submitted.input_file_id, "submitted_at": iso(self._clock.now()),
            "context_report": fitted.report})
        await asyncio.to_thread(self._store.open_vendor_batch, opened)
        await asyncio.to_thread(self._runs.set_fields, run.tenant, run.eval_run_id,
                                {"vendor_batch_id": submitted.vendor_batch_id, "context": fitted.report},
                                when_status=("running",))
        return opened

    async def _fit(self, run: EvalRun, creds: VendorCredentials, counter: JudgeModel, model_name: str,
                   context: EvalContextDoc, questions: Sequence[Question]) -> FittedContext:
        """The run's context in the model's window, as a direct run would fit it (one prompt per question)."""
        learned = None
        if self._context_limits is not None:
            found = await asyncio.to_thread(self._context_limits.get, run.tenant, creds.vendor, creds.base_url,
                                            model_name)
            learned = found.limit_tokens if found is not None else None
        table = counter.context_window(model_name) if matches_known_model(model_name) else None
        assumed = assumed_window(model_name, learned=learned, table=table,
                                 override=self._tuning.context_window_overrides.get(model_name))

        async def count(shared: str, prompt: str) -> int | None:
            try:
                return await counter.count_tokens(model_name, shared, prompt)
            except VendorCallError as exc:
                if exc.kind == "context_overflow":
                    raise PromptOverWindow(exc.message, exc.stated_limit) from exc
                if exc.kind in ("auth", "model_not_found"):
                    raise
                return None  # counting is an optimisation: the calibrated estimate decides

        meter = TokenMeter(count, window=assumed.tokens, safety=self._tuning.estimate_safety,
                           known_limit=assumed.tokens if assumed.source == "learned" else None)
        fitter = ContextFitter(
            doc=context.doc, reload=context.reload, requested_threshold=run.threshold,
            render=lambda context_json: build_shared_context(run.session_id, run.eval_run_id, context_json),
            longest_prompt=max((build_question_prompt(q) for q in questions), key=len), meter=meter,
            output_tokens=self._tuning.max_output_tokens, model=model_name,
            min_threshold=self._tuning.min_threshold_bytes, window_source=assumed.source)
        return await fitter.fit(assumed.tokens)

    # ------------------------------------------------------------------------------------ poll

    def poll(self, *, limit: int = POLL_BATCH, budget_seconds: float = POLL_BUDGET_SECONDS) -> PollReport:
        """The scheduled pass over every open vendor batch (oldest first, within `budget_seconds`)."""
        records = self._store.open_vendor_batches(limit=limit)
        if not records:
            return PollReport()
        counts = asyncio.run(self._poll_all(records, time.monotonic() + budget_seconds))
        report = PollReport(open=len(records), **counts)
        logger.info("vendor batches polled", extra={"open": report.open, "finished": report.finished,
                                                    "cancelled": report.cancelled, "waiting": report.waiting,
                                                    "errors": report.errors})
        return report

    async def _poll_all(self, records: Sequence[VendorBatchRecord], until: float) -> dict[str, int]:
        counts = {"finished": 0, "cancelled": 0, "waiting": 0, "errors": 0}
        clients: dict[tuple[str, str], VendorBatchClients] = {}
        try:
            for record in records:
                if time.monotonic() > until:
                    break
                try:
                    outcome = await self._poll_one(record, clients)
                except (DomainError, VendorCallError) as exc:
                    counts["errors"] += 1
                    logger.warning("vendor batch poll failed; tried again next time", extra={
                        "tenant": record.tenant, "eval_run_id": record.eval_run_id,
                        "error_code": getattr(exc, "code", None) or getattr(exc, "kind", None)})
                    continue
                counts[outcome] += 1
        finally:
            for client in clients.values():
                await client.aclose()
        return counts

    async def _client(self, record: VendorBatchRecord, clients: dict[tuple[str, str], VendorBatchClients]
                      ) -> VendorBatchClients:
        key = (record.tenant, record.vendor)
        if key not in clients:
            creds = await asyncio.to_thread(self._settings.resolve_vendor_credentials, record.tenant, record.vendor)
            clients[key] = self._clients(record.vendor, api_key=creds.api_key, base_url=creds.base_url)
        return clients[key]

    async def _poll_one(self, record: VendorBatchRecord, clients: dict[tuple[str, str], VendorBatchClients]) -> str:
        run = await asyncio.to_thread(self._runs.get, record.tenant, record.eval_run_id)
        if run is None or run.deadline_at != record.attempt or record.vendor_batch_id is None:
            # The run is gone, or a rerun replaced this attempt: nothing will read these results.
            await asyncio.to_thread(self._store.close_vendor_batch, record, {"closed_reason": "superseded"})
            return "cancelled"
        client = await self._client(record, clients)
        batch_id, model = record.vendor_batch_id, record.model
        near_deadline = self._clock.now() >= parse_iso(run.deadline_at) - CANCEL_BEFORE_DEADLINE
        if (run.is_terminal or near_deadline) and not record.cancel_requested:
            await client.cancel(batch_id, model=model)
            record = record.model_copy(update={"cancel_requested": True})
            await asyncio.to_thread(self._store.update_vendor_batch, record, {"cancel_requested": True})
        status = await client.status(batch_id, model=model)
        if not status.ended:
            await asyncio.to_thread(self._store.update_vendor_batch, record,
                                    {"vendor_status": status.vendor_status, "request_counts": status.counts})
            return "waiting"
        results = await client.results(batch_id, model=model)
        if run.is_terminal:
            # Cancelled (or ended by a deadline) while the vendor worked: settle what it still billed.
            billed = sum((r.usage for r in results if r.result == "succeeded"), TokenUsage())
            await asyncio.to_thread(self._settle_stopped, run, billed)
            await asyncio.to_thread(self._store.close_vendor_batch, record, {"vendor_status": status.vendor_status})
            return "cancelled"
        expired = near_deadline or record.cancel_requested
        await asyncio.to_thread(self._finish, run, record, {r.custom_id: r for r in results}, [], expired)
        await asyncio.to_thread(self._store.close_vendor_batch, record, {"vendor_status": status.vendor_status,
                                                                        "request_counts": status.counts})
        return "finished"

    def _settle_stopped(self, run: EvalRun, billed: TokenUsage) -> None:
        current = self._runs.get(run.tenant, run.eval_run_id)
        if current is not None and current.is_terminal and current.finalized_at is None:
            self._lifecycle.finalize(current, usage=current.usage + billed)

    # ------------------------------------------------------------------------------------ endings

    def _finish(self, run: EvalRun, record: VendorBatchRecord, results: Mapping[str, RequestOutcome],
                extra_outcomes: Sequence[QuestionOutcome], window_closed: bool = False) -> str:
        known = self._questions.questions_for_run(run)
        whole_batch = results.get("*")
        outcomes: list[QuestionOutcome] = list(extra_outcomes)
        billed = TokenUsage()
        for cid, question_id in record.custom_ids.items():
            ref = next(r for r in run.questions if r.question_id == question_id)
            prior = run.outcome(question_id)
            result = results.get(cid) or whole_batch or RequestOutcome(custom_id=cid, result="errored",
                                                                     error_message="the vendor returned no result")
            if window_closed and result.result == "canceled":
                result = RequestOutcome(custom_id=cid, result="expired")
            billed = billed + result.usage
            outcomes.append(_outcome_of(ref, prior, result, known.get(question_id)))
        by_id = {o.question_id: o for o in outcomes}
        selected = [q for ref in run.questions if (q := known.get(ref.question_id)) is not None]
        verdicts: list[JudgeVerdict] = []
        for ref in run.questions:
            outcome = by_id.get(ref.question_id) or run.outcome(ref.question_id)
            if outcome.status == "scored" and outcome.judge_verdict is not None:
                verdicts.append(outcome.judge_verdict)
        result_payload = aggregate(run.eval_run_id, run.model or record.model, selected, verdicts, None) \
            if verdicts else None
        usage = run.usage + billed
        error: RunError | None = None
        if result_payload is not None:
            status = "succeeded"
        else:
            status = "failed"
            kinds = sorted({o.failure_reason.kind for o in outcomes if o.failure_reason is not None})
            code = "batch_expired" if kinds == ["batch_expired"] else "all_judges_failed"
            error = RunError(code=code, message=(
                "The vendor's 24 h batch window closed before any question was judged; rerun the run."
                if code == "batch_expired" else
                "No question of the batch produced a usable verdict; see the per-question reasons, then rerun."),
                details={"failures": kinds, "vendor_batch_id": record.vendor_batch_id})
        try:
            finished = self._runs.finish(run.tenant, run.eval_run_id, status=status, now=iso(self._clock.now()),
                                         usage=usage, result=result_payload, error=error, outcomes=outcomes,
                                         from_statuses=("running",), extra={"retrospective_status": "skipped"})
        except Conflict:
            self._settle_stopped(run, billed)
            return "cancelled"
        emit_run_status(status, runner=run.runner, vendor=run.vendor)
        self._announce(finished)
        self._lifecycle.finalize(finished)
        logger.info(f"batch-mode eval run {status}", extra={
            "tenant": run.tenant, "eval_run_id": run.eval_run_id, "vendor_batch_id": record.vendor_batch_id,
            "scored": len(verdicts), "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens})
        return status

    def _fail(self, run: EvalRun, code: str, message: str, *,
              from_statuses: tuple[str, ...] = ("running",)) -> str:
        logger.warning("batch-mode eval run failed before its batch was submitted",
                       extra={"tenant": run.tenant, "eval_run_id": run.eval_run_id, "error_code": code})
        try:
            finished = self._runs.finish(run.tenant, run.eval_run_id, status="failed", now=iso(self._clock.now()),
                                         usage=run.usage, error=RunError(code=code, message=message),
                                         from_statuses=from_statuses)
        except Conflict:
            return "cancelled"
        emit_run_status("failed", runner=run.runner, vendor=run.vendor)
        self._announce(finished)
        self._lifecycle.finalize(finished)
        return "failed"

    def _announce(self, run: EvalRun) -> None:
        """`SessionEvalCompleted` on EventBridge, the same detail the worker publishes for a direct run."""
        announce_completed(self._events, run)


def _failed(ref: QuestionRef, prior: QuestionOutcome, kind: FailureKind, message: str, *,
            status: QuestionStatus = "failed", usage: TokenUsage | None = None) -> QuestionOutcome:
    return QuestionOutcome(question_id=ref.question_id, category=ref.category, status=status,
                           failure_reason=FailureReason(kind=kind, message=message[:1000]),
                           usage=prior.usage + (usage or TokenUsage()), attempts=prior.attempts + 1)


def _outcome_of(ref: QuestionRef, prior: QuestionOutcome, result: RequestOutcome,
                question: Question | None) -> QuestionOutcome:
    if result.result != "succeeded":
        kind, message = failure_for(result)
        status: QuestionStatus = "cancelled" if kind == "cancelled" else "failed"
        return _failed(ref, prior, kind, message, status=status, usage=result.usage)
    if question is None:
        return _failed(ref, prior, "internal", "The question is not in the catalog.", usage=result.usage)
    parsed = parse_verdict(result.text, question)
    if isinstance(parsed, VerdictFailure):
        return _failed(ref, prior, "invalid_output", f"The batch answer is not a usable verdict: {parsed.reason}",
                       usage=result.usage)
    return QuestionOutcome(question_id=ref.question_id, category=ref.category, status="scored",
                           judge_verdict=parsed.verdict, usage=prior.usage + result.usage,
                           attempts=prior.attempts + 1)

