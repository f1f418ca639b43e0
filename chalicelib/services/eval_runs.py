"""Eval run dispatch to the SQS worker or a daemon, and the run read/cancel/rerun use cases.

Which runner serves a run is decided by the pure rules of `services/eval_runners.py` (the request,
the dialog's runner options, the dispatch plan); `EvalRunService` applies them with the settings,
the user's daemons, the run store and the job queue. Dispatch stores the run in one DynamoDB
transaction (session check + run + idempotency record + the spend ledger's admission, see
`services/spend.py`) and hands it off with one SQS message (or one daemon offer). Every terminal
transition made here (hand-off failure, cancel of a queued run, a deadline seen by a reader) goes
through the run lifecycle's finalizer (`services/run_lifecycle.py`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.adapters.run_store import DuplicateDispatch, DynamoRunStore, RunStateConflict, TransactItem
from chalicelib.domain.catalog import QuestionCatalog, ResolvedCatalog, enabled_view
from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    Forbidden,
    InvalidRequest,
    NotFound,
)
from chalicelib.domain.evaluation import FailureReason, QuestionOutcome, RunnerKind, VendorName
from chalicelib.domain.ids import new_id
from chalicelib.domain.json_depth import loads_bounded
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalJobMessage, EvalRun, EvalRunList, EvalRunView, QuestionRef, RunError, run_view
from chalicelib.domain.settings import EvalRunnerSettings
from chalicelib.domain.spend import RunAdmission
from chalicelib.judges.catalog import Question
from chalicelib.observability import emit_run_status, logger
from chalicelib.services.eval_runners import (
    AvailableDaemon,
    DispatchPlan,
    EvalRunnersView,
    EvalRunRequest,
    check_idempotency_key,
    plan_dispatch,
    runner_options,
    vendor_choice,
)
from chalicelib.services.run_lifecycle import RunLifecycle
from chalicelib.services.spend_admission import EvalRunEstimate, RunBudgeting

# A succeeded run may still hold failed questions (aggregation drops them): those can be rerun too.
RERUNNABLE_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "cancelled"})

# Ids minted by `new_id` (and anything a client could reasonably hold); longer or stranger path
# values cannot name a run, so they are a 404 without a DynamoDB call.
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SESSION_ID_LENGTH = 256


# ----------------------------------------------------------------------------------------- ports


class DaemonDirectory(Protocol):
    """The daemon side of dispatch: presence, job offers and cancel notifications."""

    def list_available(self, tenant: str, user: str) -> Sequence[AvailableDaemon]:
        """The user's daemons with a recent heartbeat, most recent first."""
        ...

    def offer_job(self, run: EvalRun, daemon_id: str) -> None:
        """Store the run's job for that daemon and push it when the daemon is connected."""
        ...

    def notify_cancel(self, run: EvalRun) -> None:
        """Tell the daemon holding the run's job to stop it."""
        ...

    def reconcile_run(self, run: EvalRun) -> EvalRun:
        """End an overdue daemon run `timed_out` before a reader sees it (no scheduler needed)."""
        ...


class RunnerSettingsSource(Protocol):
    def load_runner_settings(self, tenant: str) -> EvalRunnerSettings: ...


class JobQueue(Protocol):
    def send(self, message: EvalJobMessage) -> str: ...


class CatalogSource(Protocol):
    """The tenant's judge catalog as dispatch sees it (`chalicelib.services.catalog.CatalogService`)."""

    def current(self, tenant: str, *, fresh: bool = False) -> ResolvedCatalog: ...


SessionExists = Callable[[str, str], bool]


@dataclass(frozen=True)
class SessionFacts:
    """What a run copies from its session at dispatch (history): the repository, so the tenant-wide
    list and the analytics can filter and group by it, and the session's retention end (TTL)."""

    repository: str | None
    expires_at: int | None


# (tenant, session_id) → the session's facts, or None when there is no such session.
SessionFactsLookup = Callable[[str, str], SessionFacts | None]


