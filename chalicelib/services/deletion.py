"""Deleting a session or a run, across every store that holds something of it.

`DELETE /sessions/{id}` (its uploader or an admin) removes the session's runs (each with its
aggregate contribution, in one transaction), whatever other features derived from them (judge
facts: the `DerivedDataCleaner` seam), the trace object in S3, the continuation link and the
session record. `DELETE /eval-runs/{id}` (its creator or an admin) does the same for one run.
Active runs are refused (409), and a run is deleted only once the run lifecycle has finalized it
(a reader's reconcile does it when it is due), so its spend is settled and its scores recorded
before both leave together.

Order matters for retries: the audit entry is written first (who, when, what: ids only), the
session record last, so a deletion interrupted halfway can be repeated until it completes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from chalicelib.domain.analytics import Contribution
from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.deletion import (
    DeletedKind,
    DeletionAuditPage,
    DeletionRecord,
    require_run_owner,
    require_session_owner,
    still_active,
)
from chalicelib.domain.errors import Conflict, NotFound
from chalicelib.domain.ids import new_id
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalRun
from chalicelib.observability import logger
from chalicelib.services.history import RUN_ID

SESSION_PAGE = 100


def _settled(run: EvalRun) -> bool:
    """Ended and finalized: nothing will write to the run any more (a cancelled server run stays
    unsettled until its worker has reported the usage its judges still billed)."""
    return run.is_terminal and run.finalized_at is not None


class SessionRecords(Protocol):
    def get_session(self, tenant: str, session_id: str) -> dict[str, Any] | None: ...

    def delete_session(self, tenant: str, session_id: str) -> None: ...

    def delete_leaf(self, tenant: str, leaf_uuid: str, session_id: str) -> None: ...


class TraceObjects(Protocol):
    def delete(self, key: str) -> None: ...


class RunRecords(Protocol):
    def get(self, tenant: str, run_id: str) -> EvalRun | None: ...

    def list_for_session(self, tenant: str, session_id: str, *, limit: int = 50,
                         cursor: str | None = None) -> tuple[list[EvalRun], str | None]: ...

    def delete_finished(self, tenant: str, run_id: str) -> None: ...


class Contributions(Protocol):
    def contribution(self, tenant: str, run_id: str) -> Contribution | None: ...

    def remove(self, tenant: str, contribution: Contribution, *, delete_run: bool = False) -> bool: ...


class DeletionAudit(Protocol):
    def record(self, tenant: str, entry: DeletionRecord) -> None: ...

    def latest(self, tenant: str, *, limit: int) -> list[DeletionRecord]: ...


class RunSettlement(Protocol):
    """The run lifecycle's reader reconcile: an overdue run ends `timed_out`, a due one is finalized."""

    def reconcile(self, run: EvalRun) -> EvalRun: ...


class DerivedDataCleaner(Protocol):
    """What another feature stored from a run or session (e.g. judge facts) and must delete with it."""

    def forget_run(self, tenant: str, run: EvalRun) -> None: ...

    def forget_session(self, tenant: str, session_id: str) -> None: ...


