"""JSON nesting bound: a linear pre-check so hostile nesting is a 400, never a RecursionError.

Python's `json` (and everything that walks the parsed value afterwards: pydantic, our scrubbers,
`json.dumps` of a response) recurses once per level of nesting, so a body of `[[[[…` thousands deep
raises RecursionError, which an API turns into a 500. `check_json_depth` scans the raw text once,
without recursion and without parsing, and refuses anything nested deeper than the cap before any
parser sees it. `MAX_JSON_DEPTH` (128) is far beyond any body this service accepts (settings, events
and results nest under 10 levels; a session trace's tool inputs rarely pass 20) and far below the
interpreter's recursion limit (1000), with room for every walker downstream.

The scan only counts brackets outside strings; it does not validate JSON (the parser does that
next), so on malformed input it may stop early or count loosely, but never takes more than one pass.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from chalicelib.domain.errors import InvalidRequest

MAX_JSON_DEPTH = 128

# A string from its opening quote to its closing one, or to the end of the text if it never closes.
# The two inner alternatives start with different characters and the repetition is possessive, and
# the pattern cannot fail once it has seen the quote: one pass, no backtracking, no retries.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\Z)', re.S)
# Keeps only brackets, as 2 (opening) or 0 (closing), so `value - 1` is the change in depth.
_BRACKETS_ONLY = bytes.maketrans(b"[]{}", b"\x02\x00\x02\x00")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


class JsonTooDeep(ValueError):
    """The JSON nests deeper than allowed (a ValueError, so code that treats bad JSON as a ValueError
    keeps doing so)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels")
        self.limit = limit


def check_json_depth(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise `JsonTooDeep` if `data` nests `[`/`{` more than `limit` levels deep. O(len(data))."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    # Fast path: with no more opening brackets in total than the limit, no nesting can exceed it.
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    structure = _STRING.sub(b"", raw).translate(_BRACKETS_ONLY, _NOT_BRACKETS)
    # A stray closer only occurs in malformed JSON, where the parser stops at it; counting it down
    # can therefore only lower depths the parser never reaches.
    if max(accumulate(step - 1 for step in structure), default=0) > limit:
        raise JsonTooDeep(limit)


def json_too_deep_error(limit: int = MAX_JSON_DEPTH) -> InvalidRequest:
    """The contract's 400 for a body (or WebSocket message) nested past the cap."""
    return InvalidRequest(f"The JSON nests deeper than {limit} levels; flatten it.", code="json_too_deep",
                          details={"max_depth": limit})


def loads_bounded(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` behind the depth check: `JsonTooDeep` or `ValueError` for bad input, never
    RecursionError."""
    check_json_depth(data, limit)
    return json.loads(data)
