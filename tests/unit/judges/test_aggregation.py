"""Aggregation (reference §4.1) against hand-computed examples, and re-deriving daemon-posted results."""

from __future__ import annotations

import pytest

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.evaluation import (
    AllJudgesFailed,
    CategoryResult,
    JudgeVerdict,
    Retrospective,
    SessionEvalCompleted,
    verdict_for_score,
)
from chalicelib.judges.aggregation import aggregate, recompute
from chalicelib.judges.catalog import QUESTIONS, Question, get_question, select_questions


def v(question_id: str, score: int, category: str | None = None) -> JudgeVerdict:
    question = next((q for q in QUESTIONS if q.id == question_id), None)
    return JudgeVerdict(
        category=category or (question.category if question else "custom"),
        question_id=question_id,
        score=score,
        verdict=verdict_for_score(score),
        finding=f"finding for {question_id}",
        evidence=None,
        recommendation=None if score == 5 else "Do the thing.",
        tools_used=None,
    )


def shape(result: SessionEvalCompleted) -> list[tuple[str, int, str, list[str]]]:
    return [(c.name, c.score, c.verdict, [q.question_id for q in c.questions]) for c in result.categories]


def test_reference_example() -> None:
    # safety 5+3 -> 4; quality 4; efficiency 2; overall (4+4+2)/3 = 3.33 -> 3
    verdicts = [
        v("direct_approach", 2),
        v("sensitive_files", 5),
        v("tests_written", 4),
        v("destructive_commands", 3),
    ]
    result = aggregate("run-1", "sonnet", QUESTIONS, verdicts, None)
    assert shape(result) == [
        ("safety", 4, "pass", ["sensitive_files", "destructive_commands"]),
        ("quality", 4, "pass", ["tests_written"]),
        ("efficiency", 2, "warn", ["direct_approach"]),
    ]
    assert result.overall_score == 3
    assert result.summary == "Evaluated 4/13 questions across 3 categories. Overall: 3/5 (warn)."
    assert result.judge_model == "sonnet"
    assert result.retrospective is None


def test_category_rounding_is_bankers() -> None:
    # 2+3 -> 2.5 -> 2 ; 3+4 -> 3.5 -> 4
    result = aggregate(
        "r",
        "m",
        QUESTIONS,
        [v("sensitive_files", 2), v("destructive_commands", 3), v("tests_written", 3), v("broken_tests", 4)],
        None,
    )
    assert [(c.name, c.score) for c in result.categories] == [("safety", 2), ("quality", 4)]
    # overall: (2+4)/2 = 3
    assert result.overall_score == 3


@pytest.mark.parametrize(("scores", "overall"), [((2, 3), 2), ((3, 4), 4), ((1, 2), 2), ((4, 5), 4)])
def test_overall_rounding_is_bankers(scores: tuple[int, int], overall: int) -> None:
    result = aggregate("r", "m", QUESTIONS, [v("sensitive_files", scores[0]), v("followed_plan", scores[1])], None)
    assert [c.score for c in result.categories] == list(scores)
    assert result.overall_score == overall
    assert result.summary.endswith(f"Overall: {overall}/5 ({verdict_for_score(overall)}).")


def test_overall_is_mean_of_rounded_category_scores_not_of_questions() -> None:
    # safety 5,5,5,4 -> 4.75 -> 5 ; quality 1 -> 1. Category mean 3; question mean 4.
    verdicts = [
        v("sensitive_files", 5),
        v("destructive_commands", 5),
        v("security_vulnerabilities", 5),
        v("permission_bypass", 4),
        v("tests_written", 1),
    ]
    result = aggregate("r", "m", QUESTIONS, verdicts, None)
    assert result.overall_score == 3
    assert [(c.name, c.verdict) for c in result.categories] == [("safety", "pass"), ("quality", "fail")]


def test_summary_counts_selected_questions_so_failures_show() -> None:
    selected = select_questions(["safety"], None)
    result = aggregate("r", "m", selected, [v("sensitive_files", 4)], None)
    assert result.summary == "Evaluated 1/4 questions across 1 categories. Overall: 4/5 (pass)."


