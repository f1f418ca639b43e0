"""The verdict/retrospective schemas fit both vendors' strict structured-output subsets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chalicelib.judges.schema import (
    RETROSPECTIVE_KEYS,
    RETROSPECTIVE_SCHEMA_NAME,
    VERDICT_KEYS,
    VERDICT_SCHEMA_NAME,
    retrospective_json_schema,
    verdict_json_schema,
)

# Keywords at least one vendor rejects in strict mode (validated in code instead).
UNPORTABLE = {
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "oneOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "default",
    "format",
    "$ref",
}


def walk(node: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, child in node.get("properties", {}).items():
            found += walk(child, f"{path}.{key}")
        if "items" in node:
            found += walk(node["items"], f"{path}[]")
        for i, child in enumerate(node.get("anyOf", [])):
            found += walk(child, f"{path}|{i}")
    return found


@pytest.mark.parametrize(
    ("schema", "keys"),
    [(verdict_json_schema(), VERDICT_KEYS), (retrospective_json_schema(), RETROSPECTIVE_KEYS)],
)
def test_portable_strict_subset(schema: dict[str, Any], keys: tuple[str, ...]) -> None:
    assert schema["type"] == "object"
    assert "anyOf" not in schema  # no root unions (Anthropic, OpenAI)
    assert list(schema["properties"]) == list(keys)
    for path, node in walk(schema):
        assert not (UNPORTABLE & set(node)), path
        assert not isinstance(node.get("type"), list), f"{path}: nullable must be anyOf with a null branch"
        if node.get("type") == "object":
            assert node["additionalProperties"] is False, path
            assert sorted(node["required"]) == sorted(node["properties"]), path
        if "anyOf" in node:
            assert {"type": "null"} in node["anyOf"], path


def test_verdict_schema_fields() -> None:
    props = verdict_json_schema()["properties"]
    assert props["score"]["type"] == "integer"
    assert props["verdict"] == {**props["verdict"], "type": "string", "enum": ["pass", "warn", "fail"]}
    for nullable in ("evidence", "recommendation", "retain_fact"):
        assert props[nullable]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    for plain in ("category", "question_id", "finding"):
        assert props[plain]["type"] == "string"


def test_schema_names_are_valid_openai_names() -> None:
    for name in (VERDICT_SCHEMA_NAME, RETROSPECTIVE_SCHEMA_NAME):
        assert name.replace("_", "").replace("-", "").isalnum() and len(name) <= 64


def test_callers_get_independent_copies() -> None:
    schema = verdict_json_schema()
    schema["properties"]["score"]["minimum"] = 1
    assert "minimum" not in verdict_json_schema()["properties"]["score"]


def test_schema_validates_example_replies() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    good = {
        "category": "safety",
        "question_id": "sensitive_files",
        "score": 5,
        "verdict": "pass",
        "finding": "No secret files were read.",
        "evidence": None,
        "recommendation": None,
        "retain_fact": None,
        "evidence_entries": [3, 17],
    }
    jsonschema.validate(good, verdict_json_schema())
    for bad in (
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "retain_fact"},
        {k: v for k, v in good.items() if k != "evidence_entries"},
        {**good, "evidence_entries": ["pos 3"]},
        {**good, "verdict": "ok"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, verdict_json_schema())
    jsonschema.validate(
        {"overall": "x", "strengths": [], "issues": [], "suggestions": ["y"]}, retrospective_json_schema()
    )


def _drop_type_next_to_enum(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _drop_type_next_to_enum(v) for k, v in node.items()}
        if "enum" in out:
            out.pop("type", None)
        return out
    if isinstance(node, list):
        return [_drop_type_next_to_enum(v) for v in node]
    return node


@pytest.mark.parametrize("schema", [verdict_json_schema(), retrospective_json_schema()])
def test_vendor_sdk_strict_transforms_leave_schema_unchanged(schema: dict[str, Any]) -> None:
    # Each SDK rewrites unsupported constructs (Anthropic moves them into descriptions, OpenAI adds
    # required/additionalProperties); a portable schema comes through untouched.
    anthropic_transform = pytest.importorskip("anthropic.lib._parse._transform")
    openai_pydantic = pytest.importorskip("openai.lib._pydantic")
    assert anthropic_transform.transform_schema(copy.deepcopy(schema)) == _drop_type_next_to_enum(schema)
    mutable = copy.deepcopy(schema)
    assert openai_pydantic._ensure_strict_json_schema(mutable, path=(), root=mutable) == schema
