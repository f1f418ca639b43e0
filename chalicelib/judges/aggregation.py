"""Aggregating verdicts into SessionEvalCompleted (reference §4.1) and re-deriving daemon-posted results.

Scores use exact banker's rounding (Python `round` on a Fraction, matching .NET Math.Round):
category score = round(mean of its question scores); overall = round(mean of the rounded
category scores). Failed questions are simply absent from `verdicts`. Tenant categories follow the
same rules; only their place in the order differs (`category_ranks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Protocol

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.evaluation import (
    AllJudgesFailed,
    CategoryResult,
    JudgeVerdict,
    Retrospective,
    SessionEvalCompleted,
    verdict_for_score,
)
from chalicelib.judges.catalog import CATEGORIES, Question
from chalicelib.judges.verdicts import normalise_verdict

_UNKNOWN_CATEGORY_RANK = 99


class Categorised(Protocol):
    """What ordering needs of a run's question: a `Question`, or the run record's `QuestionRef`."""

    @property
    def category(self) -> str: ...


def _rounded_mean(values: Sequence[int]) -> int:
    return round(Fraction(sum(values), len(values)))


def category_ranks(selected_questions: Sequence[Categorised]) -> dict[str, int]:
    """Result order of categories: the four built-in ones first, in taxonomy order, then tenant
    categories in the order they first appear in the run's (catalog-ordered) questions. An admin
    reordering questions moves them within and across tenant categories, never ahead of the four."""
    rank = {name: i for i, name in enumerate(CATEGORIES)}
    for q in selected_questions:
        rank.setdefault(q.category, len(rank))
    return rank


def build_summary(verdict_count: int, question_count: int, category_count: int, overall: int) -> str:
    return (
        f"Evaluated {verdict_count}/{question_count} questions across {category_count} categories. "
        f"Overall: {overall}/5 ({verdict_for_score(overall)})."
    )


def aggregate(
    eval_run_id: str,
    judge_model: str,
    selected_questions: Sequence[Categorised],
    verdicts: Sequence[JudgeVerdict],
    retrospective: Retrospective | None,
) -> SessionEvalCompleted:
    """Group verdicts by category and score them.

    Category order is `category_ranks`: the four built-in categories first, then the tenant's in
    their first appearance in `selected_questions` (catalog order); categories absent from both go
    last, in first-seen order. Verdicts keep their order within a
    category. `judge_model` is stored as given (the requested alias). Raises AllJudgesFailed when
    there are no verdicts, and ValueError on two verdicts for one question (a caller bug, e.g. a
    redelivered job recorded twice).
    """
    if not verdicts:
        raise AllJudgesFailed("all judge invocations failed")
    seen: set[str] = set()
    for v in verdicts:
        if v.question_id in seen:
            raise ValueError(f"more than one verdict for question {v.question_id}")
        seen.add(v.question_id)

    rank = category_ranks(selected_questions)

    grouped: dict[str, list[JudgeVerdict]] = {}
    for v in verdicts:
        grouped.setdefault(v.category, []).append(v)
    # sorted() is stable, so unknown categories (equal rank) keep first-seen order.
    names = sorted(grouped, key=lambda name: rank.get(name, _UNKNOWN_CATEGORY_RANK))

    categories: list[CategoryResult] = []
    for name in names:
        score = _rounded_mean([v.score for v in grouped[name]])
        categories.append(
            CategoryResult(name=name, score=score, verdict=verdict_for_score(score), questions=grouped[name])
        )
    overall = _rounded_mean([c.score for c in categories])
    return SessionEvalCompleted(
        eval_run_id=eval_run_id,
        judge_model=judge_model,
        categories=categories,
        overall_score=overall,
        summary=build_summary(len(verdicts), len(selected_questions), len(categories), overall),
        retrospective=retrospective,
    )


def _discrepancies(posted: SessionEvalCompleted, derived: SessionEvalCompleted) -> list[str]:
    problems: list[str] = []
    if posted.overall_score != derived.overall_score:
        problems.append(f"overall_score {posted.overall_score} != {derived.overall_score}")
    posted_cats = {c.name: c for c in posted.categories}
    for cat in derived.categories:
        p = posted_cats.get(cat.name)
        if p is None:
            problems.append(f"category {cat.name} misplaced")
            continue
        if (p.score, p.verdict) != (cat.score, cat.verdict):
            problems.append(f"category {cat.name} {p.score}/{p.verdict} != {cat.score}/{cat.verdict}")
    posted_verdicts = {v.question_id: v for v in posted.verdicts()}
    for v in derived.verdicts():
        p_v = posted_verdicts[v.question_id]
        if (p_v.category, p_v.verdict) != (v.category, v.verdict):
            problems.append(f"question {v.question_id} {p_v.category}/{p_v.verdict} != {v.category}/{v.verdict}")
    return problems


def recompute(
    payload: SessionEvalCompleted,
    selected_questions: Sequence[Question],
    *,
    eval_run_id: str | None = None,
    strict: bool = False,
    trace_entries: int | None = None,
) -> SessionEvalCompleted:
    """Re-derive a daemon-posted result from its verdict scores so a daemon cannot post inconsistent scores.

    Each verdict must answer a question of this run (`unknown_question`) at most once
    (`duplicate_question`); its category is taken from the run's question and its verdict string
    from its score. Category scores, overall score and summary are recomputed; `judge_model` and
    the retrospective are kept. With `strict`, any posted score or verdict that differs from the
    derived one is rejected (`inconsistent_result`) instead of corrected. `eval_run_id`, when
    given, must match the payload's. Cited `evidence_entries` outside a trace of `trace_entries`
    entries (when known) are dropped.
    """
    if eval_run_id is not None and payload.eval_run_id != eval_run_id:
        raise InvalidRequest(
            "The result's eval_run_id does not match the eval run it was posted to.",
            code="eval_run_id_mismatch",
            details={"expected": eval_run_id, "posted": payload.eval_run_id},
        )
    by_id = {q.id: q for q in selected_questions}
    posted = payload.verdicts()
    if not posted:
        raise InvalidRequest(
            "The result contains no verdicts; report a run with no verdicts as an eval_failed event.",
            code="no_verdicts",
        )
    normalised: list[JudgeVerdict] = []
    seen: set[str] = set()
    for v in posted:
        question = by_id.get(v.question_id)
        if question is None:
            raise InvalidRequest(
                f"Verdict for question '{v.question_id}' which is not part of this eval run.",
                code="unknown_question",
                details={"question_id": v.question_id, "valid_question_ids": list(by_id)},
            )
        if v.question_id in seen:
            raise InvalidRequest(
                f"More than one verdict for question '{v.question_id}'.",
                code="duplicate_question",
                details={"question_id": v.question_id},
            )
        seen.add(v.question_id)
        normalised.append(normalise_verdict(v, question.category, trace_entries=trace_entries))

    derived = aggregate(payload.eval_run_id, payload.judge_model, selected_questions, normalised, payload.retrospective)
    if strict:
        problems = _discrepancies(payload, derived)
        if problems:
            raise InvalidRequest(
                "The posted result's scores are inconsistent with its verdicts.",
                code="inconsistent_result",
                details={"problems": problems},
            )
    return derived
