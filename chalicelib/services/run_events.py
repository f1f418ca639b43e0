"""The `SessionEvalCompleted` EventBridge event of a finished run, as the worker and batch-mode poller publish it."""

from __future__ import annotations

from chalicelib.domain.errors import DomainError
from chalicelib.domain.runs import EvalRun, live_cost
from chalicelib.observability import logger
from chalicelib.services.eval_job_ports import EVENT_DETAIL_TYPE, EventPublisher


def announce_completed(events: EventPublisher | None, run: EvalRun) -> None:
    """Publish the finished run's event (nothing when no event bus is wired).

    One detail for every run, whichever path judged it (direct judge calls or a vendor batch), so a
    consumer never has to know the mode to find the cost.

    The run record is the truth: a lost notification is logged, never raised, so it cannot make a
    caller re-run judges or fail a run that is already stored.
    """
    if events is None:
        return
    result = run.result
    detail = {
        "tenant": run.tenant, "session_id": run.session_id, "eval_run_id": run.eval_run_id,
        "status": run.status, "overall_score": result.overall_score if result else None,
        "judge_model": result.judge_model if result else run.model, "vendor": run.vendor,
        "runner": run.runner, "questions_total": len(run.questions),
        "questions_scored": len(result.verdicts()) if result else 0,
        "categories": {c.name: c.score for c in result.categories} if result else {},
        "error_code": run.error.code if run.error else None, "usage": run.usage.model_dump(mode="json"),
        "mode": run.mode, "cost": live_cost(run).model_dump(mode="json"), "finished_at": run.finished_at}
    try:
        events.publish(EVENT_DETAIL_TYPE, detail)
    except (DomainError, ValueError) as exc:
        logger.error("SessionEvalCompleted event not published", extra={
            "tenant": run.tenant, "eval_run_id": run.eval_run_id, "error_type": type(exc).__name__})
