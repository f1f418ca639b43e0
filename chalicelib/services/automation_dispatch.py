"""Runs nobody clicked: how rule and batch runs are planned, created, and started when a slot frees.

A rule or batch run is created `queued` and `delayed` (waiting for an active-run slot) together with
its place in the tenant's waiting line, and then *promoted*: it takes a slot through the spend ledger
(`RunBudgeting.admit_existing`, the spend seam dispatch uses: its quota slot and the budget reservation
of its upper bound) in one transaction with leaving the line, gets
its deadline from that moment, and is handed to the worker. When the active-run quota is full the
ledger refuses and the run simply keeps waiting (shown `queued`, `delayed: true`, like Langfuse's
"Delayed"); it is promoted again when a run of the tenant is finalized (`AutomationParticipant`,
the run lifecycle's extension point) and, as a safety net, by the scheduled poller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.adapters.automation_store import DynamoAutomationStore, TransactItem, WaitingRun
from chalicelib.adapters.run_store import DynamoRunStore, RunStateConflict
from chalicelib.domain.automation import RunMode, RunTrigger, rule_of
from chalicelib.domain.clock import Clock, iso, parse_iso
from chalicelib.domain.errors import Conflict, DomainError
from chalicelib.domain.eval_batches import BatchRunEntry, RunShape
from chalicelib.domain.evaluation import FailureReason, QuestionOutcome
from chalicelib.domain.ids import new_id
from chalicelib.domain.runs import EvalJobMessage, EvalRun, QuestionRef, RunError
from chalicelib.domain.settings import EvalRunnerSettings
from chalicelib.domain.spend import RunAdmission
from chalicelib.domain.vendor_batches import VENDOR_BATCH_WINDOW_SECONDS
from chalicelib.observability import emit_run_status, logger
from chalicelib.services.automation_budget import waits_for_reservations
from chalicelib.services.eval_runners import DispatchPlan, EvalRunRequest, plan_dispatch
from chalicelib.services.eval_runs import CatalogSource, JobQueue, RunnerSettingsSource
from chalicelib.services.run_lifecycle import Contribution, Finalization, RunLifecycle
from chalicelib.services.spend_admission import RunBudgeting

# A run that found no slot for this long gives up (the poller ends it `timed_out`).
MAX_WAIT_SECONDS = 24 * 3600
# Runs started per promotion pass; the next finalization (or poll) starts more.
PROMOTE_BATCH = 25


@dataclass(frozen=True)
class AutomatedPlan:
    """The request resolved once for many runs: runner choice, questions, and the runs' shape."""

    plan: DispatchPlan
    shape: RunShape


@dataclass(frozen=True)
class PromotionReport:
    started: int = 0
    waiting_blocked: int = 0
    refused: int = 0


