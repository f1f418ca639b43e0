"""Eval run dispatch: the eval dialog's runner rules, dispatch to the SQS worker or a daemon, and the
run read/cancel/rerun use cases.

The rules (`runner_options`, `choose_runner`, `plan_dispatch`) are pure so they are unit-tested
without AWS; `EvalRunService` applies them with the settings, the user's daemons, the run store and
the job queue. Dispatch stores the run in one DynamoDB transaction (session check + run +
idempotency record + the spend ledger's admission, see `services/spend.py`) and hands it off with
one SQS message (or one daemon offer). Every terminal transition made here (hand-off failure,
cancel of a queued run, a deadline seen by a reader) goes through the run lifecycle's finalizer
(`services/run_lifecycle.py`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from chalicelib.adapters.run_store import DuplicateDispatch, DynamoRunStore, RunStateConflict, TransactItem
from chalicelib.domain.catalog import QuestionCatalog, ResolvedCatalog, enabled_view
from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.compaction import DEFAULT_THRESHOLD_BYTES, MAX_THRESHOLD_BYTES, MIN_THRESHOLD_BYTES
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
from chalicelib.domain.settings import VENDORS, EvalRunnerSettings
from chalicelib.domain.spend import RunAdmission
from chalicelib.judges.catalog import Question, select_questions
from chalicelib.observability import emit_run_status, logger
from chalicelib.services.run_lifecycle import RunLifecycle
from chalicelib.services.spend_admission import EvalRunEstimate, RunBudgeting

# The same bounds as GET /sessions/{id}/eval-context (0 truncates every tool output to its marker).
DEFAULT_THRESHOLD = DEFAULT_THRESHOLD_BYTES
MIN_THRESHOLD = MIN_THRESHOLD_BYTES
MAX_THRESHOLD = MAX_THRESHOLD_BYTES
MAX_SELECTION_TOKENS = 64
MAX_IDEMPOTENCY_KEY_LENGTH = 128
# A succeeded run may still hold failed questions (aggregation drops them): those can be rerun too.
RERUNNABLE_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "cancelled"})

# Idempotency keys land in a DynamoDB sort key and in logs: printable, no spaces or separators
# that could be confused with our own key syntax ('#').
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:~+/=-]{1,128}$")
# Ids minted by `new_id` (and anything a client could reasonably hold); longer or stranger path
# values cannot name a run, so they are a 404 without a DynamoDB call.
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SESSION_ID_LENGTH = 256


# ----------------------------------------------------------------------------------------- ports


class AvailableDaemon(Protocol):
    """What dispatch needs of one of the user's available daemons (the daemon service's DaemonInfo)."""

    @property
    def daemon_id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def last_seen_at(self) -> str | None: ...


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

SelectionToken = Annotated[str, Field(min_length=1, max_length=200)]


class EvalRunRequest(BaseModel):
    """POST /sessions/{session_id}/eval-runs. Every field is optional; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    vendor: VendorName | None = Field(
        default=None, description="Required when both vendors are enabled (unless runner is 'daemon').")
    runner: RunnerKind | None = Field(
        default=None, description="'server' (tenant vendor) or 'daemon' (your own daemon); default: the "
                                  "server when a vendor is enabled, else your daemon.")
    questions: list[SelectionToken] | None = Field(
        default=None, max_length=MAX_SELECTION_TOKENS,
        description="Question ids or category names of the tenant's judge catalog to run (default: every "
                    "enabled question; GET /eval/questions).")
    skip: list[SelectionToken] | None = Field(
        default=None, max_length=MAX_SELECTION_TOKENS,
        description="Question ids or category names to leave out; not together with 'questions'.")
    chain: StrictBool = Field(default=False, description="Judge the whole session chain (parents first).")
    threshold: StrictInt | None = Field(
        default=None, description=f"Tool-output truncation threshold in bytes, {MIN_THRESHOLD}-{MAX_THRESHOLD} "
                                  f"(default {DEFAULT_THRESHOLD}).")
    quote: str | None = Field(
        default=None, max_length=256,
        description="The `quote` of an estimate of this same request (POST …/eval-runs/estimate, 15 minutes): "
                    "the run reserves exactly that estimate without estimating again. Ignored when stale.")


