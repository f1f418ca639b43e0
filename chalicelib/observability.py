"""Structured logging and metrics (AWS Lambda Powertools), shared by the API and the worker.

Log lines carry tenant, user and eval_run_id as appended keys, never key material or transcript
text: callers log identifiers and counts only. Keys are bound per request (`http.endpoint`) and per
worker record (`worker_record_log_keys`) with Powertools' context-local keys, so two requests or
records served by threads of one process (the local stack's API server and worker loop) never mix
them up; `lambda_entry` / the app middleware clear them at the start of every invocation.

Metric names (namespace EvalRunner, EMF): `EvalRuns` (dimensions status, runner, vendor),
`JudgeLatency` (ms), `InputTokens` / `OutputTokens` / `CacheReadInputTokens` /
`CacheCreationInputTokens`, `JudgeCalls`, `JudgePhaseDuration`, `VendorErrors` (dimension kind),
and Powertools' `ColdStart` (dimension function_name) once per execution environment of every function.
"""

from __future__ import annotations

import functools
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


_announced_cold_start = False


def _announce_cold_start(handler_name: str) -> None:
    """One INFO line per execution environment, so every function's first invocation shows its
    Lambda context in the logs even when the invocation itself logs nothing."""
    global _announced_cold_start
    if not _announced_cold_start:
        _announced_cold_start = True
        logger.info("cold start", extra={"handler": handler_name})


def observe(handler: H) -> H:
    """Wraps a plain `(event, context)` Lambda handler: cold_start and the Lambda context on every
    line, per-invocation keys cleared, the `ColdStart` metric on a cold start, metrics flushed.
    The app uses it as its HTTP middleware (`ConvertToMiddleware(observe)`)."""
    name = getattr(handler, "__qualname__", getattr(handler, "__name__", "handler"))

    def announced(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        _announce_cold_start(name)
        return handler(event, context, *args, **kwargs)

    wrapped = metrics.log_metrics(announced, capture_cold_start_metric=True)
    return cast(H, logger.inject_lambda_context(clear_state=True)(wrapped))


class _DirectCallContext:
    """Stands in for the Lambda context when a handler is called directly (tests, tools) with None."""

    def __init__(self, function_name: str) -> None:
        import uuid

        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 0
        self.invoked_function_arn = ""
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 0


def _is_chalice_event(event: Any) -> bool:
    return hasattr(event, "context") and callable(getattr(event, "to_dict", None))


def lambda_entry(handler: H) -> H:
    """For every function that is not the REST API: its Lambda handler is its own module (a
    blueprint's `module.function`), which never imports `app.py`, so the app's middleware never
    wraps it in AWS. Put this under the Chalice decorator (it keeps the function's name, which
    Chalice turns into the handler path):

        @bp.on_sqs_message(queue=..., name="eval_worker")
        @lambda_entry
        def eval_worker(event): ...

    It takes both shapes Chalice calls: a Chalice event object (`SQSEvent`, `CloudWatchEvent`, … with
    `.context`), or a raw `(event, context)` (blueprint WebSocket handlers, pure Lambdas)."""

    def call(event: Any, context: Any, chalice_event: Any = None) -> Any:
        if chalice_event is not None:
            return handler(chalice_event)
        # The stand-in is for Powertools only: the handler sees what its caller passed.
        return handler(event, None if isinstance(context, _DirectCallContext) else context)

    call.__qualname__ = getattr(handler, "__qualname__", "handler")
    observed = observe(call)

    @functools.wraps(handler)
    def entry(event: Any, context: Any = None) -> Any:
        if context is None and _is_chalice_event(event):
            return observed(event.to_dict(), event.context or _DirectCallContext(call.__qualname__), event)
        if context is None:
            return observed(event, _DirectCallContext(call.__qualname__))
        return observed(event, context)

    entry.__eval_runner_observed__ = True  # type: ignore[attr-defined]
    return cast(H, entry)


def is_observed(handler: Any) -> bool:
    """Whether a deployed handler object (what its handler path resolves to) is wrapped by
    `lambda_entry`, looking through Chalice's event-source wrapper."""
    return bool(getattr(getattr(handler, "func", handler), "__eval_runner_observed__", False))


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