class AutomatedDispatch:
    def __init__(self, *, runs: DynamoRunStore, store: DynamoAutomationStore, queue: JobQueue,
                 settings: RunnerSettingsSource, catalog: CatalogSource, budgeting: RunBudgeting,
                 lifecycle: RunLifecycle,
                 clock: Clock, max_run_timeout_seconds: int,
                 on_batch_entries: Callable[[str, str, Mapping[str, BatchRunEntry]], None] | None = None,
                 on_refused: Callable[[EvalRun, str], None] | None = None) -> None:
        self._runs = runs
        self._store = store
        self._queue = queue
        self._settings = settings
        self._catalog = catalog
        self._budgeting = budgeting
        self._lifecycle = lifecycle
        self._clock = clock
        self._max_timeout = max_run_timeout_seconds
        self._on_batch_entries = on_batch_entries
        self._on_refused = on_refused
        # Ending a run (a refusal, a failed hand-off) finalizes it, and finalization promotes the tenant's
        # waiting runs: inside a promotion of the same tenant that nested pass is skipped (the outer
        # loop goes on), so a long line of refusals never recurses.
        self._promoting = threading.local()

    # -- planning ------------------------------------------------------------------------------------
    def plan(self, tenant: str, request: EvalRunRequest, *, mode: RunMode,
             settings: EvalRunnerSettings | None = None) -> AutomatedPlan:
        """Resolve vendor and questions like a manual dispatch on the server runner (400s and 409s alike)."""
        settings = settings or self._settings.load_runner_settings(tenant)
        server = request.model_copy(update={"runner": "server"})
        plan = plan_dispatch(server, settings, lambda: (), self._catalog.current(tenant))
        timeout = VENDOR_BATCH_WINDOW_SECONDS if mode == "batch" else min(settings.run_timeout_seconds,
                                                                              self._max_timeout)
        shape = RunShape(mode=mode, vendor=plan.choice.vendor, model=plan.choice.model,
                         questions=[QuestionRef(question_id=q.id, category=q.category) for q in plan.questions],
                         threshold=plan.threshold, chain=plan.chain, catalog_version=plan.catalog_version,
                         run_timeout_seconds=timeout)
        return AutomatedPlan(plan=plan, shape=shape)

    def new_run(self, tenant: str, session_id: str, user: str, shape: RunShape, *, trigger: RunTrigger,
                batch_id: str | None = None, run_id: str | None = None, now: datetime | None = None) -> EvalRun:
        """A delayed run: queued, not admitted, waiting at most `MAX_WAIT_SECONDS` for a slot."""
        now = now or self._clock.now()
        return EvalRun(
            eval_run_id=run_id or new_id("evr"), tenant=tenant, session_id=session_id, created_by=user,
            runner="server", vendor=shape.vendor, model=shape.model, status="queued",
            questions=list(shape.questions), threshold=shape.threshold, chain=shape.chain, created_at=iso(now),
            deadline_at=iso(now + timedelta(seconds=MAX_WAIT_SECONDS)),
            run_timeout_seconds=shape.run_timeout_seconds, catalog_version=shape.catalog_version,
            trigger=trigger, batch_id=batch_id, mode=shape.mode, delayed=True)

    @staticmethod
    def waiting_of(run: EvalRun) -> WaitingRun:
        return WaitingRun(tenant=run.tenant, eval_run_id=run.eval_run_id, created_at=run.created_at,
                          user=run.created_by)

    # -- creation ------------------------------------------------------------------------------------
    def create_with(self, run: EvalRun, extra_writes: Sequence[TransactItem]) -> None:
        """One run, its place in the waiting line and the caller's items (a rule's marker), atomically;
        the session must still exist. Raises ExtraWriteRefused when one of the caller's items refuses."""
        from chalicelib.services.eval_runs import session_key

        self._runs.create(run, session_key=session_key(run.tenant, run.session_id),
                          extra_writes=[self._store.wait_write(self.waiting_of(run)), *extra_writes])
        logger.info("automated eval run created", extra={
            "tenant": run.tenant, "eval_run_id": run.eval_run_id, "trigger": run.trigger.kind,
            "rule_id": rule_of(run.trigger), "batch_id": run.batch_id, "mode": run.mode})

    def create_many(self, runs: Sequence[EvalRun]) -> list[str]:
        """Runs of a batch chunk, each with its place in the line (a retried chunk stores the rest)."""
        companions = {run.eval_run_id: [self._store.wait_write(self.waiting_of(run))] for run in runs}
        return self._runs.create_many(runs, companions=companions)

    # -- promotion -------------------------------------------------------------------------------------
    def promote(self, tenant: str, *, limit: int = PROMOTE_BATCH) -> PromotionReport:
        """Start the tenant's waiting runs, oldest first, while the ledger gives them slots."""
        active: set[str] = self._promoting.__dict__.setdefault("tenants", set())
        if tenant in active:
            return PromotionReport()
        active.add(tenant)
        try:
            return self._promote(tenant, limit)
        finally:
            active.discard(tenant)

    def _promote(self, tenant: str, limit: int) -> PromotionReport:
        started = blocked = refused = 0
        blocked_users: set[str] = set()
        for waiting in self._store.waiting(tenant, limit=limit * 2):
            if started >= limit:
                break
            if waiting.user in blocked_users:
                blocked += 1
                continue
            run = self._runs.get(tenant, waiting.eval_run_id)
            if run is None or run.is_terminal or not run.delayed:
                self._store.remove_waiting(waiting)  # cancelled while waiting, or started elsewhere
                continue
            try:
                promoted = self._take_slot(run, waiting)
            except RunStateConflict:
                self._store.remove_waiting(waiting)
                continue
            except DomainError as exc:
                if exc.status == 429:  # the active-run quota is full: keep waiting
                    scope = str((exc.details or {}).get("scope", ""))
                    blocked += 1
                    if scope == "user":
                        blocked_users.add(waiting.user)
                        continue
                    break
                if exc.status == 402 and waits_for_reservations(exc):
                    # Other runs' reservations fill the budget; they settle (mostly returned) as they end.
                    blocked += 1
                    if str((exc.details or {}).get("budget")) == "user_daily":
                        blocked_users.add(waiting.user)
                        continue
                    break
                if exc.status == 402:  # the budget is spent: this run will not get in
                    refused += 1
                    self._refuse(run, waiting, exc)
                    continue
                raise
            self._hand_off(promoted)
            started += 1
        if started or refused:
            logger.info("waiting eval runs promoted", extra={"tenant": tenant, "started": started,
                                                             "still_blocked": blocked, "refused": refused})
        return PromotionReport(started=started, waiting_blocked=blocked, refused=refused)

    def promote_quietly(self, tenant: str) -> PromotionReport:
        """`promote` where a failure must not undo the caller's work (it is retried by the poller)."""
        try:
            return self.promote(tenant)
        except DomainError as exc:
            logger.warning("promotion of waiting runs deferred", extra={"tenant": tenant, "error_code": exc.code})
            return PromotionReport()

    def _take_slot(self, run: EvalRun, waiting: WaitingRun) -> EvalRun:
        now = self._clock.now()
        deadline = now + timedelta(seconds=run.run_timeout_seconds)

        def commit(admission: RunAdmission, writes: list[TransactItem]) -> EvalRun:
            fields: dict[str, Any] = {"admission": admission.model_dump(mode="json")}
            return self._runs.promote_delayed(run.tenant, run.eval_run_id, deadline_at=iso(deadline), fields=fields,
                                              extra_writes=[*writes, self._store.unwait_write(waiting)])

        return self._budgeting.admit_existing(run, deadline_epoch=int(deadline.timestamp()), commit=commit)

    def _refuse(self, run: EvalRun, waiting: WaitingRun, exc: DomainError) -> None:
        """The ledger will not take this run (a budget): it fails with that code and leaves the line."""
        self._fail_waiting(run, RunError(code=exc.code, message=exc.message, details=exc.details))
        self._store.remove_waiting(waiting)
        if self._on_refused is not None:
            self._on_refused(run, exc.code)

    def _fail_waiting(self, run: EvalRun, error: RunError, *, status: str = "failed") -> EvalRun | None:
        reason = FailureReason(kind="timed_out" if status == "timed_out" else "internal", message=error.message[:1000])
        outcomes = [QuestionOutcome(question_id=q.question_id, category=q.category,
                                    status="timed_out" if status == "timed_out" else "failed", failure_reason=reason)
                    for q in run.questions]
        try:
            ended = self._runs.finish(run.tenant, run.eval_run_id, status=status, now=iso(self._clock.now()),
                                      usage=run.usage, error=error, outcomes=outcomes, from_statuses=("queued",))
        except Conflict:
            return None
        emit_run_status(status, runner=run.runner, vendor=run.vendor)
        return self._lifecycle.finalize_quietly(ended)

    def _hand_off(self, run: EvalRun) -> None:
        now = self._clock.now()
        try:
            self._queue.send(EvalJobMessage(tenant=run.tenant, eval_run_id=run.eval_run_id, kind="run",
                                            dispatched_at=iso(now), mode=run.mode))
        except Exception as exc:  # whatever failed, the run must not stay queued with a slot
            logger.error("automated run hand-off failed", extra={"eval_run_id": run.eval_run_id,
                                                                 "error_type": type(exc).__name__})
            error = RunError(code="dispatch_failed", message="The run could not be handed to the worker; rerun it.")
            try:
                failed = self._runs.finish(run.tenant, run.eval_run_id, status="failed", now=iso(now),
                                           usage=run.usage, error=error, from_statuses=("queued",))
            except DomainError:
                return
            self._lifecycle.finalize_quietly(failed)
            return
        emit_run_status("queued", runner=run.runner, vendor=run.vendor)
        if run.batch_id is not None and self._on_batch_entries is not None:
            self._on_batch_entries(run.tenant, run.batch_id, {run.eval_run_id: BatchRunEntry(s="queued")})

    # -- the safety net --------------------------------------------------------------------------------
    def expire_overdue_waiting(self, tenant: str) -> int:
        """Runs that waited `MAX_WAIT_SECONDS` without a slot end `timed_out`."""
        now = self._clock.now()
        expired = 0
        for waiting in self._store.waiting(tenant, limit=PROMOTE_BATCH):
            run = self._runs.get(tenant, waiting.eval_run_id)
            if run is None or run.is_terminal or not run.delayed:
                self._store.remove_waiting(waiting)
                continue
            if now < parse_iso(run.deadline_at):
                break  # oldest first: the rest waited less
            error = RunError(code="no_slot_in_time",
                             message="The run waited 24 hours for an active-run slot and never got one; ask an admin "
                                     "to raise the active-run quota, or rerun it.")
            self._fail_waiting(run, error, status="timed_out")
            self._store.remove_waiting(waiting)
            expired += 1
        return expired


