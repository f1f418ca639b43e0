"""Structured logging and metrics (AWS Lambda Powertools), shared by the API and the worker.

Log lines carry tenant, user and eval_run_id as appended keys, never key material or transcript
text: callers log identifiers and counts only. Keys are bound per request (`http.endpoint`) and per
worker record (`worker_record_log_keys`) with Powertools' context-local keys, so two requests or
records served by threads of one process (the local stack's API server and worker loop) never mix
them up; `lambda_entry` / the app middleware clear them at the start of every invocation.

Metric names (namespace EvalRunner, EMF): `EvalRuns` (dimensions status, runner, vendor),
`JudgeLatency` (ms), `InputTokens` / `OutputTokens` / `CacheReadInputTokens` /
`CacheCreationInputTokens`, `JudgeCalls`, `JudgePhaseDuration`, `VendorErrors` (dimension kind).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from chalicelib.domain.evaluation import QuestionOutcome

# Most API requests emit no metric; Powertools would warn on every one of them.
warnings.filterwarnings("ignore", message="No application metrics to publish")

SERVICE = "eval-runner"
METRICS_NAMESPACE = "EvalRunner"
# The correlation keys every line of a request or a worker record carries (cold_start comes from
# inject_lambda_context).
LOG_CONTEXT_KEYS = ("tenant", "user", "eval_run_id")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)

H = TypeVar("H", bound=Callable[..., Any])


def bind_log_keys(**keys: str | None) -> None:
    """Add correlation keys (tenant, user, eval_run_id) to every following line of this request or
    record. `None` values are skipped, so a later bind cannot erase a known key."""
    present = {k: v for k, v in keys.items() if v is not None}
    if present:
        logger.thread_safe_append_keys(**present)


@contextmanager
def worker_record_log_keys(*, tenant: str, eval_run_id: str) -> Iterator[None]:
    """The keys of one SQS record, removed when it is done so the next record of the batch starts
    clean (the user is bound once the run is loaded: the message carries ids only)."""
    bind_log_keys(tenant=tenant, eval_run_id=eval_run_id)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(LOG_CONTEXT_KEYS)


def lambda_entry(handler: H) -> H:
    """What the app's middleware does for Chalice-invoked functions, for handlers called directly
    (the local stack's worker loop): cold_start and the Lambda context on every line, per-invocation
    keys cleared, metrics flushed."""
    return cast(H, logger.inject_lambda_context(clear_state=True)(metrics.log_metrics(handler)))


def emit_run_status(status: str, *, runner: str, vendor: str | None) -> None:
    """One `EvalRuns` count for a run reaching `status` (both runners, and the dispatch's `queued`)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name="EvalRuns", unit=MetricUnit.Count, value=1, namespace=METRICS_NAMESPACE,
                       default_dimensions={"service": SERVICE, "status": status, "runner": runner,
                                           "vendor": vendor or "none"}):
        pass  # single_metric emits the EMF record when the block exits


def log_judge_progress(outcome: QuestionOutcome, index: int, total: int, *, runner: str) -> None:
    """The console's progress line for one finished judge (identifiers, score and counts only: never
    the finding, evidence or any other transcript-derived text)."""
    text = f"{runner} judge {index}/{total} {outcome.question_id}: {outcome.status}"
    if outcome.score is not None:
        text += f" score {outcome.score}"
    if outcome.failure_reason is not None:
        text += f" ({outcome.failure_reason.kind})"
    logger.info(text, extra={
        "runner": runner, "question_id": outcome.question_id, "category": outcome.category,
        "status": outcome.status, "score": outcome.score, "latency_ms": outcome.latency_ms,
        "failure_kind": outcome.failure_reason.kind if outcome.failure_reason else None,
        "input_tokens": outcome.usage.input_tokens, "output_tokens": outcome.usage.output_tokens})
