"""The JSON depth pre-check agrees with the real nesting of any JSON value and never recurses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.json_depth import JsonTooDeep, check_json_depth, loads_bounded

_TEXT = st.text(alphabet=st.sampled_from([*'ab[]{}"\\\n é', "\u2028", "\ud7ff"]), max_size=12)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | _TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                           max_leaves=40)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.integers(min_value=0, max_value=6), st.booleans())
def test_the_check_refuses_exactly_the_values_nested_past_the_limit(value: Any, limit: int, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    deep = depth_of(value) > limit
    if deep:
        with pytest.raises(JsonTooDeep):
            check_json_depth(text, limit)
    else:
        check_json_depth(text, limit)
        check_json_depth(text.encode(), limit)


@pytest.mark.parametrize(("body", "deep"), [
    (b"[" * 129 + b"]" * 129, True),
    (b"[" * 128 + b"]" * 128, False),
    (b'{"a":' * 200 + b"1" + b"}" * 200, True),
    (b'["' + b"[" * 10_000 + b'"]', False),                     # brackets inside a string
    (b'["\\"' + b"[" * 10_000 + b'"]', False),                  # ... after an escaped quote
    (b'["\\\\"' + b",[" * 200 + b"]" * 200 + b"]", True),       # an escaped backslash ends the string
    (b'"' + b"\\" * 5 + b'"' + b"[" * 200, False),              # odd escapes: still one string
    (b"[" * 200 + b'"unterminated' + b"\\\"" * 1000, True),     # deep before the broken string
    (b'"unterminated ' + b"[" * 10_000, False),                 # everything after an open quote is string
    (b"]" * 300 + b"[" * 300, False),                           # malformed at once: the parser stops there
])
def test_adversarial_shapes(body: bytes, deep: bool) -> None:
    if deep:
        with pytest.raises(JsonTooDeep):
            check_json_depth(body)
    else:
        check_json_depth(body)


def test_hostile_inputs_take_one_pass_and_no_recursion() -> None:
    # Sizes well past any body the API takes; these would raise RecursionError in json.loads or take
    # quadratic time in a backtracking scanner. (Speed itself is a benchmark's business, not a test's.)
    for body, deep in ((b"[" * 5_000_000, True), (b'{"a":' * 1_000_000, True), (b'"' + b'\\"' * 2_000_000, False),
                       (b'["' * 1_000_000, True)):
        with pytest.raises(JsonTooDeep):
            loads_bounded(b"[" * 200 + body)
        if deep:
            with pytest.raises(JsonTooDeep):
                check_json_depth(body)
        else:
            check_json_depth(body)  # all string after the first quote: the parser refuses it, shallowly
            with pytest.raises(ValueError):
                loads_bounded(body)


def test_loads_bounded_parses_what_is_within_the_limit_and_refuses_the_rest_as_value_errors() -> None:
    assert loads_bounded('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    with pytest.raises(ValueError):
        loads_bounded("[" * 100_000)
    with pytest.raises(ValueError):
        loads_bounded("{not json")