class AutomationParticipant:
    """The run lifecycle's automation plug-in: when any run of a tenant is finalized, a slot may have
    freed, so the tenant's waiting runs are promoted; a batch run's entry records its end."""

    name = "automation"

    def __init__(self, dispatch: Callable[[], AutomatedDispatch],
                 record_batch_entry: Callable[[str, str, Mapping[str, BatchRunEntry]], None]) -> None:
        self._dispatch = dispatch
        self._record = record_batch_entry

    def contribute(self, final: Finalization, *, attempt: int, refused: Mapping[str, Any] | None) -> Contribution:
        return Contribution()  # nothing of ours must commit with the run; see after_finalized

    def after_finalized(self, final: Finalization) -> None:
        run = final.run
        if run.batch_id is not None:
            self._record(run.tenant, run.batch_id, {run.eval_run_id: batch_entry_of(run)})
        if run.runner == "daemon":
            # A daemon's result may arrive over the WebSocket, whose function may not touch the job queue
            # (least privilege); the slot it frees is used by the scheduled poller, within a minute.
            return
        self._dispatch().promote_quietly(run.tenant)


def batch_entry_of(run: EvalRun) -> BatchRunEntry:
    """Where a run is, as its batch records it (its settled cost from the spend participant)."""
    from chalicelib.domain.spend import usd_to_micros

    cost = run.cost
    micros = usd_to_micros(cost.usd) if cost is not None and cost.usd is not None else None
    status = "delayed" if run.delayed and run.status == "queued" else run.status
    return BatchRunEntry(s=status, c=micros, f=run.finished_at, priced=cost.priced if cost is not None else True)