# ---------------------------------------------------------------------------------------- models

class EvalRunAccepted(BaseModel):
    """202 body of a dispatch (and of an idempotent repeat of it)."""

    eval_run_id: str
    session_id: str
    status: str
    runner: RunnerKind
    vendor: VendorName | None
    model: str | None
    daemon_id: str | None = None
    questions: int
    threshold: int
    chain: bool
    created_at: str
    deadline_at: str
    catalog_version: int = Field(default=0, description="The judge catalog version the run judges.")
    trial: bool = Field(default=False, description="A try-it run of one catalog question.")


class RunListQuery(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2048)


# ----------------------------------------------------------------------------------------- rules


def check_run_cursor(tenant: str, session_id: str, cursor: str) -> None:
    """Refuse a tampered or foreign `next_cursor` before it reaches DynamoDB (which would fail the
    query with a validation error): it must be the run store's key of a run of this very list."""
    invalid = InvalidRequest("The cursor is not valid for this list; start again without it.",
                             code="invalid_cursor")
    try:
        key = loads_bounded(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise invalid from None
    if not isinstance(key, dict) or set(key) != {"pk", "sk", "gsi1pk", "gsi1sk"}:
        raise invalid
    values = [v.get("S") if isinstance(v, dict) and set(v) == {"S"} else None for v in key.values()]
    if not all(isinstance(v, str) for v in values):
        raise invalid
    if key["pk"]["S"] != f"TENANT#{tenant}" or key["gsi1pk"]["S"] != f"SESSIONRUNS#{tenant}#{session_id}" \
            or not key["sk"]["S"].startswith("RUN#"):
        raise invalid


def session_key(tenant: str, session_id: str) -> dict[str, str]:
    """The session metadata item (see `adapters/session_store.py`), checked inside the dispatch write."""
    return {"pk": f"TENANT#{tenant}", "sk": f"SESSION#{session_id}"}


def accepted(run: EvalRun) -> EvalRunAccepted:
    return EvalRunAccepted(eval_run_id=run.eval_run_id, session_id=run.session_id, status=run.status,
                           runner=run.runner, vendor=run.vendor, model=run.model, daemon_id=run.daemon_id,
                           questions=len(run.questions), threshold=run.threshold, chain=run.chain,
                           created_at=run.created_at, deadline_at=run.deadline_at,
                           catalog_version=run.catalog_version, trial=bool(run.trial_questions))


class DispatchFailed(DependencyUnavailable):
    """The run was stored but could not be handed to a runner; it is marked failed, never left queued."""

    code = "dispatch_failed"
    retry_after = 5


# --------------------------------------------------------------------------------------- service


class EvalRunService:
    def __init__(self, *, runs: DynamoRunStore, queue: JobQueue, settings: RunnerSettingsSource,
                 catalog: CatalogSource, daemons: Callable[[], DaemonDirectory], clock: Clock,
                 max_run_timeout_seconds: int, lifecycle: RunLifecycle, budgeting: RunBudgeting,
                 session_exists: SessionExists | None = None,
                 session_facts: SessionFactsLookup | None = None) -> None:
        self._runs = runs
        self._session_facts = session_facts
        self._lifecycle = lifecycle
        self._budgeting = budgeting
        self._queue = queue
        self._settings = settings
        self._catalog = catalog
        # A thunk: the daemon service is built (and required) only when a daemon route is taken.
        self._daemon_directory = daemons
        self._clock = clock
        self._max_timeout = max_run_timeout_seconds
        self._session_exists = session_exists

    # -- dialog --------------------------------------------------------------------------------
    def questions(self, principal: Principal) -> QuestionCatalog:
        """GET /eval/questions: the tenant's enabled judge catalog, in catalog order."""
        return enabled_view(self._catalog.current(principal.tenant))

    def _plan(self, principal: Principal, request: EvalRunRequest, settings: EvalRunnerSettings,
              trial: Question | None) -> DispatchPlan:
        catalog = self._catalog.current(principal.tenant)
        try:
            return plan_dispatch(request, settings, lambda: self._available_daemons(principal), catalog, trial=trial)
        except InvalidRequest as exc:
            # The catalog head is cached per container for a few seconds: a question an admin has just
            # added or enabled elsewhere deserves one fresh read before it is called unknown.
            if exc.code not in ("unknown_question", "question_disabled"):
                raise
            fresh = self._catalog.current(principal.tenant, fresh=True)
            if fresh.version == catalog.version:
                raise
            return plan_dispatch(request, settings, lambda: self._available_daemons(principal), fresh, trial=trial)

    def runners(self, principal: Principal) -> EvalRunnersView:
        settings = self._settings.load_runner_settings(principal.tenant)
        return runner_options(settings, self._available_daemons(principal))

    # -- dispatch ------------------------------------------------------------------------------
    def dispatch_eval_run(self, principal: Principal, session_id: str, request: EvalRunRequest, *,
                          idempotency_key: str | None = None, trial: Question | None = None) -> EvalRunAccepted:
        key = check_idempotency_key(idempotency_key)
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
            raise NotFound(f"No session '{session_id[:64]}' in this tenant; upload it first.",
                           code="session_not_found")
        settings = self._settings.load_runner_settings(principal.tenant)
        try:
            plan = self._plan(principal, request, settings, trial)
        except DomainError:
            # The settings or daemons may have changed since the first attempt of a retried request;
            # a repeat must still return the run it created.
            existing = self._runs.find_idempotent(principal.tenant, principal.user, key) if key else None
            if existing is None:
                raise
            return self._replay(principal, existing)

        facts = self._session_facts(principal.tenant, session_id) if self._session_facts else None
        if self._session_facts is not None and facts is None:
            raise NotFound(f"No session '{session_id[:64]}' in this tenant; upload it first.",
                           code="session_not_found")
        now = self._clock.now()
        timeout = min(settings.run_timeout_seconds, self._max_timeout)
        run = EvalRun(
            eval_run_id=new_id("evr"), tenant=principal.tenant, session_id=session_id, created_by=principal.user,
            runner=plan.choice.runner, vendor=plan.choice.vendor, model=plan.choice.model, status="queued",
            questions=[QuestionRef(question_id=q.id, category=q.category) for q in plan.questions],
            threshold=plan.threshold, chain=plan.chain, created_at=iso(now),
            deadline_at=iso(now + timedelta(seconds=timeout)), run_timeout_seconds=timeout,
            daemon_id=plan.choice.daemon_id, idempotency_key=key, catalog_version=plan.catalog_version,
            trial_questions=plan.questions if plan.trial else None,
            repository=facts.repository if facts else None, expires_at=facts.expires_at if facts else None)
        try:
            run = self._admit_new(run, plan, request.quote)
        except DuplicateDispatch as dup:
            return self._replay(principal, dup.eval_run_id)
        logger.info("eval run dispatched", extra={"eval_run_id": run.eval_run_id, "runner": run.runner,
                                                  "vendor": run.vendor, "questions": len(run.questions),
                                                  "catalog_version": run.catalog_version})
        emit_run_status("queued", runner=run.runner, vendor=run.vendor)
        self._hand_off(run, kind="run", now=now)
        return accepted(run)

    def _admit_new(self, run: EvalRun, plan: DispatchPlan, quote: str | None) -> EvalRun:
        """The spend seam of dispatch (`services/spend_admission.py`): the run, its idempotency record
        and its admission into the tenant's spend ledger (quota slot, budget reservation) commit in one
        transaction, or nothing is stored."""

        def create(admitted: EvalRun, session_revision: int | None, writes: list[TransactItem]) -> None:
            self._runs.create(admitted, session_key=session_key(run.tenant, run.session_id),
                              session_revision=session_revision, extra_writes=writes)

        return self._budgeting.admit_new(run, plan.questions, quote=quote, retrospective=not plan.trial,
                                         create=create)

    def estimate_eval_run(self, principal: Principal, session_id: str, request: EvalRunRequest, *,
                          trial: Question | None = None) -> EvalRunEstimate:
        """POST /sessions/{id}/eval-runs/estimate: the same plan a dispatch would make, costed; nothing stored
        but the quote."""
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
            raise NotFound(f"No session '{session_id[:64]}' in this tenant; upload it first.",
                           code="session_not_found")
        settings = self._settings.load_runner_settings(principal.tenant)
        plan = self._plan(principal, request, settings, trial)
        now = self._clock.now()
        timeout = min(settings.run_timeout_seconds, self._max_timeout)
        draft = EvalRun(
            eval_run_id="evr_estimate", tenant=principal.tenant, session_id=session_id, created_by=principal.user,
            runner=plan.choice.runner, vendor=plan.choice.vendor, model=plan.choice.model,
            questions=[QuestionRef(question_id=q.id, category=q.category) for q in plan.questions],
            threshold=plan.threshold, chain=plan.chain, created_at=iso(now),
            deadline_at=iso(now + timedelta(seconds=timeout)), run_timeout_seconds=timeout,
            catalog_version=plan.catalog_version)
        return self._budgeting.estimate(draft, plan.questions, retrospective=not plan.trial)

    def _replay(self, principal: Principal, run_id: str) -> EvalRunAccepted:
        run = self._runs.require(principal.tenant, run_id)
        if run.status == "failed" and run.error is not None and run.error.code == "dispatch_failed":
            # The first attempt stored the run but could not enqueue it (503); the client's retry
            # with the same key is the natural moment to try the hand-off again.
            run = self._reopen(run, self._runs_pending(run), daemon_id=run.daemon_id)
            self._hand_off(run, kind="run", now=self._clock.now())
        return accepted(run)

    def _hand_off(self, run: EvalRun, *, kind: str, now: datetime) -> None:
        try:
            if run.runner == "server":
                self._queue.send(EvalJobMessage(tenant=run.tenant, eval_run_id=run.eval_run_id, kind=kind,
                                                dispatched_at=iso(now), mode=run.mode))
            else:
                if run.daemon_id is None:  # pragma: no cover - the daemon route always picks one
                    raise RuntimeError("daemon run without a daemon")
                self._daemons().offer_job(run, run.daemon_id)
        except Exception as exc:  # whatever failed, the run must not stay queued
            self._mark_dispatch_failed(run, exc)
            if isinstance(exc, DomainError) and exc.status < 500:
                raise
            raise DispatchFailed("The evaluation could not be queued; retry the request (with the same "
                                 "Idempotency-Key) in a few seconds.",
                                 details={"eval_run_id": run.eval_run_id}) from None

    def _mark_dispatch_failed(self, run: EvalRun, exc: Exception) -> None:
        logger.error("eval run hand-off failed", extra={"eval_run_id": run.eval_run_id, "runner": run.runner,
                                                        "error_type": type(exc).__name__})
        error = RunError(code="dispatch_failed", message="The run could not be handed to a runner; retry the "
                                                         "dispatch with the same Idempotency-Key, or rerun it.")
        try:
            failed = self._runs.finish(run.tenant, run.eval_run_id, status="failed", now=iso(self._clock.now()),
                                       usage=run.usage, error=error, from_statuses=("queued",))
        except Conflict:
            return  # something already moved it on (a worker, a cancel): nothing is stuck
        except DomainError:
            logger.error("could not mark an undispatched run failed", extra={"eval_run_id": run.eval_run_id})
            return
        self._lifecycle.finalize_quietly(failed)

    # -- reads ---------------------------------------------------------------------------------
    def _load(self, principal: Principal, run_id: str) -> EvalRun:
        if not _RUN_ID.match(run_id):
            raise NotFound(f"No eval run '{run_id[:64]}' in this tenant.", code="eval_run_not_found")
        return self._runs.require(principal.tenant, run_id)

    def get_eval_run(self, principal: Principal, run_id: str) -> EvalRunView:
        return run_view(self._reconciled(self._load(principal, run_id)))

    def _reconciled(self, run: EvalRun) -> EvalRun:
        """Readers never see a run stuck past its deadline (whoever was running it is gone), and a
        terminal run whose finalization was interrupted is finalized on the way."""
        return self._lifecycle.reconcile(run)

    def list_session_runs(self, principal: Principal, session_id: str, *, limit: int = 50,
                          cursor: str | None = None) -> EvalRunList:
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
            raise NotFound("No such session in this tenant.", code="session_not_found")
        if cursor is not None:
            check_run_cursor(principal.tenant, session_id, cursor)
        runs, next_cursor = self._runs.list_for_session(principal.tenant, session_id, limit=limit, cursor=cursor)
        # Runs prove the session exists; only an empty first page needs the extra lookup, so
        # another tenant's session id is a 404 rather than an empty list.
        if not runs and cursor is None and self._session_exists is not None \
                and not self._session_exists(principal.tenant, session_id):
            raise NotFound(f"No session '{session_id[:64]}' in this tenant.", code="session_not_found")
        return EvalRunList(items=[run_view(self._reconciled(r)) for r in runs], next_cursor=next_cursor)

    # -- cancel / rerun ------------------------------------------------------------------------
    @staticmethod
    def _authorize_change(principal: Principal, run: EvalRun, action: str) -> None:
        if principal.user != run.created_by and not principal.is_admin:
            raise Forbidden(f"Only the user who started this eval run or a tenant admin may {action} it.",
                            code="not_run_owner")

    def cancel_eval_run(self, principal: Principal, run_id: str) -> EvalRunView:
        run = self._load(principal, run_id)
        self._authorize_change(principal, run, "cancel")
        if run.is_terminal:
            raise _already_finished(run.status)
        unfinished = [QuestionOutcome(question_id=o.question_id, category=o.category, status="cancelled",
                                      usage=o.usage,
                                      usage_reported=o.usage_reported, attempts=o.attempts, latency_ms=o.latency_ms,
                                      failure_reason=FailureReason(kind="cancelled",
                                                                   message=f"Cancelled by {principal.user}."))
                      for o in (run.outcome(q.question_id) for q in run.questions) if not o.is_terminal]
        try:
            # Only from the status seen: who finalizes depends on it (a worker may just have started).
            cancelled = self._runs.cancel(principal.tenant, run_id, now=iso(self._clock.now()),
                                          message=f"Cancelled by {principal.user}.", outcomes=unfinished,
                                          from_statuses=(run.status,))
        except RunStateConflict as exc:
            status = str((exc.details or {}).get("status", "finished"))
            if status in ("queued", "running"):  # it moved on between our read and write: again
                return self.cancel_eval_run(principal, run_id)
            raise _already_finished(status) from None
        logger.info("eval run cancelled", extra={"eval_run_id": run_id, "runner": run.runner})
        emit_run_status("cancelled", runner=run.runner, vendor=run.vendor)
        if cancelled.runner == "daemon" or run.status == "queued":
            # No judge of this run can bill any more (a daemon's later posts are refused); a running
            # server run is finalized by its worker when the in-flight judges have stopped.
            cancelled = self._lifecycle.finalize_quietly(cancelled)
        if cancelled.runner == "daemon":
            try:
                self._daemons().notify_cancel(cancelled)
            except Exception as exc:  # the cancel is recorded; the daemon sees it next time
                logger.warning("daemon cancel notification failed",
                               extra={"eval_run_id": run_id, "error_type": type(exc).__name__})
        return run_view(cancelled)

    def rerun_eval_run(self, principal: Principal, run_id: str) -> EvalRunView:
        run = self._load(principal, run_id)
        self._authorize_change(principal, run, "rerun")
        if run.status not in RERUNNABLE_STATUSES:
            raise Conflict(f"The eval run is {run.status}; only finished runs can be rerun.",
                           code="rerun_not_allowed", details={"status": run.status})
        pending = self._runs_pending(run)
        if not pending:
            raise Conflict("Every question of this run already has a verdict; there is nothing to rerun.",
                           code="nothing_to_rerun", details={"status": run.status})
        daemon_id = run.daemon_id
        if run.runner == "server":
            settings = self._settings.load_runner_settings(principal.tenant)
            if run.vendor is None:  # pragma: no cover - server runs always carry their vendor
                raise Conflict("This run has no vendor to rerun on.", code="vendor_not_enabled")
            vendor_choice(settings, run.vendor)
        else:
            daemons = self._available_daemons(principal)
            ids = [d.daemon_id for d in daemons]
            if not ids:
                raise Conflict("You have no available daemon to rerun this evaluation on; start your daemon.",
                               code="no_daemon_available")
            daemon_id = run.daemon_id if run.daemon_id in ids else ids[0]
        reopened = self._reopen(run, pending, daemon_id=daemon_id)
        logger.info("eval run rerun", extra={"eval_run_id": run_id, "questions": len(pending)})
        self._hand_off(reopened, kind="rerun", now=self._clock.now())
        return run_view(reopened)

    @staticmethod
    def _runs_pending(run: EvalRun) -> list[QuestionRef]:
        pending = set(run.pending_question_ids())
        return [q for q in run.questions if q.question_id in pending]

    def _reopen(self, run: EvalRun, pending: list[QuestionRef], *, daemon_id: str | None) -> EvalRun:
        # The previous attempt settles first (its slot and reservation); the reopen then admits the
        # new attempt into the spend ledger in the same transaction as the status change.
        if run.finalized_at is None:
            if not self._lifecycle.finalization_due(run, self._clock.now()):
                raise Conflict("The run is still stopping (its judges are being cancelled); retry in a few "
                               "seconds.", code="run_still_stopping", details={"status": run.status})
            run = self._lifecycle.finalize(run)
        deadline = self._clock.now() + timedelta(seconds=run.run_timeout_seconds)
        # Usage and attempts carry over: a rerun adds to what the earlier attempts already billed.
        outcomes = [QuestionOutcome(question_id=q.question_id, category=q.category, status="queued",
                                    usage=run.outcome(q.question_id).usage,
                                    attempts=run.outcome(q.question_id).attempts)
                    for q in pending]

        def commit(admission: RunAdmission, writes: list[TransactItem]) -> EvalRun:
            return self._runs.reopen_for_rerun(
                run.tenant, run.eval_run_id, deadline_at=iso(deadline), outcomes=outcomes,
                expected_version=run.version,
                extra_fields={"admission": admission.model_dump(mode="json"), "unreported_cost_micros": 0},
                extra_writes=writes)

        reopened = self._budgeting.admit_reopen(run, [q.question_id for q in pending],
                                                deadline_epoch=int(deadline.timestamp()), reopen=commit)
        if daemon_id != reopened.daemon_id:
            reopened = self._runs.set_fields(run.tenant, run.eval_run_id, {"daemon_id": daemon_id},
                                             when_status=("queued",))
        return reopened

    # -- daemons -------------------------------------------------------------------------------
    def _daemons(self) -> DaemonDirectory:
        return self._daemon_directory()

    def _available_daemons(self, principal: Principal) -> Sequence[AvailableDaemon]:
        return self._daemons().list_available(principal.tenant, principal.user)


def _already_finished(status: str) -> Conflict:
    return Conflict(f"The eval run already ended ({status}); there is nothing to cancel.",
                    code="run_already_finished", details={"status": status})
