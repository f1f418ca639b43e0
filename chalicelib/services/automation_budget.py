"""What rule and batch runs may cost, checked before they are created.

Spend reserves each run's upper bound (`usd_high`, a true bound: every retry, repair and tool round at
the dearest rate) when the run takes its active-run slot (`RunBudgeting.admit_existing`, atomically
with the promotion), and settles the actual cost when it ends, returning the rest. Rule and batch runs
start a few at a time (the quota), so a batch never needs all its bounds at once; what it needs is:
- every run's bound fits what a budget has left after what was *spent* (otherwise no run of it could
  ever start), and
- what the batch will most likely cost (the sum of the runs' `usd_low`) fits it too.
An eval batch that fails either is refused 402 `budget_exceeded` as a whole (nothing stored); a rule's
run that does not fit is not created (the rule counts a `budget_exceeded` skip). A run that passed and
later meets a budget held by other runs' reservations waits for them to settle, like it waits for a
slot; one that meets a budget already spent fails `budget_exceeded` (`AutomatedDispatch._promote`).
Quotas are not checked here: automated runs wait for a slot instead of being refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chalicelib.domain.clock import Clock
from chalicelib.domain.errors import DomainError
from chalicelib.domain.runs import EvalRun
from chalicelib.domain.spend import BudgetExceeded, budget_status, micros_to_usd, usd_to_micros
from chalicelib.judges.catalog import Question, get_question
from chalicelib.services.spend import SpendService
from chalicelib.services.spend_admission import RunBudgeting
from chalicelib.services.spend_estimates import SpendEstimator

# Sessions estimated at once: each estimate reads and fits one session's context.
ESTIMATE_WORKERS = 8


class AutomationBudget:
    def __init__(self, *, budgeting: RunBudgeting, estimator: SpendEstimator, spend: SpendService,
                 questions_for_run: Callable[[EvalRun], Mapping[str, Question]], clock: Clock,
                 workers: int = ESTIMATE_WORKERS) -> None:
        self._budgeting = budgeting
        self._estimator = estimator
        self._spend = spend
        self._questions_for_run = questions_for_run
        self._clock = clock
        self._workers = workers

    def usd_high_micros(self, runs: Sequence[EvalRun]) -> int | None:
        """The sum of the runs' upper bounds (what their admissions reserve, one by one); None when the
        model has no price (such runs reserve nothing)."""
        found = self.bounds(runs)
        return found.high_micros if found is not None else None

    def bounds(self, runs: Sequence[EvalRun]) -> Bounds | None:
        """Each run's bound and expected cost as spend estimates them for its admission; None unpriced."""
        if not runs:
            return Bounds(high_micros=0, max_high_micros=0, low_micros=0)
        tenant = runs[0].tenant
        table = self._spend.prices(tenant)
        price = self._budgeting.price(runs[0], table)
        if price is None:
            return None
        known = self._questions_for_run(runs[0])
        questions = [q for ref in runs[0].questions
                     if (q := known.get(ref.question_id) or get_question(ref.question_id)) is not None]

        def one(run: EvalRun) -> tuple[int, int]:
            estimated = self._estimator.estimate(tenant, run.created_by, RunBudgeting.shape(run, questions), price,
                                                 issue_quote=False).estimate
            return estimated.high_micros, estimated.low_micros

        if len(runs) == 1:
            each = [one(runs[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(self._workers, len(runs))) as pool:
                each = list(pool.map(one, runs))
        return Bounds(high_micros=sum(h for h, _ in each), max_high_micros=max(h for h, _ in each),
                      low_micros=sum(low for _, low in each))

    def check(self, tenant: str, user: str, bounds: Bounds) -> None:
        """402 `budget_exceeded` (details: which budget, what is left, what is needed) when a run's bound
        or the expected total does not fit what a budget of `user` (or the tenant) has left after
        spending; quotas are not checked (automated runs wait for a slot)."""
        now = self._clock.now()
        for status in budget_status(self._spend.limits(tenant), self._spend.ledger_view(tenant), user, now):
            cap = usd_to_micros(status["limit_usd"])
            room = cap - usd_to_micros(status["spent_usd"])
            who = "the daily eval budget of " + user if status["budget"] == "user_daily" \
                else "your organisation's monthly eval budget"
            details = {**status, "needed_usd": micros_to_usd(bounds.max_high_micros),
                       "expected_usd": micros_to_usd(bounds.low_micros), "room_usd": micros_to_usd(max(room, 0))}
            if bounds.max_high_micros > room:
                raise BudgetExceeded(f"One evaluation can cost up to ${micros_to_usd(bounds.max_high_micros):.2f}, "
                                     f"but {who} has ${micros_to_usd(max(room, 0)):.2f} left to spend of "
                                     f"${status['limit_usd']:.2f} (resets {status['resets_at']}).", details=details)
            if bounds.low_micros > room:
                raise BudgetExceeded(f"These evaluations would most likely cost "
                                     f"${micros_to_usd(bounds.low_micros):.2f}, but {who} has "
                                     f"${micros_to_usd(max(room, 0)):.2f} left to spend of ${status['limit_usd']:.2f} "
                                     f"(resets {status['resets_at']}). Evaluate fewer sessions or questions.",
                                     details=details)


@dataclass(frozen=True)
class Bounds:
    high_micros: int  # the sum of the runs' upper bounds
    max_high_micros: int  # the largest one: what one run reserves when it starts
    low_micros: int  # the sum of the runs' expected costs


def waits_for_reservations(exc: DomainError) -> bool:
    """A budget refusal at a run's start that only the other runs' reservations cause: what was spent
    plus this run's bound fits, so it will fit once they settle (the run waits instead of failing)."""
    details = exc.details or {}
    try:
        return float(details["spent_usd"]) + float(details["needed_usd"]) <= float(details["limit_usd"])
    except (KeyError, TypeError, ValueError):
        return False
