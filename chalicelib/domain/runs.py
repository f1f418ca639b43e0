"""Eval runs: the stored record of one evaluation, its state machine and its public view.

Both runners (the SQS worker and a user's daemon) write the same record through the same store,
so `GET /eval-runs/{id}` looks identical whichever path ran the judges.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.automation import ManualTrigger, RunMode, RunTrigger
from chalicelib.domain.evaluation import (
    TERMINAL_RUN_STATUSES,
    EvalRunStatus,
    FailureReason,
    QuestionOutcome,
    RunnerKind,
    SessionEvalCompleted,
    TokenUsage,
    VendorName,
)
from chalicelib.domain.spend import RunAdmission, RunCost, run_cost
from chalicelib.domain.spend_prices import ModelPrice, PriceTable, cost_micros
from chalicelib.judges.catalog import Question

# Allowed status transitions; anything else is a conflict (e.g. a result posted after cancel).
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "timed_out", "cancelled"}),
    "running": frozenset({"running", "succeeded", "failed", "timed_out", "cancelled"}),
    "succeeded": frozenset({"queued"}),   # rerun of questions that failed in a succeeded run
    "failed": frozenset({"queued"}),      # rerun of failed questions
    "timed_out": frozenset({"queued"}),
    "cancelled": frozenset({"queued"}),
}


# The views (run, progress, list) are built on first use (`defer_build`): dispatch builds runs, never views
# (bench/coldstart).


class RunError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    details: dict[str, Any] | None = None


class QuestionRef(BaseModel):
    """A selected catalog question, denormalised into the run so it reads without the catalog."""

    model_config = ConfigDict(extra="forbid")

    question_id: str
    category: str


class EvalRun(BaseModel):
    """The stored run record (one DynamoDB item; outcomes are a map keyed by question id)."""

    model_config = ConfigDict(extra="ignore")

    eval_run_id: str
    tenant: str
    session_id: str
    created_by: str
    runner: RunnerKind
    vendor: VendorName | None = None
    model: str | None = None
    status: EvalRunStatus = "queued"
    questions: list[QuestionRef]
    threshold: int = 2000
    chain: bool = False
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    deadline_at: str
    run_timeout_seconds: int
    outcomes: dict[str, QuestionOutcome] = Field(default_factory=dict)
    result: SessionEvalCompleted | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    error: RunError | None = None
    cancel_requested: bool = False
    daemon_id: str | None = None
    idempotency_key: str | None = None
    attempts: int = 0
    context: dict[str, Any] | None = None
    retrospective_status: str | None = None
    # The tenant catalog version the questions come from (0: the built-ins, also for runs stored before
    # catalogs were versioned). A try-it run judges `trial_questions` instead (its one question, saved
    # or not), and records the version that was current for reference.
    catalog_version: int = 0
    trial_questions: list[Question] | None = None
    # Set once per attempt by the run lifecycle's finalizer (services/run_lifecycle.py), removed by a rerun.
    finalized_at: str | None = None
    # What the spend ledger admitted this attempt with (quota slot, budget reservation); None for
    # runs stored before spend governance, which the finalizer then leaves out of the ledger.
    admission: RunAdmission | None = None
    # Online and bulk evaluation (services/eval_rules.py, services/eval_batches.py): what started the run,
    # the batch it belongs to, whether its judges go through the vendor's batch API, and `delayed` while
    # it waits for an active-run slot (queued, not handed to a runner yet).
    trigger: RunTrigger = Field(default_factory=ManualTrigger)
    batch_id: str | None = None
    mode: RunMode = "now"
    delayed: bool = False
    vendor_batch_id: str | None = None
    # Stored by the finalizer (spend's participant); a run still in progress shows its live cost.
    cost: RunCost | None = None
    # Worst case of judge calls cut off before the vendor reported usage (the spend guard's count).
    unreported_cost_micros: int = 0
    version: int = 0
    # Denormalised from the session at dispatch, so the tenant-wide list can filter on it (history).
    repository: str | None = None
    # DynamoDB TTL (epoch seconds): the session's retention end, stamped at dispatch (history).
    expires_at: int | None = None

    @property
    def batch(self) -> bool:
        """Judged through the vendor's batch API: its cost takes the price's batch discount."""
        return self.mode == "batch"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES

    def outcome(self, question_id: str) -> QuestionOutcome:
        found = self.outcomes.get(question_id)
        if found is not None:
            return found
        ref = next(q for q in self.questions if q.question_id == question_id)
        return QuestionOutcome(question_id=ref.question_id, category=ref.category)

    def pending_question_ids(self) -> list[str]:
        """Questions without a verdict: what a (re)run still has to judge."""
        return [q.question_id for q in self.questions if self.outcome(q.question_id).status != "scored"]


class QuestionProgress(BaseModel):
    model_config = ConfigDict(defer_build=True)

    question_id: str
    category: str
    status: str
    score: int | None = None
    verdict: str | None = None
    failure_reason: FailureReason | None = None
    usage: TokenUsage | None = None
    latency_ms: int | None = None
    attempts: int = 0
    cost_usd: float | None = None


class RunProgress(BaseModel):
    model_config = ConfigDict(defer_build=True)

    total: int
    completed: int
    failed: int
    questions: list[QuestionProgress]


class EvalRunView(BaseModel):
    """`GET /eval-runs/{id}`: the contract's shape plus a few extra fields."""

    model_config = ConfigDict(defer_build=True)

    eval_run_id: str
    session_id: str
    status: EvalRunStatus
    runner: RunnerKind
    vendor: VendorName | None
    model: str | None
    progress: RunProgress
    result: SessionEvalCompleted | None
    usage: TokenUsage
    error: RunError | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    deadline_at: str
    run_timeout_seconds: int
    created_by: str
    daemon_id: str | None = None
    context: dict[str, Any] | None = None
    retrospective_status: str | None = None
    duration_ms: int | None = None
    catalog_version: int = Field(default=0, description="The judge catalog version the run's questions come from.")
    trial: bool = Field(default=False, description="An admin's try-it run of one (possibly unsaved) question.")
    repository: str | None = None
    trigger: RunTrigger = Field(default_factory=ManualTrigger,
                                description="What started the run: {'kind': 'manual'}, {'kind': 'rule', 'rule_id'} "
                                            "or {'kind': 'batch', 'batch_id'}.")
    batch_id: str | None = Field(default=None, description="The eval batch the run belongs to (POST /eval-batches).")
    mode: RunMode = Field(default="now", description="'batch': judged through the vendor's batch API (discounted, "
                                                     "within 24 h).")
    delayed: bool = Field(default=False, description="Queued and waiting for an active-run slot; it starts when "
                                                     "one frees.")
    cost: RunCost = Field(default_factory=lambda: RunCost(usd=None, priced=False),
                          description="USD from the vendor-reported usage at the run's price; null when the model "
                                      "has no price or the runner reported no usage.")


