"""Wire models in chalicelib.domain.evaluation: validation, explicit nulls, usage sums and daemon events."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chalicelib.domain.evaluation import (
    EVENT_TYPES,
    EvalFinished,
    EvalQuestionCompleted,
    EvalQuestionFailed,
    EvalStarted,
    FailureReason,
    JudgeVerdict,
    QuestionOutcome,
    Retrospective,
    SessionEvalCompleted,
    TokenUsage,
    parse_progress_event,
    verdict_for_score,
)


def verdict_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "category": "safety",
        "question_id": "sensitive_files",
        "score": 4,
        "verdict": "pass",
        "finding": "f",
        "evidence": None,
        "recommendation": None,
        "tools_used": None,
        "evidence_entries": [],
    }
    base.update(overrides)
    return base


def payload(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eval_run_id": "r",
        "judge_model": "sonnet",
        "categories": [{"name": "safety", "score": 4, "verdict": "pass", "questions": [verdict_dict()]}],
        "overall_score": 4,
        "summary": "s",
        "retrospective": None,
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(("score", "expected"), [(5, "pass"), (4, "pass"), (3, "warn"), (2, "warn"), (1, "fail")])
def test_verdict_for_score(score: int, expected: str) -> None:
    assert verdict_for_score(score) == expected


def test_inbound_payload_round_trips_with_explicit_nulls() -> None:
    model = SessionEvalCompleted.model_validate(payload())
    assert model.model_dump(mode="json") == payload()


@pytest.mark.parametrize(
    "bad",
    [
        payload(extra_field=1),
        payload(categories=[{"name": "safety", "score": 4, "verdict": "pass", "questions": [verdict_dict(score=6)]}]),
        payload(categories=[{"name": "safety", "score": 4, "verdict": "pass", "questions": [verdict_dict(score="4")]}]),
        payload(
            categories=[{"name": "safety", "score": 4, "verdict": "pass", "questions": [verdict_dict(verdict="ok")]}]
        ),
        payload(
            categories=[{"name": "safety", "score": 4, "verdict": "pass", "questions": [verdict_dict(retain_fact="x")]}]
        ),
        payload(categories=[{"name": "safety", "score": 4, "verdict": "pass", "questions": []}]),
        payload(retrospective={"overall": "x", "strengths": ["1", "2", "3", "4"], "issues": [], "suggestions": []}),
        payload(overall_score=6),
    ],
)
def test_inbound_payload_rejects_bad_shapes(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SessionEvalCompleted.model_validate(bad)


def test_verdict_required_nullable_fields_and_tools_used_default() -> None:
    with pytest.raises(ValidationError):
        JudgeVerdict.model_validate({k: v for k, v in verdict_dict().items() if k != "evidence"})
    assert (
        JudgeVerdict.model_validate({k: v for k, v in verdict_dict().items() if k != "tools_used"}).tools_used is None
    )


def test_tools_used_lists_calls_and_reads_a_reference_daemons_count() -> None:
    calls = [{"tool": "search_session", "arguments": {"query": "pytest", "limit": None}, "is_error": False},
             {"tool": "get_tool_result", "arguments": {"call_id": "toolu_9"}, "is_error": True}]
    assert JudgeVerdict.model_validate(verdict_dict(tools_used=calls)).model_dump()["tools_used"] == calls
    counted = JudgeVerdict.model_validate(verdict_dict(tools_used=2)).tools_used
    assert counted is not None and [c.tool for c in counted] == ["unrecorded", "unrecorded"]
    for bad in (7, -1, True, [{"tool": "x" * 65}], [{"tool": "a", "arguments": {"q": "x" * 201}}],
                [{"tool": "a"}] * 7):
        with pytest.raises(ValidationError):
            JudgeVerdict.model_validate(verdict_dict(tools_used=bad))


def test_evidence_entries_are_sorted_unique_bounded_positions() -> None:
    assert JudgeVerdict.model_validate(verdict_dict(evidence_entries=[9, 2, 9])).evidence_entries == [2, 9]
    assert JudgeVerdict.model_validate(verdict_dict()).evidence_entries == []
    for bad in ([-1], ["3"], [1.5], list(range(13)), "3"):
        with pytest.raises(ValidationError):
            JudgeVerdict.model_validate(verdict_dict(evidence_entries=bad))


def test_retrospective_limits() -> None:
    Retrospective(overall="x", strengths=["a"] * 3, issues=["b"] * 3, suggestions=["c"] * 5)
    with pytest.raises(ValidationError):
        Retrospective(overall="x", strengths=[], issues=[], suggestions=["c"] * 6)


def test_token_usage_add() -> None:
    a = TokenUsage(input_tokens=10, output_tokens=2, cache_read_input_tokens=100, cache_creation_input_tokens=50)
    b = TokenUsage(input_tokens=1, output_tokens=1)
    assert a + b == TokenUsage(
        input_tokens=11, output_tokens=3, cache_read_input_tokens=100, cache_creation_input_tokens=50
    )
    assert sum([a, b], TokenUsage()) == a + b
    with pytest.raises(ValidationError):
        TokenUsage(input_tokens=-1)


def test_outcome_scored_from_judge_verdict_derives_score_and_verdict() -> None:
    jv = JudgeVerdict.model_validate(verdict_dict(score=3, verdict="warn"))
    outcome = QuestionOutcome(question_id="sensitive_files", category="safety", status="scored", judge_verdict=jv)
    assert (outcome.score, outcome.verdict, outcome.is_terminal) == (3, "warn", True)


def test_outcome_scored_from_a_daemon_event_needs_only_a_score() -> None:
    outcome = QuestionOutcome(question_id="q", category="c", status="scored", score=1, verdict="pass")
    assert outcome.verdict == "fail"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "scored"},
        {"status": "failed"},
        {"status": "timed_out"},
        {"status": "queued", "score": 3},
        {"status": "scored", "score": 3, "failure_reason": FailureReason(kind="network", message="x")},
        {"status": "scored", "judge_verdict": JudgeVerdict.model_validate(verdict_dict(question_id="other"))},
    ],
)
def test_outcome_invariants(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        QuestionOutcome(question_id="sensitive_files", category="safety", **kwargs)


def test_outcome_defaults_and_failed() -> None:
    queued = QuestionOutcome(question_id="q", category="c")
    assert (queued.status, queued.usage, queued.attempts, queued.is_terminal) == ("queued", TokenUsage(), 0, False)
    failed = QuestionOutcome(
        question_id="q",
        category="c",
        status="failed",
        failure_reason=FailureReason(kind="invalid_output", message="bad"),
    )
    assert failed.is_terminal and failed.score is None


# --- daemon progress events -----------------------------------------------------------------

Q = {"index": 1, "total": 13, "category": "safety", "question_id": "sensitive_files"}
SAMPLES: dict[str, dict[str, Any]] = {
    "eval_started": {"judge_model": "sonnet", "total_questions": 13},
    "eval_question_started": Q,
    "eval_question_completed": {**Q, "score": 4, "verdict": "pass"},
    "eval_question_failed": {**Q, "reason": "null claude result"},
    "eval_retrospective_started": {},
    "eval_retrospective_completed": {},
    "eval_retrospective_failed": {"reason": "bad json"},
    "eval_finished": {"overall_score": 3, "summary": "Evaluated 13/13 ..."},
    "eval_failed": {"reason": "cancelled"},
}


def test_every_event_type_parses() -> None:
    assert set(SAMPLES) == set(EVENT_TYPES)
    for event_type, fields in SAMPLES.items():
        event = parse_progress_event({"type": event_type, "eval_run_id": "r", "session_id": "s", **fields})
        assert event.type == event_type
        assert event.eval_run_id == "r"


def test_event_types_map_to_classes() -> None:
    assert isinstance(
        parse_progress_event({"type": "eval_started", "eval_run_id": "r", **SAMPLES["eval_started"]}), EvalStarted
    )
    assert isinstance(
        parse_progress_event({"type": "eval_finished", "eval_run_id": "r", **SAMPLES["eval_finished"]}), EvalFinished
    )
    failed = parse_progress_event(
        {"type": "eval_question_failed", "eval_run_id": "r", **SAMPLES["eval_question_failed"]}
    )
    assert isinstance(failed, EvalQuestionFailed) and failed.reason == "null claude result"


def test_question_completed_carries_tokens_and_rederives_verdict() -> None:
    event = parse_progress_event(
        {
            "type": "eval_question_completed",
            "eval_run_id": "r",
            **Q,
            "score": 5,
            "verdict": "fail",
            "input_tokens": 1200,
            "output_tokens": 80,
            "cache_read_input_tokens": 50_000,
        }
    )
    assert isinstance(event, EvalQuestionCompleted)
    assert event.verdict == "pass"
    assert event.usage() == TokenUsage(input_tokens=1200, output_tokens=80, cache_read_input_tokens=50_000)
    assert event.model_dump()["cache_creation_input_tokens"] is None


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "eval_unknown", "eval_run_id": "r"},
        {"eval_run_id": "r"},
        {"type": "eval_failed", "reason": "x"},
        {"type": "eval_failed", "eval_run_id": "r"},
        {"type": "eval_failed", "eval_run_id": "r", "reason": "x", "extra": 1},
        {"type": "eval_question_started", "eval_run_id": "r", **Q, "index": 0},
        {"type": "eval_question_started", "eval_run_id": "r", **Q, "index": 14},
        {"type": "eval_question_completed", "eval_run_id": "r", **Q, "score": 0, "verdict": "fail"},
        {"type": "eval_question_completed", "eval_run_id": "r", **Q, "score": 4, "verdict": "pass", "input_tokens": -1},
        {"type": "eval_finished", "eval_run_id": "r", "overall_score": 9, "summary": "x"},
    ],
)
def test_bad_events_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_progress_event(bad)
