"""Bulk evaluation: `POST /eval-batches` judges many sessions with one request, with progress, cost and
cancel for the whole batch.

Creating a batch resolves the request once (vendor, questions, as a manual dispatch would), resolves
its sessions (explicit ids, or a filter over the tenant's session list, refused above
`MAX_BATCH_RUNS` with the count it would have created), and stores the batch record with every run
id it will have. Its runs are then created in chunks (idempotently: a chunk retried after a failure
stores only what is missing, and the poller resumes a batch left `creating`), all `delayed`, and as
many as the active-run quota allows are started at once; the rest start as slots free
(`services/automation_dispatch.py`). Each run's end is recorded on the batch by the run lifecycle's
automation participant; `GET` reads the few runs still in flight for their live status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol

from chalicelib.adapters.automation_store import DynamoAutomationStore, WaitingRun
from chalicelib.adapters.run_store import DynamoRunStore
from chalicelib.domain.automation import BatchTrigger, SessionFacts
from chalicelib.domain.clock import Clock, iso, parse_iso
from chalicelib.domain.errors import Conflict, DomainError, Forbidden, InvalidRequest, NotFound
from chalicelib.domain.eval_batches import (
    MAX_BATCH_RUNS,
    MAX_BATCH_SCAN,
    TERMINAL_ENTRY,
    BatchAccepted,
    BatchEstimate,
    BatchRunEntry,
    EvalBatch,
    EvalBatchList,
    EvalBatchRequest,
    EvalBatchView,
    batch_view,
)
from chalicelib.domain.ids import new_id
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalRun, EvalRunView
from chalicelib.observability import logger
from chalicelib.services.automation_budget import Bounds
from chalicelib.services.automation_dispatch import AutomatedDispatch
from chalicelib.services.eval_runners import EvalRunRequest, check_idempotency_key
from chalicelib.services.sessions import validate_session_id

# Runs stored per step (the batch record's entries are updated between steps, nothing else).
CREATE_CHUNK = 50
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
_BATCH_ID_CHARS = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ_ebt")
# A batch still `creating` this long after it was stored was interrupted: the poller resumes it.
RESUME_AFTER_SECONDS = 120


class SessionDirectory(Protocol):
    """The tenant's session records (`chalicelib.adapters.session_store.DynamoSessionIndex`)."""

    def get_sessions(self, tenant: str, session_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def list_sessions(self, tenant: str, *, limit: int, cursor: str | None = None
                      ) -> tuple[list[dict[str, Any]], str | None]: ...


class BatchBudget(Protocol):
    """What the batch's runs can cost, and whether the budgets can take it now
    (`chalicelib.services.automation_budget.AutomationBudget`)."""

    def bounds(self, runs: Sequence[EvalRun]) -> Bounds | None: ...

    def check(self, tenant: str, user: str, bounds: Bounds) -> None: ...


class RunCanceller(Protocol):
    """`EvalRunService.cancel_eval_run`: a batch's cancel is its runs' cancels, with the same rules."""

    def cancel_eval_run(self, principal: Principal, run_id: str) -> EvalRunView: ...


def _not_found(batch_id: str) -> NotFound:
    return NotFound(f"No eval batch '{batch_id[:64]}' in this tenant.", code="eval_batch_not_found")


def _facts(record: Mapping[str, Any]) -> SessionFacts:
    return SessionFacts(session_id=str(record["session_id"]), repository=record.get("repository"),
                        format=str(record.get("format")), uploaded_by=str(record.get("uploaded_by")),
                        entries=int(record.get("entries") or 0), revision=int(record.get("revision") or 1),
                        sha256=str(record.get("sha256") or ""))


class EvalBatchService:
    def __init__(self, *, store: DynamoAutomationStore, runs: DynamoRunStore, sessions: SessionDirectory,
                 dispatch: AutomatedDispatch, cancel: RunCanceller, clock: Clock,
                 budget: BatchBudget | None = None) -> None:
        self._store = store
        self._runs = runs
        self._sessions = sessions
        self._dispatch = dispatch
        self._cancel = cancel
        self._clock = clock
        self._budget = budget

    # -- create --------------------------------------------------------------------------------------
    def create_batch(self, principal: Principal, request: EvalBatchRequest, *,
                     idempotency_key: str | None = None) -> BatchAccepted:
        key = check_idempotency_key(idempotency_key)
        tenant = principal.tenant
        if key is not None:
            existing = self._store.find_idempotent_batch(tenant, principal.user, key)
            if existing is not None:
                return self._accepted_again(tenant, existing)
        planned = self._dispatch.plan(tenant, _run_request(request), mode=request.mode)
        records = self._resolve_sessions(tenant, request)
        now = self._clock.now()
        batch_id = new_id("ebt")
        trigger = BatchTrigger(batch_id=batch_id)
        runs = [self._dispatch.new_run(tenant, str(r["session_id"]), principal.user, planned.shape, trigger=trigger,
                                       batch_id=batch_id, now=now) for r in records]
        # Budgets apply to the whole batch up front (services/automation_budget.py), or nothing is stored.
        bounds = self._budget.bounds(runs) if self._budget is not None else None
        if self._budget is not None and bounds is not None:
            self._budget.check(tenant, principal.user, bounds)
        estimate = bounds.high_micros if bounds is not None else None
        batch = EvalBatch(
            batch_id=batch_id, tenant=tenant, created_by=principal.user, created_at=iso(now), mode=request.mode,
            status="creating", shape=planned.shape, source="filter" if request.filter is not None else "session_ids",
            filter=request.filter.model_dump(mode="json", exclude_none=True) if request.filter is not None else None,
            sessions=[run.session_id for run in runs], run_ids=[run.eval_run_id for run in runs],
            runs={run.eval_run_id: BatchRunEntry(s="delayed") for run in runs}, estimate_micros=estimate)
        extra = []
        if key is not None:
            expires = int((now + timedelta(seconds=IDEMPOTENCY_TTL_SECONDS)).timestamp())
            extra.append(self._store.batch_idempotency_write(tenant, principal.user, key, batch_id,
                                                             expires_at=expires))
        if not self._store.create_batch(batch, extra):
            existing = self._store.find_idempotent_batch(tenant, principal.user, key or "")
            if existing is None:  # pragma: no cover - the refusal names the idempotency record
                raise Conflict("The batch could not be created; retry.", code="batch_conflict")
            return self._accepted_again(tenant, existing)
        logger.info("eval batch created", extra={"batch_id": batch_id, "runs": len(runs), "mode": request.mode,
                                                 "source": batch.source})
        started = self._create_runs(batch, runs)
        return BatchAccepted(batch_id=batch_id, runs=len(runs), estimate_usd_high=_usd(estimate), mode=request.mode,
                             status="running", started=started)

    def estimate_batch(self, principal: Principal, request: EvalBatchRequest) -> BatchEstimate:
        """What `create_batch` would create and cost, resolved exactly the same way; nothing is stored."""
        tenant = principal.tenant
        planned = self._dispatch.plan(tenant, _run_request(request), mode=request.mode)
        records = self._resolve_sessions(tenant, request)
        shape = planned.shape
        runs = [self._dispatch.new_run(tenant, str(r["session_id"]), principal.user, shape,
                                       trigger=BatchTrigger(batch_id="ebt_estimate")) for r in records]
        bounds = self._budget.bounds(runs) if self._budget is not None else None
        blocked: DomainError | None = None
        if self._budget is not None and bounds is not None:
            try:
                self._budget.check(tenant, principal.user, bounds)
            except DomainError as exc:
                blocked = exc
        return BatchEstimate(runs=len(records), session_ids=[str(r["session_id"]) for r in records],
                             mode=request.mode, vendor=shape.vendor, model=shape.model,
                             questions=len(shape.questions),
                             estimate_usd_high=_usd(bounds.high_micros) if bounds is not None else None,
                             estimate_usd_low=_usd(bounds.low_micros) if bounds is not None else None,
                             priced=bounds is not None, within_limits=blocked is None,
                             blocked_by=blocked.code if blocked else None,
                             reason=blocked.message if blocked else None)

    def _create_runs(self, batch: EvalBatch, runs: Sequence[Any]) -> int:
        for start in range(0, len(runs), CREATE_CHUNK):
            self._dispatch.create_many(runs[start:start + CREATE_CHUNK])
        self._store.set_batch_fields(batch.tenant, batch.batch_id, {"status": "running"},
                                     only_if_status=("creating",), removes=("gsi1pk", "gsi1sk"))
        return self._dispatch.promote_quietly(batch.tenant).started

    def _accepted_again(self, tenant: str, batch_id: str) -> BatchAccepted:
        batch = self._store.get_batch(tenant, batch_id)
        if batch is None:
            raise _not_found(batch_id)
        view = batch_view(batch)
        return BatchAccepted(batch_id=batch_id, runs=view.runs, estimate_usd_high=view.estimate_usd_high,
                             mode=batch.mode, status=view.status,
                             started=view.runs - view.delayed - view.counts.get("cancelled", 0))

    def _resolve_sessions(self, tenant: str, request: EvalBatchRequest) -> list[dict[str, Any]]:
        if request.session_ids is not None:
            ids = list(dict.fromkeys(request.session_ids))
            for index, session_id in enumerate(ids):
                try:
                    validate_session_id(session_id, field=f"session_ids.{index}")
                except InvalidRequest as exc:
                    raise InvalidRequest(exc.message, code=exc.code, details={
                        **(exc.details or {}), "fields": [{"field": f"session_ids.{index}", "message": exc.message,
                                                           "type": exc.code}]}) from None
            found = self._sessions.get_sessions(tenant, ids)
            missing = [s for s in ids if s not in found]
            if missing:
                raise NotFound(f"{len(missing)} of the sessions do not exist in this tenant: "
                               f"{', '.join(missing[:5])}{'…' if len(missing) > 5 else ''}.",
                               code="session_not_found", details={"missing": missing[:50]})
            return [found[s] for s in ids]
        assert request.filter is not None
        flt = request.filter
        matched: list[dict[str, Any]] = []
        scanned = 0
        cursor: str | None = None
        complete = True
        while True:
            page, cursor = self._sessions.list_sessions(tenant, limit=200, cursor=cursor)
            stop = False
            for record in page:
                scanned += 1
                uploaded = str(record.get("uploaded_at") or "")
                if flt.uploaded_to is not None and uploaded >= flt.uploaded_to:
                    continue
                if flt.uploaded_from is not None and uploaded < flt.uploaded_from:
                    stop = True  # newest first: everything after this is older still
                    break
                if flt.matches(_facts(record)):
                    matched.append(record)
            if stop or cursor is None:
                break
            if scanned >= MAX_BATCH_SCAN:
                complete = False
                break
        if not matched:
            raise InvalidRequest("No session of this tenant matches the filter; nothing to judge.",
                                 code="no_sessions_matched", details={"scanned": scanned})
        if len(matched) > MAX_BATCH_RUNS:
            raise InvalidRequest(
                f"The filter matches {'at least ' if not complete else ''}{len(matched)} sessions; a batch creates "
                f"at most {MAX_BATCH_RUNS} runs. Narrow the filter (e.g. uploaded_from/uploaded_to) or split it.",
                code="batch_too_large", details={"would_create": len(matched), "exact": complete,
                                                 "max_runs": MAX_BATCH_RUNS})
        return matched

    # -- read ----------------------------------------------------------------------------------------
    def _load(self, principal: Principal, batch_id: str) -> EvalBatch:
        if not batch_id or len(batch_id) > 64 or not set(batch_id) <= _BATCH_ID_CHARS:
            raise _not_found(batch_id)
        batch = self._store.get_batch(principal.tenant, batch_id)
        if batch is None:
            raise _not_found(batch_id)
        return batch

    def get_batch(self, principal: Principal, batch_id: str) -> EvalBatchView:
        return self._view(self._load(principal, batch_id))

    def list_batches(self, principal: Principal, *, limit: int = 20) -> EvalBatchList:
        return EvalBatchList(items=[self._view(b, live=False) for b in self._store.list_batches(principal.tenant,
                                                                                               limit=limit)])

    def _view(self, batch: EvalBatch, *, live: bool = True) -> EvalBatchView:
        """The batch's view; with `live`, runs it knows as queued or running are read for their status now
        (at most the tenant's active runs), and ends it missed are written back."""
        if not live:
            return batch_view(batch)
        in_flight = [r for r in batch.run_ids if batch.runs.get(r, BatchRunEntry()).s in ("queued", "running")]
        if not in_flight:
            return batch_view(batch)
        fresh = {run_id: _entry_from_snapshot(item)
                 for run_id, item in self._runs.snapshots(batch.tenant, in_flight).items()}
        ended = {r: e for r, e in fresh.items() if e.s in TERMINAL_ENTRY}
        if ended:
            self._store.set_batch_entries(batch.tenant, batch.batch_id, ended)
        return batch_view(batch, fresh)

    # -- cancel --------------------------------------------------------------------------------------
    def cancel_batch(self, principal: Principal, batch_id: str) -> EvalBatchView:
        batch = self._load(principal, batch_id)
        if principal.user != batch.created_by and not principal.is_admin:
            raise Forbidden("Only the user who started this batch or a tenant admin may cancel it.",
                            code="not_batch_owner")
        if batch.status == "cancelled":
            return self._view(batch)
        now = iso(self._clock.now())
        self._store.set_batch_fields(batch.tenant, batch.batch_id, {"status": "cancelled", "cancelled_at": now,
                                                                    "cancelled_by": principal.user})
        # Out of the waiting line first, so a slot freed meanwhile does not start a run of this batch.
        for run_id in batch.run_ids:
            if batch.runs.get(run_id, BatchRunEntry()).s == "delayed":
                self._store.remove_waiting(WaitingRun(tenant=batch.tenant, eval_run_id=run_id,
                                                      created_at=batch.created_at, user=batch.created_by))
        cancelled = 0
        for run_id in batch.run_ids:
            if batch.runs.get(run_id, BatchRunEntry()).s in TERMINAL_ENTRY:
                continue
            try:
                self._cancel.cancel_eval_run(principal, run_id)
                cancelled += 1
            except Conflict:
                continue  # it ended meanwhile
            except NotFound:
                continue  # never created (an interrupted batch)
        logger.info("eval batch cancelled", extra={"batch_id": batch_id, "runs_cancelled": cancelled})
        refreshed = self._store.get_batch(batch.tenant, batch.batch_id) or batch
        return self._view(refreshed)

    # -- the safety net ------------------------------------------------------------------------------
    def resume_interrupted(self) -> int:
        """Batches left `creating` (the request died mid-way) get their missing runs now."""
        resumed = 0
        cutoff = self._clock.now() - timedelta(seconds=RESUME_AFTER_SECONDS)
        for tenant, batch_id in self._store.creating_batches(limit=20):
            batch = self._store.get_batch(tenant, batch_id)
            if batch is None or batch.status != "creating" or parse_iso(batch.created_at) > cutoff:
                continue
            logger.warning("resuming an interrupted eval batch", extra={"tenant": tenant, "batch_id": batch_id})
            self._create_runs(batch, self._runs_of(batch))
            resumed += 1
        return resumed

    def _runs_of(self, batch: EvalBatch) -> list[Any]:
        now = parse_iso(batch.created_at)
        trigger = BatchTrigger(batch_id=batch.batch_id)
        return [self._dispatch.new_run(batch.tenant, session_id, batch.created_by, batch.shape, trigger=trigger,
                                       batch_id=batch.batch_id, run_id=run_id, now=now)
                for session_id, run_id in zip(batch.sessions, batch.run_ids, strict=True)]


def _run_request(request: EvalBatchRequest) -> EvalRunRequest:
    """The EvalRunRequest fields every run of the batch gets."""
    return EvalRunRequest(vendor=request.vendor, questions=request.questions, skip=request.skip,
                          chain=request.chain, threshold=request.threshold)


def _entry_from_snapshot(item: Mapping[str, Any]) -> BatchRunEntry:
    status = str(item.get("status"))
    if status == "queued" and item.get("delayed"):
        status = "delayed"
    if status in TERMINAL_ENTRY and not item.get("finalized_at"):
        # Ended but not settled yet (the worker finalizes right after its finish write): its cost is
        # not known, so the batch must not count it as done, or a batch would read "finished" with
        # a partial cost. The lifecycle's automation participant records the settled entry.
        status = "running"
    cost = item.get("cost") if isinstance(item.get("cost"), dict) else None
    usd = cost.get("usd") if cost else None
    micros = None
    if isinstance(usd, int | float):
        from chalicelib.domain.spend import usd_to_micros

        micros = usd_to_micros(float(usd))
    return BatchRunEntry(s=status, c=micros, f=item.get("finished_at"),
                         priced=bool(cost.get("priced", True)) if cost else True)


def _usd(micros: int | None) -> float | None:
    from chalicelib.domain.spend import micros_to_usd

    return micros_to_usd(micros) if micros is not None else None
