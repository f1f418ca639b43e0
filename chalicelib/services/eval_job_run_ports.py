"""One claimed run's side of the judge phase (`JobRunPorts`): progress writes, the cancel poll, the key
refresh after a 401, remembering a vendor-stated context limit, and the rate gate and spend guard every
judge model of the run shares; plus the SDK retry budget for a run's remaining time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.context_limits import LearnedContextLimit, LimitSource, StatedLimit
from chalicelib.domain.errors import Conflict, DomainError
from chalicelib.domain.evaluation import QuestionOutcome, TokenUsage
from chalicelib.domain.judging import JudgeModel
from chalicelib.domain.runs import EvalRun
from chalicelib.domain.spend_prices import cost_micros
from chalicelib.observability import logger
from chalicelib.services.admin_settings import VendorCredentials
from chalicelib.services.eval_job_ports import (
    ContextLimitMemory,
    JudgeModelFactory,
    RunRateGate,
    RunStore,
    VendorCredentialSource,
)
from chalicelib.services.spend_guard import GuardedJudgeModel, SpendGuard


def sdk_max_retries(budget_seconds: float) -> int:
    """The SDK retries 429/5xx/529 with 0.5 s x 2^n backoff (or retry-after); more attempts only help
    when there is time to wait for them."""
    if budget_seconds < 30:
        return 2
    if budget_seconds < 120:
        return 3
    return 4


def dedupe_outcomes(outcomes: Sequence[QuestionOutcome]) -> list[QuestionOutcome]:
    # A DynamoDB update may not set the same map key twice; the last word on a question wins.
    latest = {o.question_id: o for o in outcomes}
    return list(latest.values())


def _spend_guard(run: EvalRun) -> SpendGuard | None:
    """The attempt's reservation as a hard cap on its judge calls (priced server runs only). A
    redelivery resumes with what the attempt already billed counted against it."""
    admission = run.admission
    if run.runner != "server" or admission is None or admission.price is None:
        return None
    billed = max(cost_micros(run.usage, admission.price, batch=admission.batch) - admission.base_cost_micros, 0)
    return SpendGuard(limit_micros=admission.reserved_micros, price=admission.price, batch=admission.batch,
                      billed_micros=billed)


class JobRunPorts:
    """`RunPorts` (`services/judge_ports.py`) for one claimed run: progress writes, the cancel poll, the key
    refresh, remembering a stated context limit, and the run's shared rate gate and spend guard."""

    def __init__(self, run: EvalRun, creds: VendorCredentials, *, runs: RunStore, settings: VendorCredentialSource,
                 build_judge_model: JudgeModelFactory, clock: Clock,
                 context_limits: ContextLimitMemory | None) -> None:
        self._runs = runs
        self._settings = settings
        self._build = build_judge_model
        self._clock = clock
        self._context_limits = context_limits
        self._run = run
        self.run = run
        self.creds = creds
        self.writes = 0
        self.carry: list[QuestionOutcome] = []  # progress a failed write could not store: goes with finish
        self.gate: RunRateGate | None = None  # every model of the run (a rotated key too) shares it
        self._budget = 0.0
        self.spend_guard = _spend_guard(run)  # every model of the run shares the attempt's reservation

    @property
    def reserved_micros(self) -> int:
        return self._run.admission.reserved_micros if self._run.admission is not None else 0

    def spend_facts(self) -> dict[str, Any]:
        return {"unreported_cost_micros": self.spend_guard.unreported_micros} if self.spend_guard else {}

    async def remember_context_limit(self, stated: StatedLimit, source: LimitSource) -> None:
        memory = self._context_limits
        run = self._run
        if memory is None or run.vendor is None:
            return
        limit = LearnedContextLimit(
            vendor=run.vendor, model=run.model or self.creds.model, base_url=self.creds.base_url,
            limit_tokens=stated.limit_tokens, stated_prompt_tokens=stated.prompt_tokens, source=source,
            learned_at=iso(self._clock.now()), eval_run_id=run.eval_run_id)
        await asyncio.to_thread(memory.remember, run.tenant, limit)
        logger.info("vendor-stated context limit remembered", extra={
            "tenant": run.tenant, "eval_run_id": run.eval_run_id, "vendor": run.vendor, "model": limit.model,
            "limit_tokens": limit.limit_tokens, "source": source})

    def build_model(self, creds: VendorCredentials, budget: float) -> JudgeModel:
        self._budget = budget
        model = self._build(creds.vendor, api_key=creds.api_key, base_url=creds.base_url,
                                     max_retries=sdk_max_retries(budget), timeout_seconds=max(budget, 1.0),
                                     gate=self.gate)
        return GuardedJudgeModel(model, self.spend_guard) if self.spend_guard is not None else model

    async def flush(self, outcomes: Sequence[QuestionOutcome], usage: TokenUsage,
                    context: Mapping[str, Any] | None) -> bool:
        run = self._run
        batch = dedupe_outcomes([*self.carry, *outcomes])
        extra = {"context": dict(context)} if context is not None else None
        try:
            await asyncio.to_thread(self._runs.record_outcomes, run.tenant, run.eval_run_id, batch,
                                    run.usage + usage, extra=extra)
        except Conflict:
            return False
        except DomainError as exc:
            # Progress is best effort: keep the batch for the next write (or the finish).
            logger.warning("progress write failed; retried with the next one",
                           extra={"tenant": run.tenant, "eval_run_id": run.eval_run_id, "error_code": exc.code})
            self.carry = batch
            return True
        self.writes += 1
        self.carry = []
        return True

    async def is_cancelled(self) -> bool:
        run = self._run
        try:
            status = await asyncio.to_thread(self._runs.status_of, run.tenant, run.eval_run_id)
        except Exception as exc:  # a failed poll is not a cancel; the next poll or write will tell
            logger.warning("run status poll failed", extra={"tenant": run.tenant, "eval_run_id": run.eval_run_id,
                                                            "error_type": type(exc).__name__})
            return False
        return status != "running"

    async def refresh_model(self) -> JudgeModel | None:
        run = self._run
        assert run.vendor is not None
        settings = self._settings
        await asyncio.to_thread(settings.invalidate_vendor_credentials, run.tenant, run.vendor)
        try:
            fresh = await asyncio.to_thread(settings.resolve_vendor_credentials, run.tenant, run.vendor, fresh=True)
        except DomainError:
            return None
        if fresh.api_key == self.creds.api_key:
            logger.info("vendor refused the key and it was not rotated", extra={
                "tenant": run.tenant, "eval_run_id": run.eval_run_id, "vendor": run.vendor})
            return None
        logger.info("vendor key was rotated; retrying with the new key", extra={
            "tenant": run.tenant, "eval_run_id": run.eval_run_id, "vendor": run.vendor})
        self.creds = fresh
        return self.build_model(fresh, max(self._budget, 1.0))
