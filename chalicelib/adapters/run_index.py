"""The tenant-wide run list on DynamoDB: the history indexes (gsi2-gsi9) and the queries that serve
a filter set from them without a scan.

Every run item carries one partition attribute per dimension and a shared sort key
`run_order = <created_at>#<eval_run_id>` (the run store writes them, see `index_attributes`):

| index | partition (`gsiNpk`)                         | present on           |
|-------|----------------------------------------------|----------------------|
| gsi2  | `RUNS#<t>`                                   | every run            |
| gsi3  | `RUNS#<t>#user#<created_by>`                 | every run            |
| gsi4  | `RUNS#<t>#repo#<repository>`                 | runs with a repository |
| gsi5  | `RUNS#<t>#status#<status>`                   | every run (moves with the status) |
| gsi6  | `RUNS#<t>#route#<runner>#<vendor or ->`      | every run            |
| gsi7  | `RUNS#<t>#trigger#<kind>`                    | every run (`manual` by default) |
| gsi8  | `RUNS#<t>#batch#<batch_id>`                  | runs of a batch      |
| gsi9  | `RUNS#<t>#score#<overall_score>`             | runs with a result   |

The indexes project only what a list row shows (`LIST_PROJECTION`), never `result` or `outcomes`,
so a page of 50 reads ~50 small index entries, and progress writes (which change neither a key nor
a projected attribute) cost the indexes nothing.

A query picks the most selective dimension present in the filters, queries that index's
partitions (one per value: `status=failed,timed_out` is two, a score range up to six) between the
date bounds, newest first, and merges them; the other filters are checked on the projected entry.
Each request reads a bounded number of entries (`read_budget`): a page is cut short, with a cursor,
rather than reading on through a sparse combination.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item
from chalicelib.domain.errors import DependencyUnavailable
from chalicelib.observability import logger

if TYPE_CHECKING:
    # The list's models load with the queries that use them: the run store imports this module for
    # the index attributes it writes on every dispatch (cold start, bench/coldstart).
    from chalicelib.domain.history import EvalRunSummary, RunFilters

RUN_ORDER = "run_order"
# The attributes every history index projects besides the keys (INCLUDE projection; the table may
# project at most 100 such attributes over all its indexes: 8 indexes x 9 = 72).
LIST_PROJECTION: tuple[str, ...] = ("listing", "status", "model", "finished_at", "overall_score",
                                    "category_scores", "cost", "error", "expires_at")
# Attributes a result sets and a rerun clears.
SCORE_ATTRIBUTES: tuple[str, ...] = ("overall_score", "category_scores", "gsi9pk")
NO_VENDOR = "-"
# DynamoDB partition keys are at most 2048 bytes; a long repository name is indexed by its hash.
_MAX_KEY_PART_BYTES = 512


@dataclass(frozen=True)
class Dimension:
    index: str
    attribute: str
    token: str


TENANT = Dimension("gsi2", "gsi2pk", "")
USER = Dimension("gsi3", "gsi3pk", "user")
REPOSITORY = Dimension("gsi4", "gsi4pk", "repo")
STATUS = Dimension("gsi5", "gsi5pk", "status")
ROUTE = Dimension("gsi6", "gsi6pk", "route")
TRIGGER = Dimension("gsi7", "gsi7pk", "trigger")
BATCH = Dimension("gsi8", "gsi8pk", "batch")
SCORE = Dimension("gsi9", "gsi9pk", "score")
DIMENSIONS: tuple[Dimension, ...] = (TENANT, USER, REPOSITORY, STATUS, ROUTE, TRIGGER, BATCH, SCORE)


def _key_part(value: str) -> str:
    if len(value.encode()) <= _MAX_KEY_PART_BYTES:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def partition(dimension: Dimension, tenant: str, *values: str) -> str:
    if dimension is TENANT:
        return f"RUNS#{tenant}"
    return "#".join([f"RUNS#{tenant}", dimension.token, *(_key_part(v) for v in values)])


def run_order(created_at: str, eval_run_id: str) -> str:
    return f"{created_at}#{eval_run_id}"


def trigger_kind(trigger: Any) -> str:
    if isinstance(trigger, dict) and isinstance(trigger.get("kind"), str):
        return str(trigger["kind"])
    return "manual"


def index_attributes(item: dict[str, Any]) -> dict[str, Any]:
    """The index attributes of a new run item (the dumped EvalRun). `trigger` and `batch_id` are read
    from the item when present: runs without them are manual runs outside any batch."""
    tenant = item["tenant"]
    vendor = item.get("vendor") or NO_VENDOR
    trigger = item.get("trigger") or {"kind": "manual"}
    attrs: dict[str, Any] = {
        RUN_ORDER: run_order(item["created_at"], item["eval_run_id"]),
        TENANT.attribute: partition(TENANT, tenant),
        USER.attribute: partition(USER, tenant, item["created_by"]),
        STATUS.attribute: partition(STATUS, tenant, item.get("status") or "queued"),
        ROUTE.attribute: partition(ROUTE, tenant, item["runner"], vendor),
        TRIGGER.attribute: partition(TRIGGER, tenant, trigger_kind(trigger)),
        "listing": {"session_id": item["session_id"], "created_by": item["created_by"],
                    "runner": item["runner"], "vendor": item.get("vendor"),
                    "repository": item.get("repository"), "trigger": trigger,
                    "batch_id": item.get("batch_id"), "created_at": item["created_at"],
                    "trial": bool(item.get("trial_questions"))},
    }
    if item.get("repository"):
        attrs[REPOSITORY.attribute] = partition(REPOSITORY, tenant, item["repository"])
    if item.get("batch_id"):
        attrs[BATCH.attribute] = partition(BATCH, tenant, item["batch_id"])
    return attrs


def status_attributes(tenant: str, status: str) -> dict[str, Any]:
    return {STATUS.attribute: partition(STATUS, tenant, status)}


def score_attributes(tenant: str, overall_score: int, category_scores: dict[str, int]) -> dict[str, Any]:
    return {"overall_score": overall_score, "category_scores": category_scores,
            SCORE.attribute: partition(SCORE, tenant, str(overall_score))}


# -- planning ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexPlan:
    dimension: Dimension
    partitions: tuple[str, ...]


def plan_query(tenant: str, filters: RunFilters) -> IndexPlan:
    """The index and partitions that serve a filter set, most selective dimension first: a batch, a
    repository or a user are small slices of a tenant; non-manual triggers, unsuccessful statuses and
    score bands are usually smaller than the rest; the tenant partition serves everything else."""
    from chalicelib.domain.history import RUNNERS, VENDORS

    def of(dimension: Dimension, values: list[tuple[str, ...]]) -> IndexPlan:
        return IndexPlan(dimension, tuple(partition(dimension, tenant, *v) for v in values))

    if filters.batch_id is not None:
        return of(BATCH, [(filters.batch_id,)])
    if filters.repository is not None:
        return of(REPOSITORY, [(filters.repository,)])
    if filters.user is not None:
        return of(USER, [(filters.user,)])
    if filters.triggers and "manual" not in filters.triggers:
        return of(TRIGGER, [(t,) for t in sorted(filters.triggers)])
    if filters.statuses and "succeeded" not in filters.statuses:
        return of(STATUS, [(s,) for s in sorted(filters.statuses)])
    if filters.scored_only:
        return of(SCORE, [(str(s),) for s in filters.score_values()])
    if filters.runners or filters.vendors:
        runners = sorted(filters.runners) or list(RUNNERS)
        vendors = sorted(filters.vendors) or [*VENDORS, NO_VENDOR]
        return of(ROUTE, list(itertools.product(runners, vendors)))
    if filters.statuses:
        return of(STATUS, [(s,) for s in sorted(filters.statuses)])
    if filters.triggers:
        return of(TRIGGER, [(t,) for t in sorted(filters.triggers)])
    return of(TENANT, [()])


def summary_from_entry(entry: dict[str, Any]) -> EvalRunSummary:
    from chalicelib.domain.history import EvalRunSummary

    listing = entry.get("listing") or {}
    return EvalRunSummary(
        eval_run_id=str(entry["sk"]).removeprefix("RUN#"), session_id=listing.get("session_id", ""),
        status=entry.get("status", "queued"), runner=listing.get("runner", "server"),
        vendor=listing.get("vendor"), model=entry.get("model"), created_by=listing.get("created_by", ""),
        repository=listing.get("repository"), trigger=listing.get("trigger") or {"kind": "manual"},
        batch_id=listing.get("batch_id"), created_at=listing.get("created_at", ""), trial=bool(listing.get("trial")),
        finished_at=entry.get("finished_at"), overall_score=entry.get("overall_score"),
        category_scores=entry.get("category_scores") or {}, cost=entry.get("cost"), error=entry.get("error"))


# -- reading ----------------------------------------------------------------------------------------

@dataclass
class ReadStats:
    """What a list request cost: DynamoDB queries, index entries read, capacity units reported."""

    queries: int = 0
    items_read: int = 0
    capacity_units: float = 0.0
    partitions: int = 0
    index: str = ""


@dataclass
class IndexPage:
    items: list[EvalRunSummary]
    # Position (a run_order) the next page starts strictly below; None at the end of the list.
    next_position: str | None
    stats: ReadStats = field(default_factory=ReadStats)


@dataclass(frozen=True)
class _Entry:
    order: str
    data: dict[str, Any]


class DynamoRunIndex:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    def page(self, tenant: str, filters: RunFilters, *, limit: int, before: str | None, now_epoch: int,
             read_budget: int | None = None) -> IndexPage:
        """Up to `limit` matching runs strictly below `before`, newest first."""
        plan = plan_query(tenant, filters)
        stats = ReadStats(partitions=len(plan.partitions), index=plan.dimension.index)
        budget = read_budget if read_budget is not None else max(5 * limit, 100)
        upper = min([b for b in (filters.created_to, before) if b is not None], default=None)
        chunk = limit + 1 if len(plan.partitions) == 1 else max(10, min(limit + 1, 2 * (limit + 1) // len(
            plan.partitions) + 1))
        streams = [self._stream(plan.dimension, p, lower=filters.created_from, upper=upper, chunk=chunk,
                                stats=stats) for p in plan.partitions]
        merged = heapq.merge(*streams, key=lambda e: e.order, reverse=True)
        items: list[EvalRunSummary] = []
        evaluated = 0
        last_order: str | None = None
        for entry in merged:
            if len(items) == limit or evaluated >= budget:
                # Something is left below the last position: the page ends with a cursor.
                return IndexPage(items, last_order, stats)
            evaluated += 1
            last_order = entry.order
            expires = entry.data.get("expires_at")
            if isinstance(expires, int | float) and expires <= now_epoch:
                continue  # past its retention; DynamoDB's TTL deletes it within a day or two
            summary = summary_from_entry(entry.data)
            if filters.matches(summary):
                items.append(summary)
        return IndexPage(items, None, stats)

    def _stream(self, dimension: Dimension, pk: str, *, lower: str | None, upper: str | None, chunk: int,
                stats: ReadStats) -> Iterator[_Entry]:
        names = {"#pk": dimension.attribute}
        values: dict[str, Any] = {":pk": {"S": pk}}
        condition = "#pk = :pk"
        if lower is not None or upper is not None:
            names["#o"] = RUN_ORDER  # DynamoDB refuses names an expression does not use
        if lower is not None and upper is not None:
            condition += " AND #o BETWEEN :lo AND :hi"
            values.update({":lo": {"S": lower}, ":hi": {"S": upper}})
        elif upper is not None:
            condition += " AND #o < :hi"
            values[":hi"] = {"S": upper}
        elif lower is not None:
            condition += " AND #o >= :lo"
            values[":lo"] = {"S": lower}
        kwargs: dict[str, Any] = {
            "TableName": self._table, "IndexName": dimension.index, "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            "ScanIndexForward": False, "Limit": chunk, "ReturnConsumedCapacity": "TOTAL"}
        while True:
            try:
                resp = self._ddb.query(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
                logger.warning("run index query failed", extra={"index": dimension.index, "aws_error": code})
                raise DependencyUnavailable("The run history is unavailable; retry shortly.") from None
            stats.queries += 1
            stats.items_read += int(resp.get("ScannedCount", len(resp.get("Items", []))))
            stats.capacity_units += float((resp.get("ConsumedCapacity") or {}).get("CapacityUnits", 0.0))
            for raw in resp.get("Items", []):
                data = from_item(raw)
                order = str(data.get(RUN_ORDER, ""))
                if upper is not None and order == upper:
                    continue  # BETWEEN is inclusive; the upper bound is exclusive
                yield _Entry(order, data)
            last = resp.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last
            # Later chunks of a partition the merge keeps drawing from: read more per request.
            kwargs["Limit"] = min(max(chunk, 2 * int(kwargs["Limit"])), 1000)
