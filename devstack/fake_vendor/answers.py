"""What the fake judge answers: the question a prompt asks, a deterministic verdict, or a minimal schema instance."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from devstack.fake_vendor.options import Rule
from devstack.fake_vendor.wire import _Parsed

_ID_LINE = re.compile(r"(?m)^[^\w\n]*ID[^\w\n]*:[^\w\n]*([\w.\-]+)")


_CATEGORY_LINE = re.compile(r"(?m)^[^\w\n]*Category[^\w\n]*:[^\w\n]*([\w.\-]+)")


_ID_ANY = re.compile(r"\bID:\s*(\S+)")


_CATEGORY_ANY = re.compile(r"\bCategory:\s*(\S+)")


_FILE_REF = re.compile(r"[\w./-]+\.(?:py|ts|tsx|js|json|md|cs|go|rs|java|yaml|yml|toml|sql|sh)\b")


def _find_question(prompt: str) -> tuple[str | None, str | None]:
    def first(strict: re.Pattern[str], loose: re.Pattern[str]) -> str | None:
        found = strict.search(prompt) or loose.search(prompt)
        return found.group(1).strip("`*.,;\"'") if found else None

    return first(_ID_LINE, _ID_ANY), first(_CATEGORY_LINE, _CATEGORY_ANY)


def _deterministic_score(question_id: str) -> int:
    return 2 + int(hashlib.sha256(question_id.encode()).hexdigest(), 16) % 4


def _verdict_for(score: int) -> str:
    return "pass" if score >= 4 else "warn" if score >= 2 else "fail"


def _reply_text(parsed: _Parsed, question_id: str | None, category: str | None, rule: Rule | None) -> str:
    if rule is not None and rule.text is not None:
        return rule.text
    if rule is not None and rule.malformed:
        return "I think the session went fine overall, score: four-ish {not json"
    schema = parsed.schema or {}
    obj = minimal_instance(schema, include_optional=question_id is not None)
    if not schema or (question_id is not None and not isinstance(obj, dict)):
        obj = {}  # no schema requested: still answer with a JSON object
    if question_id is not None and isinstance(obj, dict):
        score = rule.score if rule is not None and rule.score is not None else _deterministic_score(question_id)
        context = "\n".join(text for text, _ in parsed.blocks)
        cited = _FILE_REF.search(context)
        where = f"`{cited.group(0)}`" if cited else "turn 1"
        verdict = {
            "category": category or "unknown",
            "question_id": question_id,
            "score": score,
            "verdict": _verdict_for(score) if isinstance(score, int) else "warn",
            "finding": f"Fake judge finding for {question_id}: the agent's change to {where} was reviewed.",
            "evidence": f"See {where} in the trace.",
            "recommendation": None if score == 5 else f"Add a regression test covering {where} before merging.",
            "retain_fact": None,
            "evidence_entries": parsed.tools.cited_positions(context),
        }
        if rule is not None and rule.wrong_ids:
            verdict.update(category="banana", question_id="hallucinated_question")
        properties = schema.get("properties")
        for key, value in verdict.items():
            if not isinstance(properties, dict) or key in properties:
                obj[key] = value
    text = json.dumps(obj)
    if rule is not None and rule.fenced:
        return f"```json\n{text}\n```"
    return text


def minimal_instance(schema: Any, *, include_optional: bool = False, _root: Any = None, _depth: int = 0) -> Any:
    """A small value valid against a JSON schema (the subset structured-output APIs accept)."""
    root = _root if _root is not None else schema
    if not isinstance(schema, dict) or _depth > 32:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return minimal_instance(target, include_optional=include_optional, _root=root, _depth=_depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        non_null = [v for v in schema["enum"] if v is not None]
        return non_null[0] if non_null else None
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            pick = non_null[0] if non_null else options[0]
            return minimal_instance(pick, include_optional=include_optional, _root=root, _depth=_depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        if "null" in kind:
            return None
        kind = kind[0] if kind else None
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        names = list(properties) if include_optional else [n for n in properties if n in required]
        return {
            name: minimal_instance(properties[name], include_optional=include_optional, _root=root, _depth=_depth + 1)
            for name in names
        }
    if kind == "array":
        count = int(schema.get("minItems", 0))
        item = minimal_instance(
            schema.get("items", {}), include_optional=include_optional, _root=root, _depth=_depth + 1
        )
        return [item for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        exclusive_low = schema.get("exclusiveMinimum")
        value: float = 0
        if isinstance(low, int | float):
            value = low
        elif isinstance(exclusive_low, int | float):
            value = exclusive_low + 1
        high = schema.get("maximum")
        if isinstance(high, int | float) and value > high:
            value = high
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string":
        return "x" * max(int(schema.get("minLength", 0)), 2)
    return None
