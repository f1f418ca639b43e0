"""One SQS record → one eval run judged (or one large uploaded session stored, or one stored session
matched against the online evaluation rules): parsing, budget, retries.

Raising makes Powertools' BatchProcessor report the record as failed, so SQS redelivers it (and
after maxReceiveCount moves it to the DLQ). Only retryable infrastructure failures raise; a bad
body is dropped (it would fail the same way forever) and a bug marks the run failed instead of
looping it through redeliveries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ValidationError

from chalicelib.domain.automation import SessionStoredNotice
from chalicelib.domain.errors import DependencyUnavailable, DomainError
from chalicelib.domain.runs import EvalJobMessage, RunError
from chalicelib.domain.session_uploads import SessionUploadJob
from chalicelib.observability import logger, worker_record_log_keys

# Without a Lambda context (a direct call) assume a full worker invocation.
_DEFAULT_REMAINING_MS = 900_000
# What SQS should redeliver: the same body may well succeed once the dependency is back.
_INFRASTRUCTURE = (DependencyUnavailable, ClientError, BotoCoreError)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _parse_or_drop(model: type[M], body: str, message_id: str | None, dropped: str) -> M | None:
    """The job, or None when the body cannot be one (it would fail the same way on every redelivery)."""
    try:
        return model.model_validate_json(body)
    except (ValidationError, ValueError, TypeError) as exc:
        # Never log the body: it is untrusted input. Its id is enough to find it in the queue.
        logger.error(dropped, extra={"message_id": message_id, "error_type": type(exc).__name__})
        return None


@contextmanager
def _redelivered_on_infrastructure(failed: str, ids: dict[str, Any]) -> Iterator[None]:
    try:
        yield
    except _INFRASTRUCTURE as exc:
        logger.warning(failed, extra={**ids, "error_type": type(exc).__name__,
                                      "error_code": getattr(exc, "code", None)})
        raise


def _remaining_ms(context: Any) -> Callable[[], int]:
    getter = getattr(context, "get_remaining_time_in_millis", None)
    if callable(getter):
        return lambda: int(getter())
    return lambda: _DEFAULT_REMAINING_MS


def process_job_record(record: Any, context: Any) -> None:
    """The BatchProcessor record handler (`record` is a Powertools SQSRecord)."""
    message_id = getattr(record, "message_id", None)
    if '"job":"session_upload"' in record.body:
        _process_upload(record.body, message_id)
        return
    if '"job":"session_stored"' in record.body:
        _process_stored_session(record.body, message_id)
        return
    message = _parse_or_drop(EvalJobMessage, record.body, message_id, "malformed eval job message dropped")
    if message is None:
        return
    # Every line logged while this record is processed carries its tenant and run (and the user,
    # bound by the service once it has loaded the run).
    with worker_record_log_keys(tenant=message.tenant, eval_run_id=message.eval_run_id):
        _process(message, message_id, context)


def _process(message: EvalJobMessage, message_id: str | None, context: Any) -> None:
    from chalicelib.wiring import container

    if message.mode == "batch":
        _submit_vendor_batch(message, message_id)
        return

    service = container().eval_jobs
    outcome = _run_or_mark_failed(message, message_id, "eval job",
                                  lambda: service.process(message, remaining_ms=_remaining_ms(context)))
    if outcome is None:
        return
    logger.info("eval job processed", extra={
        "tenant": message.tenant, "eval_run_id": message.eval_run_id, "message_id": message_id,
        "action": outcome.action, "status": outcome.status, "run_writes": outcome.writes})


def _submit_vendor_batch(message: EvalJobMessage, message_id: str | None) -> None:
    """A batch-mode run: its judge calls go to the vendor as one batch; the scheduled poller finishes it."""
    from chalicelib.wiring import container

    action = _run_or_mark_failed(message, message_id, "vendor batch submission",
                                 lambda: container().vendor_batch_runs.submit(message))
    if action is None:
        return
    logger.info("batch-mode eval job processed", extra={
        "tenant": message.tenant, "eval_run_id": message.eval_run_id, "message_id": message_id, "action": action})


def _run_or_mark_failed(message: EvalJobMessage, message_id: str | None, what: str,
                        call: Callable[[], T]) -> T | None:
    """`call()` for one run: infrastructure failures raise (SQS redelivers), a bug marks the run failed
    rather than looping it through redeliveries (and gives None)."""
    ids = {"tenant": message.tenant, "eval_run_id": message.eval_run_id, "message_id": message_id}
    try:
        with _redelivered_on_infrastructure(f"{what} failed on infrastructure; SQS will redeliver it", ids):
            return call()
    except _INFRASTRUCTURE:
        raise
    except Exception as exc:
        logger.exception(f"{what} crashed; marking the run failed", extra={**ids, "error_type": type(exc).__name__})
        _mark_failed(message, exc)
        return None


def _process_upload(body: str, message_id: str | None) -> None:
    """A large presigned upload completed in the background (`SessionService.complete_upload_job`)."""
    from chalicelib.wiring import container

    job = _parse_or_drop(SessionUploadJob, body, message_id, "malformed session upload job dropped")
    if job is None:
        return
    with _redelivered_on_infrastructure("session upload job failed on infrastructure; SQS will redeliver it", {
            "tenant": job.tenant, "upload_id": job.upload_id, "message_id": message_id}):
        state = container().sessions.complete_upload_job(job)
    logger.info("session upload job processed", extra={
        "tenant": job.tenant, "session_id": job.session_id, "upload_id": job.upload_id, "status": state})


def _process_stored_session(body: str, message_id: str | None) -> None:
    """A session revision was stored: the tenant's enabled rules decide whether it gets runs."""
    from chalicelib.wiring import container

    notice = _parse_or_drop(SessionStoredNotice, body, message_id, "malformed session notice dropped")
    if notice is None:
        return
    with _redelivered_on_infrastructure("session notice failed on infrastructure; SQS will redeliver it", {
            "tenant": notice.tenant, "session_id": notice.session_id, "message_id": message_id}):
        report = container().eval_rules.on_session_stored(notice)
    logger.info("session notice processed", extra={"tenant": notice.tenant, "session_id": notice.session_id,
                                                   **report})


def _mark_failed(message: EvalJobMessage, exc: Exception) -> None:
    from chalicelib.domain.clock import iso
    from chalicelib.wiring import container

    c = container()
    try:
        run = c.run_store.get(message.tenant, message.eval_run_id)
        if run is None or run.is_terminal:
            return
        failed = c.run_store.finish(
            message.tenant, message.eval_run_id, status="failed", now=iso(c.clock.now()), usage=run.usage,
            from_statuses=("queued", "running"),
            error=RunError(code="internal_error", message="The evaluation failed unexpectedly; "
                                                          "rerun it, and report it if it recurs.",
                           details={"error_type": type(exc).__name__}))
        c.run_lifecycle.finalize_quietly(failed)
    except DomainError:
        # The run stays as it is; a redelivery after its deadline will close it as timed out.
        logger.error("could not mark the crashed run failed", extra={
            "tenant": message.tenant, "eval_run_id": message.eval_run_id})
