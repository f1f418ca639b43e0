"""Builders for history tests and benchmarks: runs with results, stored through the real run store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.domain.clock import iso
from chalicelib.domain.evaluation import JudgeVerdict, SessionEvalCompleted, TokenUsage, verdict_for_score
from chalicelib.domain.runs import EvalRun, QuestionRef
from chalicelib.judges.aggregation import aggregate
from chalicelib.judges.catalog import QUESTIONS

BASE = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def result_for(run_id: str, scores: Mapping[str, int] | int, *, finding: str = "Looks fine.") -> SessionEvalCompleted:
    """A result over the catalog's 13 questions: one score for all, or per question id (missing → 3)."""
    verdicts = []
    for q in QUESTIONS:
        score = scores if isinstance(scores, int) else scores.get(q.id, 3)
        verdicts.append(JudgeVerdict(category=q.category, question_id=q.id, score=score,
                                     verdict=verdict_for_score(score), finding=f"{finding} ({q.id})",
                                     evidence=None, recommendation="Keep going." if score < 4 else None))
    return aggregate(run_id, "claude-sonnet-4-6", QUESTIONS, verdicts, None)


def new_run(run_id: str, *, tenant: str = "acme", session_id: str = "sess-1", user: str = "bob",
            created_at: datetime | str = BASE, runner: str = "server", vendor: str | None = "anthropic",
            repository: str | None = "github.com/acme/web", status: str = "queued", **extra: Any) -> EvalRun:
    created = created_at if isinstance(created_at, str) else iso(created_at)
    return EvalRun.model_validate({
        "eval_run_id": run_id, "tenant": tenant, "session_id": session_id, "created_by": user,
        "runner": runner, "vendor": vendor if runner == "server" else None,
        "model": "claude-sonnet-4-6" if runner == "server" else None, "status": status,
        "questions": [QuestionRef(question_id=q.id, category=q.category).model_dump() for q in QUESTIONS],
        "created_at": created, "deadline_at": iso(datetime.fromisoformat(created.replace("Z", "+00:00"))
                                                  + timedelta(minutes=5)),
        "run_timeout_seconds": 300, "repository": repository, **extra})


def store_run(store: Any, run: EvalRun, *, finish: str | None = "succeeded",
              scores: Mapping[str, int] | int | None = 4) -> EvalRun:
    """Create the run and (optionally) take it through start and finish like a runner would."""
    store.create(run)
    if finish is None:
        return run
    store.start(run.tenant, run.eval_run_id, now=run.created_at, outcomes=[])
    result = result_for(run.eval_run_id, scores) if scores is not None else None
    finished: EvalRun = store.finish(run.tenant, run.eval_run_id, status=finish, now=run.created_at,
                                     usage=TokenUsage(input_tokens=100, output_tokens=10), result=result)
    return finished