def test_category_order_follows_the_run_question_list_and_unknown_go_last() -> None:
    selected = select_questions(None, None)
    verdicts = [
        v("zz", 3, category="custom_b"),
        v("yy", 4, category="custom_a"),
        v("redundant_calls", 5),
        v("followed_plan", 1),
    ]
    result = aggregate("r", "m", selected, verdicts, None)
    assert [c.name for c in result.categories] == ["plan_adherence", "efficiency", "custom_b", "custom_a"]


def test_questions_keep_verdict_order_within_category() -> None:
    verdicts = [v("permission_bypass", 4), v("sensitive_files", 4)]
    result = aggregate("r", "m", QUESTIONS, verdicts, None)
    assert [q.question_id for q in result.categories[0].questions] == ["permission_bypass", "sensitive_files"]


def test_no_verdicts_fails_the_run() -> None:
    with pytest.raises(AllJudgesFailed, match="all judge invocations failed"):
        aggregate("r", "m", QUESTIONS, [], None)


def test_duplicate_verdicts_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="more than one verdict"):
        aggregate("r", "m", QUESTIONS, [v("sensitive_files", 4), v("sensitive_files", 5)], None)


def test_retrospective_and_explicit_nulls_on_the_wire() -> None:
    retro = Retrospective(overall="ok", strengths=[], issues=[], suggestions=["Run tests."])
    result = aggregate("r", "sonnet", QUESTIONS, [v("sensitive_files", 5)], retro)
    wire = result.model_dump(mode="json")
    assert wire["retrospective"] == {
        "overall": "ok",
        "strengths": [],
        "issues": [],
        "suggestions": ["Run tests."],
    }
    question = wire["categories"][0]["questions"][0]
    assert set(question) == {
        "category",
        "question_id",
        "score",
        "verdict",
        "finding",
        "evidence",
        "recommendation",
        "tools_used",
        "evidence_entries",
    }
    assert question["evidence"] is None and question["tools_used"] is None and question["evidence_entries"] == []
    assert SessionEvalCompleted.model_validate(wire) == result


# --- recompute ------------------------------------------------------------------------------


def posted(categories: list[CategoryResult], overall: int = 3, summary: str = "whatever") -> SessionEvalCompleted:
    return SessionEvalCompleted(
        eval_run_id="run-9",
        judge_model="sonnet",
        categories=categories,
        overall_score=overall,
        summary=summary,
        retrospective=None,
    )


def honest() -> SessionEvalCompleted:
    return aggregate(
        "run-9",
        "sonnet",
        QUESTIONS,
        [
            v("sensitive_files", 5),
            v("destructive_commands", 3),
            v("tests_written", 4),
            v("direct_approach", 2),
        ],
        None,
    )


def test_recompute_of_a_consistent_payload_is_identity() -> None:
    result = honest()
    assert recompute(result, QUESTIONS) == result
    assert recompute(result, QUESTIONS, strict=True) == result


def test_recompute_corrects_an_inflated_overall() -> None:
    lying = honest().model_copy(update={"overall_score": 5, "summary": "All great. Overall: 5/5 (pass)."})
    fixed = recompute(lying, QUESTIONS)
    assert fixed.overall_score == 3
    assert fixed.summary == "Evaluated 4/13 questions across 3 categories. Overall: 3/5 (warn)."


def test_recompute_strict_rejects_an_inconsistent_overall() -> None:
    lying = honest().model_copy(update={"overall_score": 5})
    with pytest.raises(InvalidRequest) as err:
        recompute(lying, QUESTIONS, strict=True)
    assert err.value.code == "inconsistent_result"
    assert err.value.details == {"problems": ["overall_score 5 != 3"]}


def test_recompute_rederives_verdicts_categories_and_category_scores() -> None:
    bad_verdict = v("sensitive_files", 5).model_copy(
        update={"verdict": "fail", "category": "quality", "recommendation": "x"}
    )
    payload = posted(
        [
            CategoryResult(name="quality", score=1, verdict="fail", questions=[bad_verdict]),
            CategoryResult(name="efficiency", score=5, verdict="pass", questions=[v("redundant_calls", 2)]),
        ],
        overall=1,
    )
    fixed = recompute(payload, QUESTIONS)
    assert shape(fixed) == [
        ("safety", 5, "pass", ["sensitive_files"]),
        ("efficiency", 2, "warn", ["redundant_calls"]),
    ]
    assert fixed.categories[0].questions[0].recommendation is None
    assert fixed.overall_score == 4  # (5+2)/2 = 3.5 -> 4
    with pytest.raises(InvalidRequest) as err:
        recompute(payload, QUESTIONS, strict=True)
    assert err.value.code == "inconsistent_result"


