"""The streaming skeleton shared by the session parsers: records in, neutral entries out.

Owns what is format-independent: line reading (`JsonlRecords`), timestamps (normalised to UTC,
and carried forward for records that have none), tool result pairing, counting, and the
`format_mismatch` check (no record of the declared format among the non-blank lines).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.trace import (
    TextEntry,
    TextKind,
    ToolInvocation,
    ToolResult,
    TraceEntry,
    normalize_timestamp,
    utf8_len,
)
from chalicelib.ingest.jsonl import MAX_LINE_BYTES, JsonlRecords
from chalicelib.ingest.pairing import ToolPairer
from chalicelib.ingest.stats import ParseStats

# Used only when no record before an entry carried a timestamp (never seen in real files).
EPOCH = "1970-01-01T00:00:00.000Z"
# A file whose first this-many non-blank records are all foreign is rejected without reading on.
MISMATCH_PROBE_RECORDS = 1000

_CLAUDE_TYPES = frozenset({"user", "assistant", "summary", "system", "file-history-snapshot", "progress"})
_CODEX_TYPES = frozenset(
    {"session_meta", "turn_context", "response_item", "event_msg", "message", "function_call", "reasoning"}
)


def sniff_format(record: dict[str, Any]) -> str | None:
    """Which CLI wrote this record, when it is obvious; used to word `format_mismatch`."""
    if isinstance(record.get("trace"), list):
        return "native"
    record_type = record.get("type")
    if record_type in _CLAUDE_TYPES and "payload" not in record:
        return "claude-code"
    if record_type in _CODEX_TYPES or "record_type" in record:
        return "codex"
    return None


class SessionParser(ABC):
    """One use: call `parse(lines)` once and exhaust it; `stats` is complete afterwards."""

    format: ClassVar[str]

    def __init__(self, *, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.stats = ParseStats(format=self.format)
        self._pairer = ToolPairer()
        self._last_ts: str | None = None
        self._recognised = 0
        self._foreign: str | None = None
        self._max_line_bytes = max_line_bytes

    def parse(self, lines: Iterable[bytes]) -> Iterator[TraceEntry]:
        records = JsonlRecords(lines, max_line_bytes=self._max_line_bytes)
        nonblank = 0
        try:
            for line_no, record in records:
                nonblank += 1
                yield from self._count(self._pairer.expire(line_no))
                yield from self._count(self.handle(line_no, record))
                if not self._recognised:
                    self._foreign = self._foreign or sniff_format(record)
                    if nonblank >= MISMATCH_PROBE_RECORDS:
                        raise self._mismatch(nonblank)
            if not self._recognised:
                raise self._mismatch(nonblank)
            yield from self._count(self.finish())
            yield from self._count(self._pairer.finish())
        finally:
            self.stats.lines = records.lines
            self.stats.blank_lines = records.blank_lines
            self.stats.bytes = records.bytes
            self.stats.tool_results_unpaired = self._pairer.unpaired

    @abstractmethod
    def handle(self, line_no: int, record: dict[str, Any]) -> Iterable[TraceEntry]:
        """Turn one record into zero or more entries; call `recognised()` for own-format records."""

    def finish(self) -> Iterable[TraceEntry]:
        """Entries still buffered at the end of the stream."""
        return ()

    # -- helpers for subclasses -------------------------------------------------------------

    def recognised(self) -> None:
        self._recognised += 1

    def timestamp(self, raw: Any) -> str:
        """The record's timestamp in canonical UTC form, else the last one seen."""
        if isinstance(raw, str):
            try:
                ts = normalize_timestamp(raw)
            except ValueError:
                pass  # an unparseable timestamp keeps the previous one (see module docstring)
            else:
                self._last_ts = ts
                self.stats.see_timestamp(ts)
                return ts
        return self._last_ts or EPOCH

    def text_entry(
        self, kind: TextKind, ts: str, text: str, agent: tuple[str | None, str | None]
    ) -> TextEntry:
        return TextEntry(kind=kind, timestamp=ts, text=text, agent_id=agent[0], agent_type=agent[1])

    def invocation(
        self, ts: str, tool: str, call_id: str, arguments: dict[str, Any], agent: tuple[str | None, str | None]
    ) -> list[TraceEntry]:
        """The invocation followed by any of its results that arrived first."""
        entry = ToolInvocation(
            timestamp=ts, tool=tool, call_id=call_id, arguments=arguments, agent_id=agent[0], agent_type=agent[1]
        )
        return [entry, *self._pairer.invocation(call_id, tool)]

    def result(
        self,
        line_no: int,
        ts: str,
        call_id: str,
        output: str,
        is_error: bool,
        agent: tuple[str | None, str | None],
    ) -> list[ToolResult]:
        entry = ToolResult(
            timestamp=ts,
            tool=self._pairer.tool_for(call_id) or "unknown",
            call_id=call_id,
            output=output,
            is_error=is_error,
            output_bytes=utf8_len(output),
            agent_id=agent[0],
            agent_type=agent[1],
        )
        return self._pairer.result(entry, line_no)

    def tool_for(self, call_id: str) -> str | None:
        return self._pairer.tool_for(call_id)

    # -- internals ----------------------------------------------------------------------------

    def _count(self, entries: Iterable[TraceEntry]) -> Iterator[TraceEntry]:
        for entry in entries:
            self.stats.count_entry(entry.kind)
            yield entry

    def _mismatch(self, checked: int) -> InvalidRequest:
        other = self._foreign if self._foreign and self._foreign != self.format else None
        if other == "native":
            hint = ' It looks like a {"trace": [...]} body: send it with Content-Type: application/json.'
        elif other:
            hint = f" They look like a {other} session: upload with ?format={other}."
        else:
            hint = ""
        return InvalidRequest(
            f"None of the {checked} records read is a {self.format} session record.{hint}",
            code="format_mismatch",
            details={"expected_format": self.format, "detected_format": other, "records_checked": checked},
        )
