"""Comparing two runs: per-question and per-category score deltas, and which verdicts changed.

`delta` is always b − a (positive: b scored higher). A question or category present in only one
run is listed with the other side null. "Changed" distinguishes the verdict (pass/warn/fail)
from the judge's text (finding, evidence, recommendation), so a re-judged question with the same
score but a new explanation is visible too.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from chalicelib.domain.evaluation import JudgeVerdict, SessionEvalCompleted
from chalicelib.domain.runs import EvalRun


class RunSide(BaseModel):
    eval_run_id: str
    session_id: str
    status: str
    model: str | None
    created_at: str
    overall_score: int | None


class QuestionSide(BaseModel):
    score: int
    verdict: str
    finding: str
    evidence: str | None
    recommendation: str | None


class QuestionDelta(BaseModel):
    question_id: str
    category: str
    a: QuestionSide | None
    b: QuestionSide | None
    delta: int | None = Field(description="b.score - a.score; null unless both runs scored the question")
    verdict_changed: bool
    text_changed: bool = Field(description="finding, evidence or recommendation differ")


class CategoryDelta(BaseModel):
    name: str
    a_score: int | None
    b_score: int | None
    a_verdict: str | None
    b_verdict: str | None
    delta: int | None
    verdict_changed: bool


class RunComparison(BaseModel):
    """`GET /eval-runs/compare?a=&b=`."""

    a: RunSide
    b: RunSide
    overall_delta: int | None
    same_session: bool
    categories: list[CategoryDelta]
    questions: list[QuestionDelta]
    changed_questions: list[str] = Field(description="ids whose verdict or text changed")


def _side(run: EvalRun) -> RunSide:
    return RunSide(eval_run_id=run.eval_run_id, session_id=run.session_id, status=run.status, model=run.model,
                   created_at=run.created_at, overall_score=run.result.overall_score if run.result else None)


def _question(v: JudgeVerdict) -> QuestionSide:
    return QuestionSide(score=v.score, verdict=v.verdict, finding=v.finding, evidence=v.evidence,
                        recommendation=v.recommendation)


def _verdicts(result: SessionEvalCompleted | None) -> dict[str, JudgeVerdict]:
    return {v.question_id: v for v in result.verdicts()} if result else {}


def _ordered(first: list[str], second: list[str]) -> list[str]:
    seen = dict.fromkeys(first)
    seen.update(dict.fromkeys(second))
    return list(seen)


def compare_runs(a: EvalRun, b: EvalRun) -> RunComparison:
    va, vb = _verdicts(a.result), _verdicts(b.result)
    questions = []
    for qid in _ordered(list(va), list(vb)):
        qa, qb = va.get(qid), vb.get(qid)
        delta: int | None = None
        text_changed = True  # present on one side only: its text is new or gone
        if qa is not None and qb is not None:
            delta = qb.score - qa.score
            text_changed = (qa.finding, qa.evidence, qa.recommendation) != (qb.finding, qb.evidence,
                                                                            qb.recommendation)
        either = qa if qa is not None else qb
        questions.append(QuestionDelta(
            question_id=qid, category=either.category if either is not None else "",
            a=_question(qa) if qa else None, b=_question(qb) if qb else None, delta=delta,
            verdict_changed=(qa.verdict if qa else None) != (qb.verdict if qb else None),
            text_changed=text_changed))
    ca = {c.name: c for c in a.result.categories} if a.result else {}
    cb = {c.name: c for c in b.result.categories} if b.result else {}
    categories = []
    for name in _ordered(list(ca), list(cb)):
        x, y = ca.get(name), cb.get(name)
        categories.append(CategoryDelta(
            name=name, a_score=x.score if x else None, b_score=y.score if y else None,
            a_verdict=x.verdict if x else None, b_verdict=y.verdict if y else None,
            delta=y.score - x.score if x is not None and y is not None else None,
            verdict_changed=(x.verdict if x else None) != (y.verdict if y else None)))
    sa, sb = _side(a), _side(b)
    overall = (sb.overall_score - sa.overall_score
               if sa.overall_score is not None and sb.overall_score is not None else None)
    return RunComparison(a=sa, b=sb, overall_delta=overall, same_session=a.session_id == b.session_id,
                         categories=categories, questions=questions,
                         changed_questions=[q.question_id for q in questions if q.verdict_changed or q.text_changed])