class ServerRunnerOptions(BaseModel):
    model_config = ConfigDict(defer_build=True)

    vendors: list[VendorName]
    vendor_required: bool
    default_vendor: VendorName | None
    models: dict[str, str] = Field(default_factory=dict,
                                   description="The judge model each offered vendor runs (extension).")


class DaemonEntry(BaseModel):
    model_config = ConfigDict(defer_build=True)

    daemon_id: str
    name: str
    last_seen_at: str | None


class DaemonRunnerOptions(BaseModel):
    model_config = ConfigDict(defer_build=True)

    available: bool
    daemons: list[DaemonEntry]


class RunButton(BaseModel):
    model_config = ConfigDict(defer_build=True)

    visible: bool
    routes: list[RunnerKind]


class EvalRunnersView(BaseModel):
    """GET /eval/runners: what the eval dialog shows this user."""

    model_config = ConfigDict(defer_build=True)

    server: ServerRunnerOptions
    daemon: DaemonRunnerOptions
    run_button: RunButton


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


def offered_vendors(settings: EvalRunnerSettings) -> list[VendorName]:
    """Vendors a user may pick: a stored key and a model, not suspended (canonical order)."""
    return list(settings.usable_vendors)


def runner_options(settings: EvalRunnerSettings, daemons: Sequence[AvailableDaemon]) -> EvalRunnersView:
    """The seed's dialog rules: one vendor → implicit; two → the user picks; none → daemon only;
    no vendor and no daemon → the Run button is hidden."""
    vendors = offered_vendors(settings)
    routes: list[RunnerKind] = []
    if vendors:
        routes.append("server")
    if daemons:
        routes.append("daemon")
    models = {v: m for v in vendors if (m := settings.vendor(v).model) is not None}
    return EvalRunnersView(
        server=ServerRunnerOptions(vendors=vendors, vendor_required=len(vendors) > 1,
                                   default_vendor=vendors[0] if len(vendors) == 1 else None, models=models),
        daemon=DaemonRunnerOptions(available=bool(daemons), daemons=[
            DaemonEntry(daemon_id=d.daemon_id, name=d.name, last_seen_at=d.last_seen_at) for d in daemons]),
        run_button=RunButton(visible=bool(routes), routes=routes))


@dataclass(frozen=True)
class RunnerChoice:
    runner: RunnerKind
    vendor: VendorName | None = None
    model: str | None = None
    daemon_id: str | None = None


def _suspended(vendor: VendorName) -> Conflict:
    return Conflict(f"The {vendor} key is suspended (the vendor rejected it); an admin must replace the key "
                    "in the Eval runner settings before evaluations can use it.",
                    code="vendor_suspended", details={"vendor": vendor})


def _vendor_choice(settings: EvalRunnerSettings, vendor: VendorName) -> RunnerChoice:
    runtime = settings.vendor(vendor)
    if runtime.status == "suspended":
        raise _suspended(vendor)
    if not runtime.usable or runtime.model is None:
        enabled = offered_vendors(settings)
        raise Conflict(f"{vendor} is not enabled for this tenant; "
                       + (f"use one of: {', '.join(enabled)}." if enabled
                          else "ask an admin to configure it, or run on your daemon."),
                       code="vendor_not_enabled", details={"vendor": vendor, "enabled_vendors": enabled})
    return RunnerChoice(runner="server", vendor=vendor, model=runtime.model)


def _daemon_choice(daemons: Sequence[AvailableDaemon], *, code: str, message: str) -> RunnerChoice:
    if not daemons:
        raise Conflict(message, code=code)
    # list_available is most-recent-heartbeat first: the daemon most likely to still be there.
    return RunnerChoice(runner="daemon", daemon_id=daemons[0].daemon_id)


