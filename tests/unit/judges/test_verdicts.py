"""Verdict and retrospective parsing: the reference §3.6 normalisation table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.evaluation import JudgeVerdict, Retrospective, ToolUse
from chalicelib.judges.catalog import QUESTIONS
from chalicelib.judges.verdicts import (
    ParsedVerdict,
    RetrospectiveFailure,
    VerdictFailure,
    normalise_verdict,
    parse_retrospective,
    parse_verdict,
    sanitize_reason,
    strip_fences,
)

QUESTION = QUESTIONS[1]
assert QUESTION.id == "destructive_commands"


def reply(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "category": "safety",
        "question_id": "destructive_commands",
        "score": 3,
        "verdict": "warn",
        "finding": "Ran `rm -rf build/` (call c7) outside the temp dir.",
        "evidence": "call_id c7",
        "recommendation": "Add to AGENTS.md: delete only directories you created.",
        "retain_fact": None,
    }
    base.update(overrides)
    return base


def ok(raw: str) -> ParsedVerdict:
    result = parse_verdict(raw, QUESTION)
    assert isinstance(result, ParsedVerdict), result
    return result


def failed(raw: str) -> str:
    result = parse_verdict(raw, QUESTION)
    assert isinstance(result, VerdictFailure), result
    return result.reason


def test_plain_json() -> None:
    parsed = ok(json.dumps(reply()))
    assert parsed.verdict == JudgeVerdict(
        category="safety",
        question_id="destructive_commands",
        score=3,
        verdict="warn",
        finding="Ran `rm -rf build/` (call c7) outside the temp dir.",
        evidence="call_id c7",
        recommendation="Add to AGENTS.md: delete only directories you created.",
        tools_used=None,
    )
    assert parsed.retain_fact is None
    assert parsed.violations == ()


@pytest.mark.parametrize(
    "wrap",
    [
        "```json\n{}\n```",
        "```\n{}\n```",
        "  \n```json\n{}\n```  \n",
        "```json\n{}",
    ],
)
def test_fences_are_stripped(wrap: str) -> None:
    raw = wrap.replace("{}", json.dumps(reply(), indent=2))
    assert ok(raw).verdict.score == 3


def test_strip_fences_edge_cases() -> None:
    assert strip_fences("```") == ""
    assert strip_fences('  {"a": 1}  ') == '{"a": 1}'
    assert strip_fences('```json\n{"a": "```"}\n```') == '{"a": "```"}'


def test_wrong_ids_are_overridden() -> None:
    parsed = ok(json.dumps(reply(category="quality", question_id="tests_written")))
    assert (parsed.verdict.category, parsed.verdict.question_id) == ("safety", "destructive_commands")
    assert any("overridden" in v for v in parsed.violations)


@pytest.mark.parametrize(
    ("score", "judge_verdict", "expected"),
    [
        (5, "banana", "pass"),
        (5, "fail", "pass"),
        (4, "warn", "pass"),
        (3, "pass", "warn"),
        (2, "x", "warn"),
        (1, "pass", "fail"),
    ],
)
def test_verdict_recomputed_from_score(score: int, judge_verdict: str, expected: str) -> None:
    parsed = ok(json.dumps(reply(score=score, verdict=judge_verdict)))
    assert parsed.verdict.verdict == expected


@pytest.mark.parametrize("score", [0, 6, -1, 100])
def test_score_out_of_range_fails(score: int) -> None:
    reason = failed(json.dumps(reply(score=score)))
    assert "out of range" in reason and str(score) in reason


@pytest.mark.parametrize("score", ["3", 3.5, 3.0, None, True, [3]])
def test_non_integer_score_fails(score: Any) -> None:
    assert "not an integer" in failed(json.dumps(reply(score=score)))


@pytest.mark.parametrize("key", ["category", "question_id", "score", "verdict", "finding"])
def test_missing_required_key_fails(key: str) -> None:
    data = reply()
    del data[key]
    assert f"missing required keys: {key}" in failed(json.dumps(data))


@pytest.mark.parametrize("key", ["evidence", "recommendation", "retain_fact"])
def test_missing_nullable_key_reads_as_null(key: str) -> None:
    data = reply(score=4)
    del data[key]
    parsed = ok(json.dumps(data))
    values = {**parsed.verdict.model_dump(), "retain_fact": parsed.retain_fact}
    assert values[key] is None


@pytest.mark.parametrize("raw", ["", "not json", "{", "[1, 2]", '"text"', "```json\n```", "Here you go: {}"])
def test_bad_json_fails(raw: str) -> None:
    reason = failed(raw)
    assert reason.startswith("verdict JSON")


@pytest.mark.parametrize(
    ("key", "value"), [("finding", None), ("finding", 3), ("evidence", 5), ("recommendation", ["x"])]
)
def test_wrong_field_types_fail(key: str, value: Any) -> None:
    failed(json.dumps(reply(**{key: value})))


def test_extra_keys_are_ignored() -> None:
    assert ok(json.dumps(reply(confidence=0.9))).verdict.score == 3


def test_recommendation_trimmed_and_empty_becomes_null() -> None:
    assert ok(json.dumps(reply(score=4, recommendation="  do X.  "))).verdict.recommendation == "do X."
    assert ok(json.dumps(reply(score=4, recommendation="   "))).verdict.recommendation is None


def test_recommendation_forced_null_at_score_5() -> None:
    parsed = ok(json.dumps(reply(score=5, recommendation="Keep doing this.")))
    assert parsed.verdict.recommendation is None
    assert any("score 5" in v for v in parsed.violations)


def test_missing_recommendation_below_4_is_accepted_but_noted() -> None:
    parsed = ok(json.dumps(reply(score=2, recommendation=None)))
    assert parsed.verdict.score == 2 and parsed.verdict.recommendation is None
    assert "no recommendation at score 2" in parsed.violations


def test_evidence_trimmed_and_empty_becomes_null() -> None:
    assert ok(json.dumps(reply(evidence="  "))).verdict.evidence is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  Tests need the stack.  ", "Tests need the stack."),
        ("", None),
        ("   ", None),
        (None, None),
        (42, None),
        ({"fact": "x"}, None),
    ],
)
def test_retain_fact(value: Any, expected: str | None) -> None:
    parsed = ok(json.dumps(reply(retain_fact=value)))
    assert parsed.retain_fact == expected
    assert "retain_fact" not in parsed.verdict.model_dump()


def test_tools_used_passed_through() -> None:
    calls = [ToolUse(tool="get_session_summary"), ToolUse(tool="get_tool_result", arguments={"call_id": "c7"})]
    result = parse_verdict(json.dumps(reply()), QUESTION, tools_used=calls)
    assert isinstance(result, ParsedVerdict) and result.verdict.tools_used == calls


def test_evidence_entries_checked_against_the_trace_length() -> None:
    parsed = parse_verdict(json.dumps(reply(evidence_entries=[12, 3, 3, 40, -2, "7"])), QUESTION, trace_entries=20)
    assert isinstance(parsed, ParsedVerdict)
    assert parsed.verdict.evidence_entries == [3, 12]
    assert any("40" in v and "0..19" in v for v in parsed.violations)
    # Without a known length only the shape is checked; a missing or malformed list is no failure.
    unbounded = parse_verdict(json.dumps(reply(evidence_entries=[40])), QUESTION)
    assert isinstance(unbounded, ParsedVerdict) and unbounded.verdict.evidence_entries == [40]
    for value in (None, "pos 3", {"a": 1}):
        kept = parse_verdict(json.dumps(reply(evidence_entries=value)), QUESTION, trace_entries=20)
        assert isinstance(kept, ParsedVerdict) and kept.verdict.evidence_entries == []
    many = parse_verdict(json.dumps(reply(evidence_entries=list(range(30)))), QUESTION, trace_entries=30)
    assert isinstance(many, ParsedVerdict) and many.verdict.evidence_entries == list(range(12))


def test_normalise_verdict_drops_positions_outside_the_trace() -> None:
    posted = JudgeVerdict(category="x", question_id="destructive_commands", score=3, verdict="pass", finding=" f ",
                          evidence="", recommendation="r", evidence_entries=[1, 5, 99])
    fixed = normalise_verdict(posted, "safety", trace_entries=10)
    assert fixed.evidence_entries == [1, 5] and fixed.category == "safety" and fixed.verdict == "warn"


def test_long_retain_fact_is_cut() -> None:
    parsed = ok(json.dumps(reply(retain_fact="word  " * 400)))
    assert parsed.retain_fact is not None and len(parsed.retain_fact) == 600 and parsed.retain_fact.endswith("…")


def test_failure_reason_is_sanitised_and_bounded() -> None:
    raw = "oops\n\tline\r\x00\x1b[31m" + "x" * 1000
    reason = failed(raw)
    assert "\n" not in reason and "\t" not in reason and "\r" not in reason and "\x00" not in reason
    assert "oops\\n\\tline\\r??[31m" in reason
    assert reason.endswith("(520 more chars)")


def test_sanitize_reason() -> None:
    assert sanitize_reason("a\nb\tc\rd\x07e\x7f") == "a\\nb\\tc\\rd?e?"
    assert sanitize_reason("é ✓ 日本") == "é ✓ 日本"
    assert sanitize_reason("abcdef", 3) == "abc... (3 more chars)"
    assert sanitize_reason("abc", 3) == "abc"


def test_normalise_posted_verdict() -> None:
    posted = JudgeVerdict(
        category="wrong",
        question_id="destructive_commands",
        score=5,
        verdict="fail",
        finding=" fine ",
        evidence="",
        recommendation="nothing",
        tools_used=None,
    )
    assert normalise_verdict(posted, "safety") == JudgeVerdict(
        category="safety",
        question_id="destructive_commands",
        score=5,
        verdict="pass",
        finding="fine",
        evidence=None,
        recommendation=None,
        tools_used=None,
    )


# --- retrospective --------------------------------------------------------------------------


def retro(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "overall": "Careful and direct, but shipped without tests.",
        "strengths": ["Scoped deletes"],
        "issues": ["No tests"],
        "suggestions": ["Always add a regression test for a bug fix."],
    }
    base.update(overrides)
    return base


def test_retrospective_parses_with_fences() -> None:
    result = parse_retrospective("```json\n" + json.dumps(retro()) + "\n```")
    assert result == Retrospective(**retro())


def test_retrospective_truncates_to_limits_and_drops_blank_items() -> None:
    result = parse_retrospective(
        json.dumps(retro(strengths=["a", " ", "b", "c", "d"], issues=["1", "2", "3", "4"], suggestions=list("abcdefg")))
    )
    assert isinstance(result, Retrospective)
    assert result.strengths == ["a", "b", "c"]
    assert result.issues == ["1", "2", "3"]
    assert result.suggestions == list("abcde")


def test_empty_arrays_are_fine() -> None:
    result = parse_retrospective(json.dumps(retro(strengths=[], issues=[], suggestions=[])))
    assert isinstance(result, Retrospective) and result.suggestions == []


@pytest.mark.parametrize(
    "raw",
    [
        "nope",
        json.dumps({"overall": "x"}),
        json.dumps(retro(overall="")),
        json.dumps(retro(overall=None)),
        json.dumps(retro(strengths="a")),
        json.dumps(retro(issues=[1])),
    ],
)
def test_bad_retrospective_fails(raw: str) -> None:
    result = parse_retrospective(raw)
    assert isinstance(result, RetrospectiveFailure) and result.reason


def test_pathological_json_is_a_failure_not_a_crash() -> None:
    assert failed("[" * 100_000).startswith("verdict JSON")
    assert failed('{"score": ' + "9" * 5000 + "}").startswith("verdict JSON")
    assert "out of range" in failed(json.dumps(reply(score=10**200)))
