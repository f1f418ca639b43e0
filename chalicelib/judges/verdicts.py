"""Parsing and normalising untrusted judge output into verdicts and retrospectives (reference §3.6, §4.3).

Judge text is never trusted: ids are overridden with the question asked, the verdict string is
recomputed from the score, and anything malformed becomes a failure carrying a sanitised reason.
Failures are values, not exceptions, so callers can record them per question.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.evaluation import (
    MAX_FACT_CHARS,
    MAX_SCORE,
    MIN_SCORE,
    RETRO_MAX_ISSUES,
    RETRO_MAX_STRENGTHS,
    RETRO_MAX_SUGGESTIONS,
    JudgeVerdict,
    Retrospective,
    ToolUse,
    verdict_for_score,
)
from chalicelib.domain.json_depth import loads_bounded
from chalicelib.judges.catalog import Question
from chalicelib.judges.evidence import check_evidence_entries

REASON_EXCERPT_LIMIT = 500

# Keys a verdict must carry. `evidence`, `recommendation` and `retain_fact` are nullable, so an
# absent one is read as null (structured outputs always send them; free-text judges may not).
_REQUIRED_VERDICT_KEYS: tuple[str, ...] = ("category", "question_id", "score", "verdict", "finding")
_NULLABLE_VERDICT_KEYS: tuple[str, ...] = ("evidence", "recommendation")


@dataclass(frozen=True)
class ParsedVerdict:
    """A usable verdict; `violations` lists prompt-rule breaches that were corrected or tolerated (logs)."""

    verdict: JudgeVerdict
    retain_fact: str | None
    violations: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerdictFailure:
    """The question failed: `reason` is sanitised and safe to show users and store."""

    reason: str


VerdictParse = ParsedVerdict | VerdictFailure


@dataclass(frozen=True)
class RetrospectiveFailure:
    reason: str


# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F; translate() keeps this linear
# and fast on megabyte-sized judge output.
_CONTROL_CHARS: dict[int, str] = {
    **{code: "?" for code in (*range(0x00, 0x20), *range(0x7F, 0xA0))},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def sanitize_reason(text: str, limit: int = REASON_EXCERPT_LIMIT) -> str:
    """Escape \\n \\r \\t, turn other control chars into '?', cut to `limit` chars + "(N more chars)"."""
    clean = text.translate(_CONTROL_CHARS)
    if len(clean) <= limit:
        return clean
    return f"{clean[:limit]}... ({len(clean) - limit} more chars)"


def strip_fences(raw: str) -> str:
    """Trim; if the text starts with ```, drop its first line and a trailing ```."""
    text = raw.strip()
    if not text.startswith("```"):
        return text
    newline = text.find("\n")
    text = "" if newline < 0 else text[newline + 1 :]
    text = text.rstrip()
    if text.endswith("```"):
        text = text[:-3]
    return text.strip()


def _load_object(raw: str, what: str) -> dict[str, Any] | str:
    """The parsed JSON object, or a failure reason."""
    text = strip_fences(raw)
    try:
        value = loads_bounded(text)
    except (ValueError, RecursionError) as exc:  # ValueError also covers over-long integer literals
        detail = (
            f" ({exc.msg} at line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        )
        return f"{what} JSON could not be parsed{detail}; raw response: {sanitize_reason(raw)}"
    if not isinstance(value, dict):
        return f"{what} JSON is not an object; raw response: {sanitize_reason(raw)}"
    return value


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    stripped = str(value).strip()
    return stripped or None


def parse_verdict(raw: str, question: Question, *, tools_used: Sequence[ToolUse] | None = None,
                  trace_entries: int | None = None) -> VerdictParse:
    """Normalise one judge reply for `question` exactly as the reference does (§3.6).

    `tools_used` are the session-tool calls the judge made (None: it had no tools); `trace_entries` is
    the length of the trace the judge saw, against which `evidence_entries` are checked (invalid ones
    are dropped and reported as violations, never failing the verdict).
    """
    loaded = _load_object(raw, "verdict")
    if isinstance(loaded, str):
        return VerdictFailure(loaded)
    data = loaded

    missing = [k for k in _REQUIRED_VERDICT_KEYS if k not in data]
    if missing:
        return VerdictFailure(
            f"verdict is missing required keys: {', '.join(missing)}; raw response: {sanitize_reason(raw)}"
        )

    score = data["score"]
    # bool is an int subclass in Python; JSON true is not a score.
    if not isinstance(score, int) or isinstance(score, bool):
        return VerdictFailure(sanitize_reason(f"verdict score is not an integer: {json.dumps(score)}"))
    if not MIN_SCORE <= score <= MAX_SCORE:
        return VerdictFailure(sanitize_reason(f"verdict score {score} is out of range {MIN_SCORE}..{MAX_SCORE}"))

    if not isinstance(data["finding"], str):
        return VerdictFailure("verdict finding is not a string")
    for key in _NULLABLE_VERDICT_KEYS:
        if data.get(key) is not None and not isinstance(data[key], str):
            return VerdictFailure(f"verdict {key} is neither a string nor null")

    violations: list[str] = []
    if data["category"] != question.category or data["question_id"] != question.id:
        violations.append(
            sanitize_reason(
                f"judge answered as {data['category']!r}/{data['question_id']!r}; "
                f"overridden with {question.category}/{question.id}",
                200,
            )
        )
    derived = verdict_for_score(score)
    if data["verdict"] != derived:
        violations.append(
            sanitize_reason(f"judge verdict {data['verdict']!r} at score {score}; recomputed as {derived}", 200)
        )

    recommendation = _optional_text(data.get("recommendation"))
    if score == MAX_SCORE and recommendation is not None:
        violations.append("recommendation given at score 5; dropped")
        recommendation = None
    elif score < 4 and recommendation is None:
        violations.append(f"no recommendation at score {score}")

    evidence_entries, dropped = check_evidence_entries(data.get("evidence_entries"), trace_entries)
    violations.extend(sanitize_reason(v, 200) for v in dropped)

    verdict = JudgeVerdict(
        category=question.category,
        question_id=question.id,
        score=score,
        verdict=derived,
        finding=data["finding"].strip(),
        evidence=_optional_text(data.get("evidence")),
        recommendation=recommendation,
        tools_used=list(tools_used) if tools_used is not None else None,
        evidence_entries=evidence_entries,
    )
    return ParsedVerdict(verdict=verdict, retain_fact=extract_retain_fact(data), violations=tuple(violations))


def extract_retain_fact(data: dict[str, Any]) -> str | None:
    """The retained fact, only when it is a non-empty string after trimming; never stored on the verdict."""
    fact = data.get("retain_fact")
    if isinstance(fact, str) and fact.strip():
        text = " ".join(fact.split())
        return text if len(text) <= MAX_FACT_CHARS else text[:MAX_FACT_CHARS - 1] + "…"
    return None


def normalise_verdict(verdict: JudgeVerdict, category: str, *, trace_entries: int | None = None) -> JudgeVerdict:
    """Apply the parser's rules to an already-structured verdict (a daemon-posted one).

    Category comes from the catalog, the verdict string from the score, the recommendation is
    trimmed and dropped at score 5, empty evidence becomes null, and evidence entries outside the
    trace (`trace_entries` long, when known) are dropped.
    """
    recommendation = _optional_text(verdict.recommendation)
    if verdict.score == MAX_SCORE:
        recommendation = None
    entries, _ = check_evidence_entries(list(verdict.evidence_entries), trace_entries)
    return verdict.model_copy(
        update={
            "category": category,
            "verdict": verdict_for_score(verdict.score),
            "finding": verdict.finding.strip(),
            "evidence": _optional_text(verdict.evidence),
            "recommendation": recommendation,
            "evidence_entries": entries,
        }
    )


def _string_list(value: Any, key: str, limit: int) -> list[str] | str:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return f"retrospective {key} is not an array of strings"
    items = [item.strip() for item in value if item.strip()]
    # Limits cannot be put in a portable schema; extra items are dropped rather than failing the
    # whole (optional) retrospective.
    return items[:limit]


def parse_retrospective(raw: str) -> Retrospective | RetrospectiveFailure:
    """Parse the retrospective reply; failures are non-fatal for the run (retrospective becomes null)."""
    loaded = _load_object(raw, "retrospective")
    if isinstance(loaded, str):
        return RetrospectiveFailure(loaded)
    data = loaded
    missing = [k for k in ("overall", "strengths", "issues", "suggestions") if k not in data]
    if missing:
        return RetrospectiveFailure(
            f"retrospective is missing required keys: {', '.join(missing)}; raw response: {sanitize_reason(raw)}"
        )
    overall = data["overall"]
    if not isinstance(overall, str) or not overall.strip():
        return RetrospectiveFailure("retrospective overall is not a non-empty string")
    lists: dict[str, list[str]] = {}
    for key, limit in (
        ("strengths", RETRO_MAX_STRENGTHS),
        ("issues", RETRO_MAX_ISSUES),
        ("suggestions", RETRO_MAX_SUGGESTIONS),
    ):
        parsed = _string_list(data[key], key, limit)
        if isinstance(parsed, str):
            return RetrospectiveFailure(parsed)
        lists[key] = parsed
    return Retrospective(
        overall=overall.strip(),
        strengths=lists["strengths"],
        issues=lists["issues"],
        suggestions=lists["suggestions"],
    )
