"""Score analytics use cases: keep the daily aggregates in step with finished runs, and answer trend
queries from them (O(days x keys) items, never the runs).

`ScoreAggregation` is history's participant in the run lifecycle's one finalizer: its counter
updates and the run's contribution record go into the finalization transaction, so each run attempt
is counted exactly once (a redelivery or a racing reader finalizes nothing twice), and a rerun's
result replaces the earlier attempt's contribution by its net difference. A run whose contribution
would not fit the transaction (over ~90 aggregates: dozens of tenant categories) is aggregated right
after the commit instead, in chunks that are themselves exactly-once (best effort: a crash in
between leaves that run out of the trends, and it is logged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from chalicelib.domain.analytics import (
    AggregateDelta,
    AggregateRow,
    Contribution,
    ScoreAnalytics,
    ScoresQuery,
    build_series,
    parse_scores_query,
    run_contribution,
    utc_today,
)
from chalicelib.domain.clock import Clock
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalRun
from chalicelib.observability import logger
from chalicelib.services.run_lifecycle import Contribution as FinalizationContribution
from chalicelib.services.run_lifecycle import Finalization

# Of the finalization transaction's 100 items: the run item, spend's settlement, ours, and room to grow.
IN_TRANSACTION_WRITES = 90


class AggregateStore(Protocol):
    def contribution(self, tenant: str, run_id: str) -> Contribution | None: ...

    def apply(self, tenant: str, run_sk: str, contribution: Contribution, *, expires_at: int | None) -> bool: ...

    def remove(self, tenant: str, contribution: Contribution) -> bool: ...

    def rows(self, tenant: str, dimension: str, first_day: str, last_day: str) -> tuple[list[AggregateRow], int]: ...

    def replacement_writes(self, tenant: str, old: Contribution | None, new: Contribution, *,
                           expires_at: int | None) -> list[dict[str, Any]]: ...


class ScoreAnalyticsService:
    def __init__(self, *, store: AggregateStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    # -- write side (the run lifecycle finalizer) -------------------------------------------------------
    @staticmethod
    def _contribution(run: EvalRun, stamp: str) -> Contribution:
        if run.trial_questions:
            return Contribution(run.eval_run_id, stamp, [])  # an admin's try-it run of a draft question
        deltas: list[AggregateDelta] = run_contribution(created_at=run.created_at, created_by=run.created_by,
                                                        repository=run.repository, result=run.result)
        return Contribution(run.eval_run_id, stamp, deltas)

    def finalization_writes(self, run: EvalRun, stamp: str) -> list[dict[str, Any]] | None:
        """The writes for the finalization transaction, or None when they would not fit it."""
        new = self._contribution(run, stamp)
        old = self._store.contribution(run.tenant, run.eval_run_id)
        if not new.deltas and old is None:
            return []
        writes = self._store.replacement_writes(run.tenant, old, new, expires_at=run.expires_at)
        return writes if len(writes) <= IN_TRANSACTION_WRITES else None

    def record_finished_run(self, run: EvalRun, *, stamp: str | None = None) -> None:
        """Aggregate a finished run outside a transaction, in exactly-once chunks (the fallback for
        contributions too large for the finalization transaction)."""
        if not run.is_terminal:
            return
        stamp = stamp or run.finalized_at or run.finished_at or run.created_at
        new = self._contribution(run, stamp)
        existing = self._store.contribution(run.tenant, run.eval_run_id)
        if existing is not None:
            if existing.stamp == stamp:
                if existing.applied < existing.chunks:  # a crash between chunks: finish the job
                    self._store.apply(run.tenant, f"RUN#{run.eval_run_id}", existing, expires_at=run.expires_at)
                return
            # A rerun finished: its result replaces what the earlier attempt contributed.
            if not self._store.remove(run.tenant, existing):
                return
        if not new.deltas:
            return
        applied = self._store.apply(run.tenant, f"RUN#{run.eval_run_id}", new, expires_at=run.expires_at)
        logger.info("score aggregates updated", extra={"eval_run_id": run.eval_run_id,
                                                       "aggregates": len(new.deltas), "applied": applied})

    def forget_run(self, tenant: str, run_id: str) -> bool:
        """Subtract a run's recorded contribution (deletion); True if there was one."""
        existing = self._store.contribution(tenant, run_id)
        if existing is None:
            return False
        return self._store.remove(tenant, existing)

    # -- read side --------------------------------------------------------------------------------------
    def scores(self, principal: Principal, query: ScoresQuery) -> ScoreAnalytics:
        request = parse_scores_query(query, utc_today(self._clock.now()))
        rows, read = self._store.rows(principal.tenant, request.by, request.first_day.isoformat(),
                                      request.last_day.isoformat())
        logger.info("score analytics read", extra={"by": request.by, "interval": request.interval,
                                                   "days": (request.last_day - request.first_day).days + 1,
                                                   "items_read": read})
        return build_series(rows, request)


class ScoreAggregation:
    """History's participant in the run lifecycle finalizer (`services/run_lifecycle.py`)."""

    name = "history"

    def __init__(self, analytics: ScoreAnalyticsService) -> None:
        self._analytics = analytics
        # Finalizations whose aggregates did not fit the transaction, applied once it committed.
        self._deferred: set[tuple[str, str]] = set()

    def contribute(self, final: Finalization, *, attempt: int,
                   refused: Mapping[str, Any] | None) -> FinalizationContribution:
        # A refused write (the record changed since it was read) is rebuilt from a fresh read.
        key = (final.run.eval_run_id, final.finalized_at)
        writes = self._analytics.finalization_writes(final.run, final.finalized_at)
        if writes is None:
            if len(self._deferred) > 1000:  # finalizations that never committed leave their keys
                self._deferred.clear()
            self._deferred.add(key)
            return FinalizationContribution()
        self._deferred.discard(key)
        return FinalizationContribution(writes=writes)

    def after_finalized(self, final: Finalization) -> None:
        key = (final.run.eval_run_id, final.finalized_at)
        if key in self._deferred:
            self._deferred.discard(key)
            logger.warning("score aggregates too large for the finalization; applied after it",
                           extra={"eval_run_id": final.run.eval_run_id})
            self._analytics.record_finished_run(final.run, stamp=final.finalized_at)
