"""What the worker's eval job needs from the outside world: the run store, vendor credentials, the run's
eval context and questions, judge facts, learned context limits, events, judge models and rate gates.

Implemented by adapters and services wired in `chalicelib/wiring.py`; `services/eval_jobs.py` (the job)
and `services/vendor_batch_runs.py` (batch mode) depend only on these shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from chalicelib.domain.context_limits import LearnedContextLimit
from chalicelib.domain.evaluation import QuestionOutcome, SessionEvalCompleted, TokenUsage, VendorName
from chalicelib.domain.judging import JudgeModel
from chalicelib.domain.rate_limit import VendorCallGate
from chalicelib.domain.runs import EvalRun, RunError
from chalicelib.judges.catalog import Question
from chalicelib.services.admin_settings import VendorCredentials
from chalicelib.services.sessions import EvalContextDoc

# The EventBridge detail type a finished run is announced with (server runs and batch-mode runs alike).
EVENT_DETAIL_TYPE = "SessionEvalCompleted"


class RunStore(Protocol):
    def get(self, tenant: str, run_id: str) -> EvalRun | None: ...

    def status_of(self, tenant: str, run_id: str) -> str | None: ...

    def start(self, tenant: str, run_id: str, *, now: str, outcomes: list[QuestionOutcome],
              context: dict[str, Any] | None = None, lease_seconds: float | None = None,
              lease_id: str | None = None) -> EvalRun: ...

    def record_outcomes(self, tenant: str, run_id: str, outcomes: list[QuestionOutcome], usage: TokenUsage, *,
                        extra: dict[str, Any] | None = None) -> EvalRun: ...

    def finish(self, tenant: str, run_id: str, *, status: str, now: str, usage: TokenUsage,
               result: SessionEvalCompleted | None = None, error: RunError | None = None,
               outcomes: list[QuestionOutcome] = ..., from_statuses: tuple[str, ...] = ...,
               extra: dict[str, Any] | None = None) -> EvalRun: ...


class VendorCredentialSource(Protocol):
    def resolve_vendor_credentials(self, tenant: str, vendor: VendorName, *,
                                   fresh: bool = False) -> VendorCredentials: ...

    def invalidate_vendor_credentials(self, tenant: str, vendor: VendorName) -> None: ...

    def mark_vendor_suspended(self, tenant: str, vendor: VendorName, reason: str, *,
                              secret_version_id: str | None = None, actor: str = ...) -> bool: ...


class EvalContextSource(Protocol):
    def load_eval_context_doc(self, tenant: str, session_id: str, threshold: int | str | None = ...,
                              chain: bool = ..., *, stop: Callable[[], bool] | None = ...) -> EvalContextDoc: ...


class KnownPatternSource(Protocol):
    """The repository's retained judge facts for a run's prompts, or None when the tenant does not give
    them to judges (`chalicelib.services.judge_facts.JudgeFactService`)."""

    def known_patterns(self, tenant: str, session_id: str) -> list[str] | None: ...


class RunQuestionSource(Protocol):
    """The questions a run judges, by id, as dispatched: its catalog version or the question it carries
    (`chalicelib.services.catalog.CatalogService`)."""

    def questions_for_run(self, run: EvalRun) -> Mapping[str, Question]: ...


class ContextLimitMemory(Protocol):
    """The context limits vendors stated, per (tenant, vendor, base_url, model)."""

    def get(self, tenant: str, vendor: str, base_url: str | None, model: str) -> LearnedContextLimit | None: ...

    def remember(self, tenant: str, limit: LearnedContextLimit) -> None: ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...


class JudgeModelFactory(Protocol):
    def __call__(self, vendor: Literal["anthropic", "openai"], *, api_key: str, base_url: str | None,
                 max_retries: int, timeout_seconds: float, gate: VendorCallGate | None = None) -> JudgeModel: ...


class RunRateGate(VendorCallGate, Protocol):
    """The fleet's rate limiter as one run sees it (`chalicelib.adapters.rate_limiter.SharedRateGate`)."""

    def prefetch(self) -> None: ...

    async def aclose(self) -> None: ...

    def summary(self) -> dict[str, Any]: ...


class RateGateFactory(Protocol):
    def __call__(self, tenant: str, vendor: VendorName, *, log_fields: Mapping[str, Any]) -> RunRateGate: ...