class EvalRunList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    items: list[EvalRunView]
    next_cursor: str | None = None


_DEFAULT_TABLE = PriceTable()


def run_price(run: EvalRun) -> ModelPrice | None:
    """The price a run is costed at: the one it was admitted with, else (runs stored before spend
    governance) the shipped default for its model."""
    if run.admission is not None:
        return run.admission.price
    return _DEFAULT_TABLE.price_for(run.model)


def usage_known(run: EvalRun) -> bool:
    return all(o.usage_reported for o in run.outcomes.values())


def live_cost(run: EvalRun) -> RunCost:
    """The run's cost from its vendor-reported usage so far (final once the run is finalized)."""
    if run.cost is not None and run.finalized_at is not None:
        return run.cost
    return run_cost(run.usage, run_price(run), batch=run.batch, usage_known=usage_known(run),
                    admission=run.admission, unreported_micros=run.unreported_cost_micros)


def run_view(run: EvalRun) -> EvalRunView:
    from chalicelib.domain.clock import parse_iso

    price = run_price(run)
    questions = []
    completed = failed = 0
    for ref in run.questions:
        o = run.outcome(ref.question_id)
        if o.status == "scored":
            completed += 1
        elif o.status in ("failed", "timed_out", "cancelled"):
            failed += 1
        questions.append(QuestionProgress(
            question_id=o.question_id, category=o.category, status=o.status, score=o.score,
            verdict=o.verdict, failure_reason=o.failure_reason, usage=o.usage, latency_ms=o.latency_ms,
            attempts=o.attempts,
            cost_usd=(cost_micros(o.usage, price, batch=run.batch) / 1_000_000
                      if price is not None and o.usage_reported else None)))
    duration = None
    if run.started_at and run.finished_at:
        duration = int((parse_iso(run.finished_at) - parse_iso(run.started_at)).total_seconds() * 1000)
    return EvalRunView(
        eval_run_id=run.eval_run_id, session_id=run.session_id, status=run.status, runner=run.runner,
        vendor=run.vendor, model=run.model,
        progress=RunProgress(total=len(run.questions), completed=completed, failed=failed, questions=questions),
        result=run.result, usage=run.usage, error=run.error, created_at=run.created_at,
        started_at=run.started_at, finished_at=run.finished_at, deadline_at=run.deadline_at,
        run_timeout_seconds=run.run_timeout_seconds, created_by=run.created_by, daemon_id=run.daemon_id,
        context=run.context, retrospective_status=run.retrospective_status, duration_ms=duration,
        catalog_version=run.catalog_version, trial=bool(run.trial_questions),
        repository=run.repository, trigger=run.trigger, batch_id=run.batch_id, mode=run.mode, delayed=run.delayed,
        cost=live_cost(run))


class EvalJobMessage(BaseModel):
    """The SQS message body that hands a run to the worker (small: ids only, never content)."""

    model_config = ConfigDict(extra="forbid")

    tenant: str
    eval_run_id: str
    kind: str = Field(default="run", pattern="^(run|rerun)$")
    dispatched_at: str
    # "batch": the worker submits the run's judge calls as one vendor batch instead of calling them.
    mode: RunMode = "now"
