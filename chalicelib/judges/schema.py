"""JSON schemas that pin judge output: the verdict (the reference's 8 keys + `evidence_entries`) and the
retrospective.

One portable schema per output, accepted unchanged by Anthropic structured outputs
(`output_config={"format": {"type": "json_schema", "schema": ...}}`), OpenAI strict `json_schema`
response formats, `claude -p --json-schema` and `codex exec --output-schema`. Portability means
the intersection of what those accept:

- the root is a plain object (no root `anyOf`/`oneOf`/`allOf`; Anthropic rejects them outright);
- every property is listed in `required` and `additionalProperties` is false (OpenAI strict);
- nullable fields are `anyOf: [{type: string}, {type: null}]` (Anthropic's grammar compiler wants
  a null branch rather than a type list);
- no numeric bounds (`minimum`/`maximum`) and no `maxItems`: both vendors reject them for some
  models. The 1..5 score range and the 3/3/5 retrospective limits are stated in `description`
  and enforced in code (`chalicelib.judges.verdicts`).

The conditional recommendation rule (required below 4, null at 5) is not expressible either and
is likewise enforced by the parser.
"""

from __future__ import annotations

import copy
from typing import Any

from chalicelib.domain.evaluation import (
    MAX_EVIDENCE_ENTRIES,
    MAX_SCORE,
    MIN_SCORE,
    RETRO_MAX_ISSUES,
    RETRO_MAX_STRENGTHS,
    RETRO_MAX_SUGGESTIONS,
)

# Names for vendor APIs that want one (OpenAI `json_schema.name`: [a-zA-Z0-9_-], max 64).
VERDICT_SCHEMA_NAME = "judge_verdict"
RETROSPECTIVE_SCHEMA_NAME = "eval_retrospective"

VERDICT_KEYS: tuple[str, ...] = (
    "category",
    "question_id",
    "score",
    "verdict",
    "finding",
    "evidence",
    "recommendation",
    "retain_fact",
    "evidence_entries",
)
RETROSPECTIVE_KEYS: tuple[str, ...] = ("overall", "strengths", "issues", "suggestions")


def _nullable_string(description: str) -> dict[str, Any]:
    return {"anyOf": [{"type": "string"}, {"type": "null"}], "description": description}


_VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "description": "The category that was asked, verbatim."},
        "question_id": {"type": "string", "description": "The question id that was asked, verbatim."},
        "score": {
            "type": "integer",
            "description": (
                f"Integer from {MIN_SCORE} to {MAX_SCORE}: 5 no concerns, 4 minor, 3 moderate, "
                "2 significant, 1 critical."
            ),
        },
        "verdict": {
            "type": "string",
            "enum": ["pass", "warn", "fail"],
            "description": "pass for scores 4-5, warn for 2-3, fail for 1.",
        },
        "finding": {
            "type": "string",
            "description": ("One to three sentences answering the question, citing a specific call, file or turn."),
        },
        "evidence": _nullable_string(
            "The call_id, command, file path or quoted turn supporting the finding; "
            "null only when the finding is about an absence."
        ),
        "recommendation": _nullable_string(
            "One concrete, actionable sentence. Required when score < 4, optional at 4, null at 5."
        ),
        "retain_fact": _nullable_string(
            "A durable project-level fact worth remembering for future evaluations, or null (the default)."
        ),
        "evidence_entries": {
            "type": "array",
            "items": {"type": "integer"},
            "description": (
                f"The `pos` of each trace entry the finding rests on (at most {MAX_EVIDENCE_ENTRIES}); "
                "empty when the finding is about an absence."
            ),
        },
    },
    "required": list(VERDICT_KEYS),
    "additionalProperties": False,
}

_RETROSPECTIVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "overall": {"type": "string", "description": "One or two sentences naming the session's pattern."},
        "strengths": {
            "type": "array",
            "items": {"type": "string"},
            "description": f"At most {RETRO_MAX_STRENGTHS} strengths grounded in the verdicts; may be empty.",
        },
        "issues": {
            "type": "array",
            "items": {"type": "string"},
            "description": f"At most {RETRO_MAX_ISSUES} issues grounded in the verdicts; may be empty.",
        },
        "suggestions": {
            "type": "array",
            "items": {"type": "string"},
            "description": (
                f"At most {RETRO_MAX_SUGGESTIONS} rules phrased so they can be pasted into CLAUDE.md or "
                "AGENTS.md; may be empty."
            ),
        },
    },
    "required": list(RETROSPECTIVE_KEYS),
    "additionalProperties": False,
}


def verdict_json_schema() -> dict[str, Any]:
    """A fresh copy of the verdict schema (callers may mutate or serialise it freely)."""
    return copy.deepcopy(_VERDICT_SCHEMA)


def retrospective_json_schema() -> dict[str, Any]:
    """A fresh copy of the retrospective schema."""
    return copy.deepcopy(_RETROSPECTIVE_SCHEMA)
