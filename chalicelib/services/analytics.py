"""Score analytics use cases: keep the daily aggregates in step with finished runs, and answer trend
queries from them (O(days x keys) items, never the runs).

`record_finished_run` is what the run lifecycle finalizer calls on every terminal transition; it
is idempotent per (run, finish): a redelivery changes nothing, a rerun's new result replaces the
run's earlier contribution. `forget_run` takes a deleted run's contribution back out.
"""

from __future__ import annotations

from typing import Protocol

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


class AggregateStore(Protocol):
    def contribution(self, tenant: str, run_id: str) -> Contribution | None: ...

    def apply(self, tenant: str, run_sk: str, contribution: Contribution, *, expires_at: int | None) -> bool: ...

    def remove(self, tenant: str, contribution: Contribution) -> bool: ...

    def rows(self, tenant: str, dimension: str, first_day: str, last_day: str) -> tuple[list[AggregateRow], int]: ...


class ScoreAnalyticsService:
    def __init__(self, *, store: AggregateStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    # -- write side (the run lifecycle finalizer) -------------------------------------------------------
    def record_finished_run(self, run: EvalRun) -> None:
        if not run.is_terminal or run.trial_questions:
            return  # an admin's try-it run of a draft question is no trend
        deltas: list[AggregateDelta] = run_contribution(created_at=run.created_at, created_by=run.created_by,
                                                        repository=run.repository, result=run.result)
        stamp = run.finished_at or run.created_at
        existing = self._store.contribution(run.tenant, run.eval_run_id)
        if existing is not None:
            if existing.stamp == stamp:
                if existing.applied < existing.chunks:  # a crash between chunks: finish the job
                    self._store.apply(run.tenant, f"RUN#{run.eval_run_id}", existing, expires_at=run.expires_at)
                return
            # A rerun finished: its result replaces what the earlier finish contributed.
            if not self._store.remove(run.tenant, existing):
                return
        if not deltas:
            return
        applied = self._store.apply(run.tenant, f"RUN#{run.eval_run_id}",
                                    Contribution(run.eval_run_id, stamp, deltas), expires_at=run.expires_at)
        logger.info("score aggregates updated", extra={"eval_run_id": run.eval_run_id, "aggregates": len(deltas),
                                                       "applied": applied})

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
