"""Session ingest (pure: no AWS, no HTTP): transcript parsers, redaction, compaction, eval context.

Entry points for services:
- `parse_session(fmt, lines)` → `ParsedSession` (iterate it for `TraceEntry`s; `.stats` is
  complete once exhausted). `lines` is any iterable of raw byte lines; wrap a stream with
  `iter_jsonl_lines(stream)` to keep memory bounded even against one huge line.
- `build_eval_context(entries, threshold)` → `EvalContext(trace, compaction)`.
- `validate_threshold`, `compact`, `redact_trace`, `resolve_chain` for finer-grained use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Literal, get_args

from chalicelib.domain.errors import InvalidRequest

if TYPE_CHECKING:
    from chalicelib.domain.trace import TraceEntry
    from chalicelib.ingest.base import SessionParser
    from chalicelib.ingest.compaction import (
        DEFAULT_THRESHOLD_BYTES,
        MAX_THRESHOLD_BYTES,
        CompactionStats,
        compact,
        validate_threshold,
    )
    from chalicelib.ingest.context import EvalContext, build_eval_context, resolve_chain
    from chalicelib.ingest.jsonl import MAX_LINE_BYTES, iter_jsonl_lines
    from chalicelib.ingest.redaction import redact_text, redact_trace, redact_value
    from chalicelib.ingest.stats import ParseStats, SessionMetadata

# Re-exports load their module on first use (PEP 562): importing any `chalicelib.ingest.*` runs this
# file, and a reader of stored traces (the dispatch's spend estimate) needs neither the parsers nor
# the redaction detectors (their regexes and prefilter cost a cold start).
_LAZY = {
    "DEFAULT_THRESHOLD_BYTES": "compaction", "MAX_THRESHOLD_BYTES": "compaction", "CompactionStats": "compaction",
    "compact": "compaction", "validate_threshold": "compaction",
    "EvalContext": "context", "build_eval_context": "context", "resolve_chain": "context",
    "MAX_LINE_BYTES": "jsonl", "iter_jsonl_lines": "jsonl",
    "redact_text": "redaction", "redact_trace": "redaction", "redact_value": "redaction",
    "ParseStats": "stats", "SessionMetadata": "stats",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


SessionFormat = Literal["claude-code", "codex"]
SESSION_FORMATS: tuple[str, ...] = get_args(SessionFormat)

__all__ = [
    "DEFAULT_THRESHOLD_BYTES",
    "MAX_LINE_BYTES",
    "MAX_THRESHOLD_BYTES",
    "SESSION_FORMATS",
    "CompactionStats",
    "EvalContext",
    "ParseStats",
    "ParsedSession",
    "SessionFormat",
    "SessionMetadata",
    "build_eval_context",
    "compact",
    "iter_jsonl_lines",
    "parse_session",
    "redact_text",
    "redact_trace",
    "redact_value",
    "resolve_chain",
    "validate_threshold",
]


class ParsedSession:
    """A single-use stream of entries; `stats` is complete once iteration has finished."""

    def __init__(self, parser: SessionParser, lines: Iterable[bytes]) -> None:
        self._parser = parser
        self._lines = lines
        self._started = False

    @property
    def stats(self) -> ParseStats:
        return self._parser.stats

    def __iter__(self) -> Iterator[TraceEntry]:
        if self._started:
            raise RuntimeError("a ParsedSession can be iterated only once")
        self._started = True
        return self._parser.parse(self._lines)


def parse_session(fmt: str, lines: Iterable[bytes]) -> ParsedSession:
    """Parse a `claude-code` or `codex` JSONL body (raises InvalidRequest on bad input)."""
    parser: SessionParser
    if fmt == "claude-code":
        from chalicelib.ingest.claude_code import ClaudeCodeParser

        parser = ClaudeCodeParser()
    elif fmt == "codex":
        from chalicelib.ingest.codex import CodexParser

        parser = CodexParser()
    else:
        raise InvalidRequest(
            f"Unknown session format {fmt[:40]!r}: use ?format=claude-code or ?format=codex.",
            code="unsupported_format",
            details={"supported_formats": list(SESSION_FORMATS)},
        )
    return ParsedSession(parser, lines)
