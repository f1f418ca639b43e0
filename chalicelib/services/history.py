"""Run history use cases: the tenant-wide run list and comparing two runs.

Every member of a tenant sees all of the tenant's runs here (as on the dashboard); changing or
deleting a run is another matter (`services/deletion.py`). The list is served by the history
indexes (`adapters/run_index.py`), never a scan; cursors are signed per tenant and filter set.
"""

from __future__ import annotations

import re
from typing import Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.errors import InvalidRequest, NotFound
from chalicelib.domain.history import (
    CursorSigner,
    EvalRunPage,
    EvalRunSummary,
    RunFilters,
    RunListQuery,
    list_scope,
    parse_page_size,
    parse_run_filters,
)
from chalicelib.domain.principal import Principal
from chalicelib.domain.run_compare import RunComparison, compare_runs
from chalicelib.domain.runs import EvalRun
from chalicelib.observability import logger

# Run ids as minted by `new_id`; anything else cannot name a run (404 without a DynamoDB call).
RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class IndexPageResult(Protocol):
    @property
    def items(self) -> list[EvalRunSummary]: ...

    @property
    def next_position(self) -> str | None: ...


class RunIndex(Protocol):
    def page(self, tenant: str, filters: RunFilters, *, limit: int, before: str | None, now_epoch: int,
             read_budget: int | None = None) -> IndexPageResult: ...


class RunReader(Protocol):
    def get(self, tenant: str, run_id: str) -> EvalRun | None: ...


class CursorKeys(Protocol):
    def key_for(self, tenant: str) -> bytes: ...


class RunHistoryService:
    def __init__(self, *, index: RunIndex, runs: RunReader, cursor_keys: CursorKeys, clock: Clock) -> None:
        self._index = index
        self._runs = runs
        self._keys = cursor_keys
        self._clock = clock

    def list_runs(self, principal: Principal, query: RunListQuery) -> EvalRunPage:
        filters = parse_run_filters(query)
        limit = parse_page_size(query.limit)
        page = self.page(principal.tenant, filters, limit=limit, cursor=query.cursor)
        return page

    def page(self, tenant: str, filters: RunFilters, *, limit: int, cursor: str | None,
             read_budget: int | None = None) -> EvalRunPage:
        signer = CursorSigner(self._keys.key_for(tenant))
        scope = list_scope(tenant, filters)
        before = signer.decode(scope, cursor) if cursor is not None else None
        now_epoch = int(self._clock.now().timestamp())
        result = self._index.page(tenant, filters, limit=limit, before=before, now_epoch=now_epoch,
                                  read_budget=read_budget)
        position = result.next_position
        return EvalRunPage(items=result.items, next_cursor=signer.encode(scope, position) if position else None)

    def compare(self, principal: Principal, a: str | None, b: str | None) -> RunComparison:
        if not a or not b:
            missing = [f for f, v in (("a", a), ("b", b)) if not v]
            raise InvalidRequest("Give two runs to compare: ?a=<eval_run_id>&b=<eval_run_id>.",
                                 code="invalid_query", details={"fields": missing})
        run_a, run_b = self._load(principal.tenant, a), self._load(principal.tenant, b)
        logger.info("runs compared", extra={"eval_run_id": a, "other_eval_run_id": b})
        return compare_runs(run_a, run_b)

    def _load(self, tenant: str, run_id: str) -> EvalRun:
        run = self._runs.get(tenant, run_id) if RUN_ID.fullmatch(run_id) else None
        if run is None:
            # Another tenant's run is indistinguishable from a missing one.
            raise NotFound(f"No eval run '{run_id[:64]}' in this tenant.", code="eval_run_not_found")
        return run
