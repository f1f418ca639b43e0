"""The spend seam of dispatch and rerun: what a run reserves, and its admission into the spend ledger.

`RunBudgeting` sits between the dispatch use case (`services/eval_runs.py`) and spend: dispatch
builds the run, this decides what it reserves (`usd_high` from the request's quote, or an estimate
made now; 0 for a daemon run, which bills the user's own subscription, or an unpriced model) and
runs dispatch's own transaction through `SpendService.admit`. A stale quote (the session was
replaced, the prices changed, the quote expired) is estimated again, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.adapters.run_store import SessionChanged, TransactItem
from chalicelib.domain.clock import Clock, parse_iso
from chalicelib.domain.runs import EvalRun, usage_known
from chalicelib.domain.spend import LedgerView, RunAdmission, budget_status, refusal_for
from chalicelib.domain.spend_prices import ModelPrice, PriceTable, cost_micros
from chalicelib.judges.catalog import Question, get_question
from chalicelib.services.spend import AdmissionRequest, QuoteRejected, SpendService
from chalicelib.services.spend_estimates import RunShape, SpendEstimator, decode_quote

# The estimate route's models are built on first use (`defer_build`): dispatch never builds one (bench/coldstart).


class ActiveRuns(BaseModel):
    model_config = ConfigDict(defer_build=True)

    user: int
    user_limit: int
    tenant: int
    tenant_limit: int


class EvalRunEstimate(BaseModel):
    """`POST /sessions/{id}/eval-runs/estimate`: what the run would cost and whether the limits allow it."""

    model_config = ConfigDict(defer_build=True)

    input_tokens: int = Field(description="expected prompt tokens of the whole run (fitted context, every judge)")
    max_output_tokens: int = Field(description="the most output tokens the run can be billed for")
    usd_low: float | None = Field(description="expected cost: first answers, cache warm after the first judge")
    usd_high: float | None = Field(description="a true upper bound of the run's cost (what dispatch reserves)")
    within_limits: bool
    blocked_by: str | None = Field(description="too_many_active_runs | budget_exceeded when a limit refuses")
    reason: str | None = Field(default=None, description="why, in words, when blocked")
    limit: str | None = Field(default=None, description="user | tenant | user_daily | tenant_monthly")
    runner: str
    vendor: str | None
    model: str | None
    priced: bool
    questions: int
    budgets: list[dict[str, Any]] = Field(default_factory=list,
                                          description="each capped budget: limit, committed, spent, left, resets_at")
    active_runs: ActiveRuns
    quote: str | None = Field(default=None, description="send it back as 'quote' when dispatching this request "
                                                         "(within 15 minutes) to reserve exactly this estimate")
    formula: dict[str, Any] = Field(default_factory=dict)


class RunBudgeting:
    def __init__(self, *, spend: SpendService, estimator: SpendEstimator, clock: Clock,
                 questions_for_run: Callable[[EvalRun], Mapping[str, Question]] | None = None) -> None:
        self._spend = spend
        self._estimator = estimator
        self._clock = clock
        self._questions_for_run = questions_for_run

    def price(self, run: EvalRun, table: PriceTable | None = None) -> ModelPrice | None:
        if run.runner != "server":
            return None
        return (table or self._spend.prices(run.tenant)).price_for(run.model)

    @staticmethod
    def shape(run: EvalRun, questions: Sequence[Question], *, retrospective: bool = True) -> RunShape:
        if run.mode == "batch":
            # A vendor batch judges each question in one round (services/vendor_batch_runs.py): tool
            # questions on the trace alone, without the session tools, and no retrospective. Its bound
            # must not hold tool rounds it can never make.
            questions = [q.model_copy(update={"needs_tools": False}) if q.needs_tools else q for q in questions]
            retrospective = False
        return RunShape(session_id=run.session_id, questions=questions, threshold=run.threshold, chain=run.chain,
                        runner=run.runner, vendor=run.vendor, model=run.model, retrospective=retrospective,
                        batch=run.batch, catalog_version=run.catalog_version)

    # -- estimate -------------------------------------------------------------------------------
    def estimate(self, run: EvalRun, questions: Sequence[Question], *, retrospective: bool) -> EvalRunEstimate:
        price = self.price(run, self._spend.prices(run.tenant))
        shape = self.shape(run, questions, retrospective=retrospective)
        est = self._estimator.estimate(run.tenant, run.created_by, shape, price)
        limits = self._spend.limits(run.tenant)
        ledger = self._spend.ledger_view(run.tenant)
        now = self._clock.now()
        refusal = refusal_for(limits, ledger, user=run.created_by, runs=1, reserve_micros=est.estimate.high_micros,
                              now=now)
        return EvalRunEstimate(
            input_tokens=est.estimate.input_tokens, max_output_tokens=est.estimate.max_output_tokens,
            usd_low=est.estimate.usd_low, usd_high=est.estimate.usd_high, within_limits=refusal is None,
            blocked_by=refusal.code if refusal else None, reason=refusal.message if refusal else None,
            limit=refusal.name if refusal else None, runner=run.runner, vendor=run.vendor, model=run.model,
            priced=price is not None, questions=len(questions),
            budgets=budget_status(limits, ledger, run.created_by, now),
            active_runs=ActiveRuns(user=ledger.active_by_user.get(run.created_by, 0),
                                   user_limit=limits.max_active_runs_per_user, tenant=len(ledger.open_runs),
                                   tenant_limit=limits.max_active_runs_per_tenant),
            quote=est.quote, formula=est.estimate.breakdown)

    # -- admission ------------------------------------------------------------------------------
    def admit_new(self, run: EvalRun, questions: Sequence[Question], *, quote: str | None, retrospective: bool,
                  create: Callable[[EvalRun, int | None, list[TransactItem]], None]) -> EvalRun:
        """Admit a new run with `create(run, session_revision, extra_writes)` as its transaction."""
        table = self._spend.prices(run.tenant)
        price = self.price(run, table)
        shape = self.shape(run, questions, retrospective=retrospective)
        parsed = decode_quote(quote) if price is not None else None
        deadline = int(parse_iso(run.deadline_at).timestamp())
        for use_quote in ((True, False) if parsed is not None else (False,)):
            checks: list[TransactItem] = []
            revision: int | None = None
            reserve = 0
            if price is not None:
                if use_quote and parsed is not None:
                    reserve, revision = parsed.high_micros, parsed.session_revision
                    checks = [self._estimator.quote_check(run.tenant, run.created_by, shape, parsed)]
                else:
                    est = self._estimator.estimate(run.tenant, run.created_by, shape, price, issue_quote=False)
                    reserve, revision = est.estimate.high_micros, est.session_revision

            def commit(admissions: list[RunAdmission], writes: list[TransactItem],
                       revision: int | None = revision) -> EvalRun:
                admitted = run.model_copy(update={"admission": admissions[0]})
                create(admitted, revision, writes)
                return admitted

            try:
                return self._spend.admit(run.tenant, run.created_by,
                                         [AdmissionRequest(run.eval_run_id, deadline, reserve_micros=reserve)],
                                         commit, price=price, batch=run.batch, checks=checks, prices=table)
            except (QuoteRejected, SessionChanged):
                if not use_quote:
                    raise
        raise AssertionError("unreachable: the last attempt estimates afresh")  # pragma: no cover

    def admit_existing(self, run: EvalRun, *, deadline_epoch: int,
                       commit: Callable[[RunAdmission, list[TransactItem]], EvalRun],
                       question_ids: Sequence[str] | None = None) -> EvalRun:
        """Admit a new attempt of a stored run — a rerun's pending questions, a delayed rule or batch
        run taking its slot — with `commit(admission, writes)` as its transaction. It reserves the
        upper bound of the questions it will judge (estimated now), on top of what earlier attempts
        billed."""
        table = self._spend.prices(run.tenant)
        price = self.price(run, table)
        reserve = 0
        if price is not None:
            known = self._questions_for_run(run) if self._questions_for_run is not None else {}
            ids = question_ids if question_ids is not None else [q.question_id for q in run.questions]
            questions = [q for qid in ids if (q := known.get(qid) or get_question(qid)) is not None]
            est = self._estimator.estimate(run.tenant, run.created_by, self.shape(run, questions), price,
                                           issue_quote=False)
            reserve = est.estimate.high_micros
        # What the earlier attempts billed, at the price this attempt is settled with.
        base = cost_micros(run.usage, price, batch=run.batch) if price is not None and usage_known(run) else 0
        request = AdmissionRequest(run.eval_run_id, deadline_epoch, reserve_micros=reserve, base_cost_micros=base)
        return self._spend.admit(run.tenant, run.created_by, [request],
                                 lambda admissions, writes: commit(admissions[0], writes), price=price,
                                 batch=run.batch, prices=table)

    def admit_reopen(self, run: EvalRun, pending: Sequence[str], *, deadline_epoch: int,
                     reopen: Callable[[RunAdmission, list[TransactItem]], EvalRun]) -> EvalRun:
        """Admit a rerun's new attempt (its pending questions) with `reopen(admission, writes)`."""
        return self.admit_existing(run, deadline_epoch=deadline_epoch, commit=reopen, question_ids=pending)

    def ledger(self, tenant: str) -> LedgerView:
        return self._spend.ledger_view(tenant)