class DeletionService:
    def __init__(self, *, sessions: SessionRecords, traces: TraceObjects, runs: RunRecords,
                 aggregates: Contributions, audit: DeletionAudit, clock: Clock, settlement: RunSettlement,
                 cleaners: Sequence[DerivedDataCleaner] = ()) -> None:
        self._sessions = sessions
        self._settlement = settlement
        self._traces = traces
        self._runs = runs
        self._aggregates = aggregates
        self._audit = audit
        self._clock = clock
        self._cleaners = tuple(cleaners)

    # -- sessions -----------------------------------------------------------------------------------
    def delete_session(self, principal: Principal, session_id: str) -> DeletionRecord:
        tenant = principal.tenant
        record = self._sessions.get_session(tenant, session_id) if 0 < len(session_id) <= 200 else None
        if record is None:
            raise NotFound(f"No session '{session_id[:64]}' in this tenant.", code="session_not_found")
        require_session_owner(principal, record.get("uploaded_by"))
        runs = [self._settlement.reconcile(r) for r in self._session_runs(tenant, session_id)]
        active = [r.eval_run_id for r in runs if not _settled(r)]
        if active:
            raise still_active(active)
        storage = record.get("storage") or {}
        entry = self._audit_entry(principal, "session", session_id, [r.eval_run_id for r in runs],
                                  trace=bool(storage.get("key")))
        for run in runs:
            self._delete_run(tenant, run)
        for cleaner in self._cleaners:
            cleaner.forget_session(tenant, session_id)
        if storage.get("key"):
            self._traces.delete(str(storage["key"]))
        last_uuid = (record.get("source") or {}).get("last_uuid")
        if last_uuid:
            self._sessions.delete_leaf(tenant, str(last_uuid), session_id)
        self._sessions.delete_session(tenant, session_id)
        logger.info("session deleted", extra={"session_id": session_id, "runs": len(runs),
                                              "audit_id": entry.audit_id})
        return entry

    def _session_runs(self, tenant: str, session_id: str) -> list[EvalRun]:
        runs: list[EvalRun] = []
        cursor: str | None = None
        while True:
            page, cursor = self._runs.list_for_session(tenant, session_id, limit=SESSION_PAGE, cursor=cursor)
            runs.extend(page)
            if cursor is None:
                return runs

    # -- runs ---------------------------------------------------------------------------------------
    def delete_run(self, principal: Principal, run_id: str) -> DeletionRecord:
        run = self._runs.get(principal.tenant, run_id) if RUN_ID.fullmatch(run_id) else None
        if run is None:
            raise NotFound(f"No eval run '{run_id[:64]}' in this tenant.", code="eval_run_not_found")
        require_run_owner(principal, run.created_by)
        run = self._settlement.reconcile(run)
        if not _settled(run):
            raise Conflict(f"The eval run is {run.status}" + ("" if run.is_terminal else "; cancel it")
                           + " and not settled yet; retry once it has ended.", code="run_still_active",
                           details={"status": run.status})
        entry = self._audit_entry(principal, "eval_run", run.session_id, [run.eval_run_id], trace=False)
        self._delete_run(principal.tenant, run)
        logger.info("eval run deleted", extra={"eval_run_id": run_id, "audit_id": entry.audit_id})
        return entry

    def _delete_run(self, tenant: str, run: EvalRun) -> None:
        run_id = run.eval_run_id
        for _ in range(3):
            contribution = self._aggregates.contribution(tenant, run_id)
            if contribution is None:
                with contextlib.suppress(NotFound):  # an earlier, interrupted deletion removed it
                    self._runs.delete_finished(tenant, run_id)
                # A finalizer that recorded the run's scores just before it went: take them out too.
                late = self._aggregates.contribution(tenant, run_id)
                if late is None or self._aggregates.remove(tenant, late):
                    break
                continue
            # The run and its scores leave the store in one transaction.
            if self._aggregates.remove(tenant, contribution, delete_run=True):
                break
            current = self._runs.get(tenant, run_id)
            if current is None:
                # Gone already (an interrupted deletion): only its scores are left to take out.
                if self._aggregates.remove(tenant, contribution):
                    break
            elif not current.is_terminal:
                raise Conflict(f"The eval run is {current.status} again (a rerun); cancel it before deleting it.",
                               code="run_still_active", details={"status": current.status})
        else:
            raise Conflict("The eval run changed while it was being deleted; retry.", code="deletion_conflict")
        for cleaner in self._cleaners:
            cleaner.forget_run(tenant, run)

    # -- audit --------------------------------------------------------------------------------------
    def _audit_entry(self, principal: Principal, kind: DeletedKind, session_id: str, run_ids: list[str], *,
                     trace: bool) -> DeletionRecord:
        entry = DeletionRecord(audit_id=new_id("del"), at=iso(self._clock.now()), by=principal.user,
                               by_admin=principal.is_admin, kind=kind,
                               session_id=session_id, eval_run_ids=run_ids, trace_deleted=trace)
        self._audit.record(principal.tenant, entry)
        return entry

    def deletions(self, principal: Principal, *, limit: int = 100) -> DeletionAuditPage:
        return DeletionAuditPage(items=self._audit.latest(principal.tenant, limit=limit))
