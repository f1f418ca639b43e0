"""Compaction of a trace for judges: tool outputs above a byte threshold become a marker.

Semantics from shared/reference/kapacitor-evals.md §2: the threshold is in UTF-8 bytes per tool
result (default 2000, at most 200_000); an output above it is replaced by
`<truncated: N bytes, kind=ToolName>` (N = its size), with `truncated: true` and
`output_bytes: N`. The stats are the eval context's `compaction` object, plus a per-tool
breakdown. `bytes_saved` is the exact number of output bytes removed (original minus marker);
at thresholds below the marker's own length (~40 bytes) a tiny output can grow, so it can even
be negative, which is reported as is rather than hidden.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

# The bounds are the eval context's rule (dispatch checks them too); ingest applies them.
from chalicelib.domain.compaction import DEFAULT_THRESHOLD_BYTES as DEFAULT_THRESHOLD_BYTES
from chalicelib.domain.compaction import MAX_THRESHOLD_BYTES as MAX_THRESHOLD_BYTES
from chalicelib.domain.compaction import MIN_THRESHOLD_BYTES as MIN_THRESHOLD_BYTES
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.trace import ToolResult, TraceEntry, utf8_len


class ToolTruncation(TypedDict):
    truncated: int
    bytes_saved: int


class CompactionStats(TypedDict):
    threshold_bytes: int
    entries: int
    tool_results_total: int
    tool_results_truncated: int
    bytes_saved: int
    per_tool: dict[str, ToolTruncation]


def validate_threshold(value: int | str | None) -> int:
    """The threshold to use: default when None; an int in [0, 200000] otherwise.

    0 is allowed and means "drop every non-empty output" (judging on invocations alone).
    """
    if value is None:
        return DEFAULT_THRESHOLD_BYTES
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidRequest(
                f"threshold must be a whole number of bytes between {MIN_THRESHOLD_BYTES} and "
                f"{MAX_THRESHOLD_BYTES}.",
                code="invalid_threshold",
                details={"min": MIN_THRESHOLD_BYTES, "max": MAX_THRESHOLD_BYTES},
            ) from None
    if not MIN_THRESHOLD_BYTES <= value <= MAX_THRESHOLD_BYTES:
        raise InvalidRequest(
            f"threshold {value} is out of range: use {MIN_THRESHOLD_BYTES} to {MAX_THRESHOLD_BYTES} bytes "
            f"(default {DEFAULT_THRESHOLD_BYTES}).",
            code="threshold_out_of_range",
            details={"min": MIN_THRESHOLD_BYTES, "max": MAX_THRESHOLD_BYTES, "value": value},
        )
    return value


def truncation_marker(size: int, tool: str) -> str:
    return f"<truncated: {size} bytes, kind={tool}>"


class CompactionTally:
    """The counts both compaction passes report, kept in one place so their stats cannot drift apart."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.total = self.truncated = self.saved = 0
        self.per_tool: dict[str, ToolTruncation] = {}

    def truncation(self, tool: str, removed: int) -> None:
        self.truncated += 1
        self.saved += removed
        tool_stats = self.per_tool.setdefault(tool, {"truncated": 0, "bytes_saved": 0})
        tool_stats["truncated"] += 1
        tool_stats["bytes_saved"] += removed

    def stats(self, entries: int) -> CompactionStats:
        return {
            "threshold_bytes": self.threshold,
            "entries": entries,
            "tool_results_total": self.total,
            "tool_results_truncated": self.truncated,
            "bytes_saved": self.saved,
            "per_tool": self.per_tool,
        }


def compact(entries: Iterable[TraceEntry], threshold_bytes: int) -> tuple[list[TraceEntry], CompactionStats]:
    """Replace tool outputs over `threshold_bytes` by a marker; returns the new trace and stats.

    Idempotent: results already truncated (by an earlier pass or an uploader) are kept and
    counted as truncated, so compacting twice gives the stats of compacting once at the lower
    threshold.
    """
    threshold = validate_threshold(threshold_bytes)
    out: list[TraceEntry] = []
    tally = CompactionTally(threshold)
    for entry in entries:
        if not isinstance(entry, ToolResult):
            out.append(entry)
            continue
        tally.total += 1
        if entry.truncated:
            marker_bytes = utf8_len(entry.output)
            removed = entry.output_bytes - marker_bytes
        else:
            size = utf8_len(entry.output)
            if size <= threshold:
                out.append(entry)
                continue
            marker = truncation_marker(size, entry.tool)
            removed = size - utf8_len(marker)
            entry = entry.model_copy(update={"output": marker, "truncated": True, "output_bytes": size})
        out.append(entry)
        tally.truncation(entry.tool, removed)
    return out, tally.stats(len(out))


def compact_wire(entries: Iterable[dict[str, Any]], threshold_bytes: int) -> tuple[list[dict[str, Any]],
                                                                                  CompactionStats]:
    """`compact` over entries in their wire form (`entry_to_json` dicts), with the same result and stats.

    The worker keeps a large trace as plain dicts (a fraction of the memory of the models); input
    dicts are never modified, and entries that do not change are shared with the input.
    """
    threshold = validate_threshold(threshold_bytes)
    out: list[dict[str, Any]] = []
    tally = CompactionTally(threshold)
    for entry in entries:
        if entry.get("kind") != "tool_result":
            out.append(entry)
            continue
        tally.total += 1
        output = entry.get("output", "")
        if entry.get("truncated"):
            removed = int(entry.get("output_bytes", 0)) - utf8_len(output)
        else:
            size = utf8_len(output)
            if size <= threshold:
                out.append(entry)
                continue
            marker = truncation_marker(size, entry["tool"])
            removed = size - utf8_len(marker)
            entry = {**entry, "output": marker, "truncated": True, "output_bytes": size}
        out.append(entry)
        tally.truncation(entry["tool"], removed)
    return out, tally.stats(len(out))
