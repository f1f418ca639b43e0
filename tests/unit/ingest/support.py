"""Helpers for the ingest tests: fixture paths, JSONL building, parsing to wire JSON, the strings in a JSON value."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chalicelib.domain.trace import TraceEntry, trace_to_json
from chalicelib.ingest import ParseStats, parse_session

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sessions"


def jsonl(*records: Any) -> list[bytes]:
    """Byte lines as a file object would yield them (each ending in a newline)."""
    return [(json.dumps(record) + "\n").encode() for record in records]


def parse(fmt: str, lines: Any) -> tuple[list[TraceEntry], ParseStats]:
    parsed = parse_session(fmt, lines)
    entries = list(parsed)
    return entries, parsed.stats


def parse_fixture(fmt: str, name: str) -> tuple[list[TraceEntry], ParseStats]:
    with (FIXTURES / name).open("rb") as handle:
        return parse(fmt, handle)


def wire(entries: list[TraceEntry]) -> list[dict[str, Any]]:
    return trace_to_json(entries)


def golden(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return result


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
