"""Spend governance use cases: admitting runs into the tenant's spend ledger at dispatch (one
conditional write inside the dispatch transaction), and settling them when the run lifecycle
finalizes them.

`SpendService.admit` is the seam dispatch, reruns and (later) rule and batch runs go through: it
takes the runs to admit for one user and a `commit` callback that performs the caller's own
transaction with the ledger write added, and retries it once the ledger is ready. A batch admits
all its runs in one ledger write, so limits apply to the whole batch up front.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from chalicelib.adapters.run_store import ExtraWriteRefused, TransactItem
from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.domain.spend import RunAdmission, budget_day, budget_month
from chalicelib.observability import logger
from chalicelib.services.run_lifecycle import Contribution, Finalization

T = TypeVar("T")
# Attempts at the dispatch transaction: the first may find the ledger uninitialised.
_ADMIT_ATTEMPTS = 3


class BudgetLedger(Protocol):
    """The tenant's spend ledger (`chalicelib.adapters.budget_ledger.DynamoBudgetLedger`)."""

    def admit_write(self, tenant: str, user: str, runs: Sequence[tuple[str, int]]) -> TransactItem: ...

    def release_write(self, tenant: str, user: str, run_id: str) -> TransactItem: ...

    def ensure_ledger(self, tenant: str) -> None: ...


@dataclass(frozen=True)
class AdmissionRequest:
    """One run to admit: its id and deadline (epoch seconds: when the sweep may reclaim its slot)."""

    eval_run_id: str
    deadline_epoch: int
    base_cost_micros: int = 0


class SpendService:
    def __init__(self, *, ledger: BudgetLedger, clock: Clock) -> None:
        self._ledger = ledger
        self._clock = clock

    def admit(self, tenant: str, user: str, requests: Sequence[AdmissionRequest],
              commit: Callable[[list[RunAdmission], list[TransactItem]], T]) -> T:
        """Run `commit(admissions, ledger_writes)` — the caller's transaction with the ledger write
        added — until the ledger accepts it. Nothing is stored when it refuses."""
        for _ in range(_ADMIT_ATTEMPTS):
            now = self._clock.now()
            admissions = [RunAdmission(day=budget_day(now), month=budget_month(now), reserved_micros=0,
                                       base_cost_micros=r.base_cost_micros, admitted_at=iso(now))
                          for r in requests]
            write = self._ledger.admit_write(tenant, user, [(r.eval_run_id, r.deadline_epoch) for r in requests])
            try:
                return commit(admissions, [write])
            except ExtraWriteRefused as refused:
                self._resolve(tenant, refused.item)
        raise DependencyUnavailable("The spend ledger did not accept the run; nothing was started. Retry shortly.",
                                    code="budget_unavailable")

    def _resolve(self, tenant: str, item: Mapping[str, Any] | None) -> None:
        """A refused admission: initialise a missing ledger (then the caller retries)."""
        if item is None or "runs" not in item or "ua" not in item:
            self._ledger.ensure_ledger(tenant)


class SpendSettlement:
    """The run lifecycle participant: returns the run's quota slot when it is finalized."""

    name = "spend"

    def __init__(self, ledger: BudgetLedger) -> None:
        self._ledger = ledger

    def contribute(self, final: Finalization, *, attempt: int, refused: Mapping[str, Any] | None) -> Contribution:
        run = final.run
        if run.admission is None:
            return Contribution()  # stored before spend governance: never took a slot
        if refused is not None and run.eval_run_id not in (refused.get("runs") or {}):
            logger.error("finalized run was not open in the spend ledger", extra={
                "tenant": run.tenant, "eval_run_id": run.eval_run_id})
            return Contribution()
        return Contribution(writes=[self._ledger.release_write(run.tenant, run.created_by, run.eval_run_id)])

    def after_finalized(self, final: Finalization) -> None:
        return None
