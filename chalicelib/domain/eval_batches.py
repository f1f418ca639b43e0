"""Bulk evaluation (pure): an eval batch's request, its stored record and its progress view.

`POST /eval-batches` judges many sessions with one request: explicit session ids, or a filter over
the tenant's sessions (the rule filter plus an upload-time window). At most `MAX_BATCH_RUNS` runs per
batch: a filter that matches more is refused with the count it would have created, so nobody starts
thousands of billable runs by accident.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from chalicelib.domain.automation import RuleFilter, RunMode
from chalicelib.domain.evaluation import VendorName
from chalicelib.domain.runs import QuestionRef
from chalicelib.domain.spend import micros_to_usd

MAX_BATCH_RUNS = 500
# A filter reads the tenant's session list (newest first); past this many sessions it stops and the
# refusal says "at least".
MAX_BATCH_SCAN = 20_000
BATCH_BODY_MAX_BYTES = 128 * 1024
MAX_SELECTION_TOKENS = 64

BatchStatus = Literal["creating", "running", "finished", "cancelled"]
# Per run in the batch record: where it is, as far as the batch has been told.
EntryStatus = Literal["delayed", "queued", "running", "succeeded", "failed", "timed_out", "cancelled"]
TERMINAL_ENTRY: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "cancelled"})

SessionIdToken = Annotated[str, Field(min_length=1, max_length=200)]
SelectionToken = Annotated[str, Field(min_length=1, max_length=200)]
IsoTime = Annotated[str, Field(min_length=10, max_length=40)]


class BatchFilter(RuleFilter):
    """The rule filter over the tenant's sessions, optionally within an upload-time window."""

    model_config = ConfigDict(extra="forbid")

    uploaded_from: IsoTime | None = Field(default=None, description="Only sessions uploaded at or after "
                                                                     "this ISO-8601 time.")
    uploaded_to: IsoTime | None = Field(default=None, description="Only sessions uploaded before this time.")

    @field_validator("uploaded_from", "uploaded_to")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from chalicelib.domain.clock import iso, parse_iso

        try:
            return iso(parse_iso(value))
        except ValueError:
            raise ValueError("an ISO-8601 time, e.g. 2026-12-01T00:00:00Z") from None


class EvalBatchRequest(BaseModel):
    """`POST /eval-batches`: which sessions, how, and the EvalRunRequest fields every run gets."""

    model_config = ConfigDict(extra="forbid")

    session_ids: list[SessionIdToken] | None = Field(
        default=None, min_length=1, max_length=MAX_BATCH_RUNS,
        description=f"Sessions to judge (at most {MAX_BATCH_RUNS}); not together with 'filter'.")
    filter: BatchFilter | None = Field(
        default=None, description=f"Judge every session of the tenant that matches; refused when it matches more "
                                  f"than {MAX_BATCH_RUNS} (details.would_create says how many).")
    mode: RunMode = Field(description="'now': judged at once; 'batch': through the vendor's batch API at its "
                                      "discount, within 24 h.")
    vendor: VendorName | None = None
    runner: Literal["server"] | None = Field(default=None, description="Batches run on the server runner only.")
    questions: list[SelectionToken] | None = Field(default=None, max_length=MAX_SELECTION_TOKENS)
    skip: list[SelectionToken] | None = Field(default=None, max_length=MAX_SELECTION_TOKENS)
    chain: StrictBool = False
    threshold: StrictInt | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EvalBatchRequest:
        if (self.session_ids is None) == (self.filter is None):
            raise ValueError("give exactly one of 'session_ids' or 'filter'")
        return self


class BatchAccepted(BaseModel):
    """202 body of `POST /eval-batches`."""

    batch_id: str
    runs: int = Field(description="Runs created (one per session).")
    estimate_usd_high: float | None = Field(description="Upper bound of what the whole batch can cost; null when "
                                                        "a model has no price.")
    mode: RunMode
    status: BatchStatus
    started: int = Field(description="Runs handed to a runner at once; the rest are queued (delayed) until "
                                     "active-run slots free.")


class RunShape(BaseModel):
    """What every run of one automated plan gets (a rule's match, each run of a batch): the request as
    resolved once against the settings and the catalog. A batch stores it, so an interrupted batch
    resumes with exactly the runs it planned."""

    model_config = ConfigDict(extra="ignore")

    mode: RunMode
    vendor: VendorName | None
    model: str | None
    questions: list[QuestionRef]
    threshold: int
    chain: bool
    catalog_version: int = 0
    run_timeout_seconds: int