def test_recompute_rejects_question_outside_the_run() -> None:
    payload = posted([CategoryResult(name="efficiency", score=2, verdict="warn", questions=[v("redundant_calls", 2)])])
    with pytest.raises(InvalidRequest) as err:
        recompute(payload, select_questions(["safety"], None))
    assert err.value.code == "unknown_question"


def test_recompute_rejects_duplicates_and_empty_and_wrong_run() -> None:
    dup = posted(
        [
            CategoryResult(
                name="safety",
                score=4,
                verdict="pass",
                questions=[v("sensitive_files", 4), v("sensitive_files", 4)],
            )
        ]
    )
    with pytest.raises(InvalidRequest) as err:
        recompute(dup, QUESTIONS)
    assert err.value.code == "duplicate_question"

    with pytest.raises(InvalidRequest) as err:
        recompute(posted([], overall=0), QUESTIONS)
    assert err.value.code == "no_verdicts"

    with pytest.raises(InvalidRequest) as err:
        recompute(honest(), QUESTIONS, eval_run_id="another-run")
    assert err.value.code == "eval_run_id_mismatch"


def test_recompute_keeps_judge_model_and_retrospective() -> None:
    retro = Retrospective(overall="x", strengths=["a"], issues=[], suggestions=[])
    payload = honest().model_copy(update={"judge_model": "opus", "retrospective": retro})
    fixed = recompute(payload, QUESTIONS, eval_run_id="run-9")
    assert fixed.judge_model == "opus" and fixed.retrospective == retro


def _q(qid: str, category: str) -> Question:
    return Question(category=category, id=qid, text=qid, prompt=qid)


def test_builtin_categories_come_first_then_tenant_ones_in_catalog_order() -> None:
    # An admin put tenant questions ahead of the built-ins and interleaved them.
    selected = [_q("changelog_updated", "docs"), get_question("redundant_calls"), _q("migrations_down", "data"),
                get_question("sensitive_files"), _q("readme_updated", "docs"), _q("quality_custom", "quality")]
    verdicts = [v("changelog_updated", 3, category="docs"), v("redundant_calls", 4),
                v("migrations_down", 2, category="data"), v("sensitive_files", 5),
                v("readme_updated", 4, category="docs"), v("quality_custom", 4, category="quality")]
    result = aggregate("r", "m", selected, verdicts, None)
    assert [c.name for c in result.categories] == ["safety", "quality", "efficiency", "docs", "data"]
    docs = next(c for c in result.categories if c.name == "docs")
    assert [q.question_id for q in docs.questions] == ["changelog_updated", "readme_updated"]
    assert (docs.score, docs.verdict) == (4, "pass")  # (3 + 4) / 2 = 3.5 → 4, banker's rounding
    # overall over rounded category scores: (5 + 4 + 4 + 4 + 2) / 5 = 3.8 → 4
    assert result.overall_score == 4
    assert result.summary == "Evaluated 6/6 questions across 5 categories. Overall: 4/5 (pass)."


def test_tenant_category_scores_round_half_to_even() -> None:
    selected = [_q("a_q", "docs"), _q("b_q", "docs"), _q("c_q", "data"), _q("d_q", "data")]
    verdicts = [v("a_q", 2, category="docs"), v("b_q", 3, category="docs"),
                v("c_q", 4, category="data"), v("d_q", 5, category="data")]
    result = aggregate("r", "m", selected, verdicts, None)
    assert [(c.name, c.score) for c in result.categories] == [("docs", 2), ("data", 4)]  # 2.5 → 2, 4.5 → 4
    assert result.overall_score == 3


def test_recompute_orders_tenant_categories_like_the_server() -> None:
    selected = [_q("changelog_updated", "docs"), get_question("sensitive_files")]
    honest = aggregate("r", "m", selected, [v("changelog_updated", 2, category="docs"),
                                            v("sensitive_files", 5)], None)
    posted = honest.model_copy(update={"categories": list(reversed(honest.categories)), "overall_score": 5})
    fixed = recompute(posted, selected)
    assert [c.name for c in fixed.categories] == ["safety", "docs"]
    assert fixed == honest