def choose_runner(settings: EvalRunnerSettings, request: EvalRunRequest,
                  daemons: Callable[[], Sequence[AvailableDaemon]]) -> RunnerChoice:
    """Apply the dialog rules to a request. `daemons` is called only when the daemon route is in
    play, so a server dispatch never pays for a presence lookup."""
    if request.runner == "daemon":
        if request.vendor is not None:
            raise InvalidRequest("'vendor' applies to the server runner only; drop it, or use runner 'server'.",
                                 code="vendor_not_applicable", details={"runner": "daemon"})
        return _daemon_choice(daemons(), code="no_daemon_available",
                              message="You have no available daemon; start your daemon (it must have sent a "
                                      "heartbeat recently), or run on the server.")
    if request.vendor is not None:
        return _vendor_choice(settings, request.vendor)

    vendors = offered_vendors(settings)
    if len(vendors) == 1:
        return _vendor_choice(settings, vendors[0])
    if len(vendors) > 1:
        raise InvalidRequest(f"Both vendors are enabled; choose one with 'vendor': {' or '.join(vendors)}.",
                             code="vendor_required", details={"choices": vendors, "field": "vendor"})

    suspended = [v for v in VENDORS if settings.vendor(v).status == "suspended"]
    if request.runner == "server":
        if suspended:
            raise _suspended(suspended[0])
        raise Conflict("No vendor is enabled for the server runner; ask an admin to configure Anthropic or "
                       "OpenAI, or run on your daemon.", code="no_server_vendor")
    available = daemons()
    if available:
        return RunnerChoice(runner="daemon", daemon_id=available[0].daemon_id)
    if suspended:
        raise _suspended(suspended[0])
    raise Conflict("No runner is available: no vendor is enabled for this tenant and you have no available "
                   "daemon. Start your daemon, or ask an admin to configure a vendor.",
                   code="no_runner_available")


def check_threshold(value: int | None) -> int:
    if value is None:
        return DEFAULT_THRESHOLD
    if not MIN_THRESHOLD <= value <= MAX_THRESHOLD:
        raise InvalidRequest(f"threshold must be between {MIN_THRESHOLD} and {MAX_THRESHOLD} bytes.",
                             code="threshold_out_of_range",
                             details={"field": "threshold", "min": MIN_THRESHOLD, "max": MAX_THRESHOLD})
    return value


def check_idempotency_key(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise InvalidRequest(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} characters from "
                             "A-Z a-z 0-9 . _ : ~ + / = - (a UUID works).", code="invalid_idempotency_key")
    return value


@dataclass(frozen=True)
class DispatchPlan:
    questions: list[Question]
    threshold: int
    chain: bool
    choice: RunnerChoice
    catalog_version: int = 0
    trial: bool = False


def plan_dispatch(request: EvalRunRequest, settings: EvalRunnerSettings,
                  daemons: Callable[[], Sequence[AvailableDaemon]], catalog: ResolvedCatalog, *,
                  trial: Question | None = None) -> DispatchPlan:
    """Request validation first (400s), then the runner rules (400 vendor_required / 409s).

    Questions come from the tenant's enabled `catalog`, whose version the run records; a try-it run
    judges exactly its `trial` question instead (and takes no selection)."""
    threshold = check_threshold(request.threshold)
    if trial is not None:
        if request.questions is not None or request.skip is not None:
            raise InvalidRequest("A try-it run judges its one question; drop 'questions' and 'skip'.",
                                 code="selection_not_applicable")
        questions = [trial]
    else:
        questions = select_questions(request.questions, request.skip, catalog.questions, catalog.disabled_ids)
    return DispatchPlan(questions=questions, threshold=threshold, chain=request.chain,
                        choice=choose_runner(settings, request, daemons), catalog_version=catalog.version,
                        trial=trial is not None)


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
            _vendor_choice(settings, run.vendor)
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