class BatchEstimate(BaseModel):
    """`POST /eval-batches/estimate`: what the same `POST /eval-batches` would create, before it does."""

    runs: int = Field(description="Runs the batch would create (one per session).")
    session_ids: list[str]
    mode: RunMode
    vendor: VendorName | None
    model: str | None
    questions: int
    estimate_usd_high: float | None = Field(description="Upper bound of what the whole batch can cost (the "
                                                        "budget reservation); null when the model has no price.")
    estimate_usd_low: float | None = Field(default=None, description="What the batch will most likely cost.")
    priced: bool
    within_limits: bool = Field(default=True, description="Whether the budgets have room for the whole batch now "
                                                          "(quotas do not refuse a batch: its runs wait for slots).")
    blocked_by: str | None = Field(default=None, description="budget_exceeded when a budget refuses it")
    reason: str | None = Field(default=None, description="Why, in words, when blocked.")


class BatchRunEntry(BaseModel):
    """One run of a batch as the batch record tracks it (`s` status, `c` cost micro-USD, `f` finished)."""

    model_config = ConfigDict(extra="ignore")

    s: EntryStatus = "delayed"
    c: int | None = None
    f: str | None = None
    priced: bool = True


class EvalBatch(BaseModel):
    """The stored batch record (`BATCH#<batch_id>`): the plan and where each of its runs is."""

    model_config = ConfigDict(extra="ignore")

    batch_id: str
    tenant: str
    created_by: str
    created_at: str
    mode: RunMode
    status: BatchStatus = "creating"
    shape: RunShape
    source: Literal["session_ids", "filter"] = "session_ids"
    filter: dict[str, Any] | None = None
    sessions: list[str] = Field(default_factory=list)
    run_ids: list[str] = Field(default_factory=list)
    runs: dict[str, BatchRunEntry] = Field(default_factory=dict)
    estimate_micros: int | None = None
    cancelled_at: str | None = None
    cancelled_by: str | None = None
    version: int = 0


class BatchCost(BaseModel):
    usd: float | None = Field(description="What the batch's finished runs cost so far; null when none is priced.")
    priced: bool = Field(description="False when some run's model has no price (its cost is not included).")
    batch: bool = Field(description="Judged through the vendor's batch API at its discount.")


class EvalBatchView(BaseModel):
    """`GET /eval-batches/{batch_id}`."""

    batch_id: str
    mode: RunMode
    status: BatchStatus
    counts: dict[str, int] = Field(description="Runs per status (queued includes delayed ones).")
    delayed: int = Field(description="Queued runs waiting for an active-run slot.")
    runs: int
    cost: BatchCost
    estimate_usd_high: float | None
    vendor: VendorName | None
    model: str | None
    questions: int
    created_at: str
    created_by: str
    finished_at: str | None
    cancelled_at: str | None = None
    run_ids: list[str] = Field(description="The batch's runs in session order (GET /eval-runs/{id}).")
    session_ids: list[str]


class EvalBatchList(BaseModel):
    items: list[EvalBatchView]
    next_cursor: str | None = None


def batch_view(batch: EvalBatch, live: dict[str, BatchRunEntry] | None = None) -> EvalBatchView:
    """The view from the record, with `live` entries (just read from the runs) taking precedence."""
    entries = {**batch.runs, **(live or {})}
    counts: dict[str, int] = {}
    delayed = 0
    cost = 0
    priced = True
    any_cost = False
    finished: list[str] = []
    for run_id in batch.run_ids:
        entry = entries.get(run_id, BatchRunEntry())
        shown = "queued" if entry.s == "delayed" else entry.s
        delayed += entry.s == "delayed"
        counts[shown] = counts.get(shown, 0) + 1
        if entry.s in TERMINAL_ENTRY:
            if entry.f:
                finished.append(entry.f)
            if entry.c is not None:
                cost += entry.c
                any_cost = True
            priced = priced and entry.priced
    done = bool(batch.run_ids) and all(entries.get(r, BatchRunEntry()).s in TERMINAL_ENTRY for r in batch.run_ids)
    status: BatchStatus = batch.status
    if batch.status == "running" and done:
        status = "finished"
    finished_at = max(finished) if done and finished else (batch.cancelled_at if done else None)
    return EvalBatchView(
        batch_id=batch.batch_id, mode=batch.mode, status=status, counts=counts, delayed=delayed,
        runs=len(batch.run_ids), cost=BatchCost(usd=micros_to_usd(cost) if any_cost else None, priced=priced,
                                                batch=batch.mode == "batch"),
        estimate_usd_high=micros_to_usd(batch.estimate_micros) if batch.estimate_micros is not None else None,
        vendor=batch.shape.vendor, model=batch.shape.model, questions=len(batch.shape.questions),
        created_at=batch.created_at,
        created_by=batch.created_by, finished_at=finished_at, cancelled_at=batch.cancelled_at,
        run_ids=list(batch.run_ids), session_ids=list(batch.sessions))
