"""Secret redaction of trace entries: linear-time scans of every string, before any entry is stored.

Every string an entry carries (message, thinking and plan text, tool arguments at any depth,
tool outputs) has credentials replaced by `<redacted:KIND>`; tool names and call ids are never
touched, so invocation/result pairing survives. `redact_trace` returns the counts per kind.
`REDACTION_VERSION` names this rule set: traces are redacted once, at ingest, and the session
record keeps the version, so a trace stored under an older version is redacted again on read.

What is detected: provider tokens (`tokens.py`), secret-looking assignments (`assignments.py`),
and structured arguments whose dict key is secret-looking (`values.py` says when a value is a
credential). Generic high-entropy strings are redacted only when assigned to such a key, so UUIDs,
git SHAs, hashes and paths stay readable. The tests use detect-secrets itself as an independent
oracle over the redacted fixture. Why not detect-secrets' scanner: `scan_line` with its default
plugins measured ~1.6 ms per 300-character line (about 0.2 MB/s).

How it stays linear and fast (issue #12 found a 300 KB run of `eyJ` taking ~40 s and a run of
`token=` growing quadratically; issue #19 asked for 100 MB/s; bench/sessions measures both): a
hyperscan prefilter (`prefilter.py`) finds, in one pass, where any detector could match; the
detectors' `re` passes then run only there, and a string without candidates is returned as is.
Where the prefilter is unavailable or its candidates are too dense, the full scans run (one `re`
pass per anchor and two for assignments, each linear) and give the same result. Only matches reach
Python, where the per-detector checks (character classes, entropy, placeholders) run in C regexes
or on at most the first 1 KB of a value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from chalicelib.domain.trace import TextEntry, ToolInvocation, ToolResult, TraceEntry, utf8_len
from chalicelib.ingest.redaction.assignments import Verdicts, key_starts, with_assignments
from chalicelib.ingest.redaction.prefilter import NO_CANDIDATES, Candidates, find_candidates, find_candidates_many
from chalicelib.ingest.redaction.tokens import PASSES, Found, scan_pass
from chalicelib.ingest.redaction.values import key_is_secret, marker, shannon_entropy, value_is_secret
from chalicelib.ingest.redaction_version import REDACTION_VERSION

# REDACTION_VERSION lives apart (readers of stored traces load it without the detectors): bump it in
# chalicelib/ingest/redaction_version.py when a detector changes.
__all__ = ["REDACTION_VERSION", "Redactor", "marker", "redact_text", "redact_trace", "redact_value",
           "shannon_entropy"]


# Entries redacted together share one prefilter scan: at most this many, or this many characters.
_CHUNK_ENTRIES = 256
_CHUNK_CHARS = 1 << 20
_UNKNOWN = Candidates({}, [])


def secret_spans(value: str, candidates: Candidates | None = _UNKNOWN, verdicts: Verdicts | None = None
                 ) -> list[tuple[str, int, int]]:
    """(kind, start, end) of every secret in `value`, sorted and disjoint.

    `candidates` are the prefilter's for `value` (found here when not given); None runs the full
    scans, which the prefilter must agree with (the tests compare both). `verdicts` remembers the
    verdicts on assignments across strings (keys and values repeat in a trace).
    """
    if candidates is _UNKNOWN:
        candidates = find_candidates(value)
    found: list[Found] = []
    if candidates is None:
        for scan in PASSES:
            scan_pass(scan, value, found)
        starts = key_starts(value) if ("=" in value or ":" in value) else []
    elif candidates is NO_CANDIDATES:
        return []
    else:
        for index, positions in candidates.starts.items():
            scan_pass(PASSES[index], value, found, positions)
        starts = key_starts(value, candidates.operators) if candidates.operators else []
    spans: list[tuple[str, int, int]] = []
    if found:
        found.sort()
        end = 0
        for start, _, stop, kind in found:
            if start >= end:  # overlapping detections: the earlier (then the more specific) wins
                spans.append((kind, start, stop))
                end = stop
    return with_assignments(value, spans, starts, verdicts)


def _strings_of(value: Any, into: list[str]) -> None:
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings_of(item, into)
    elif isinstance(value, list):
        for item in value:
            _strings_of(item, into)


def _entry_strings(entry: TraceEntry, into: list[str]) -> int:
    """Append the strings `_Redactor.entry` redacts, in the order it does; returns their length."""
    if isinstance(entry, TextEntry):
        into.append(entry.text)
        return len(entry.text)
    if isinstance(entry, ToolResult):
        into.append(entry.output)
        return len(entry.output)
    if isinstance(entry, ToolInvocation):
        before = len(into)
        _strings_of(entry.arguments, into)
        return sum(len(text) for text in into[before:])
    return 0


class _Redactor:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.verdicts = Verdicts()
        # Prefilter results for the strings of the chunk being redacted, by string identity.
        self._known: dict[int, Candidates | None] = {}

    # -- strings ------------------------------------------------------------------------------

    def text(self, value: str) -> str:
        candidates = self._known.get(id(value), _UNKNOWN)
        if candidates is NO_CANDIDATES:
            return value
        spans = secret_spans(value, candidates, self.verdicts)
        if not spans:
            return value
        pieces: list[str] = []
        done = 0
        for kind, start, end in spans:
            self.counts[kind] += 1
            pieces.append(value[done:start])
            pieces.append(marker(kind))
            done = end
        pieces.append(value[done:])
        return "".join(pieces)

    # -- structures ---------------------------------------------------------------------------

    def value(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, str):
            redacted = self.text(value)
            if key is None or redacted != value:
                return redacted  # a recognised token keeps its specific kind
            kind = key_is_secret(key)
            if kind is not None and "\n" not in value.strip() and value_is_secret(kind, value):
                self.counts[kind] += 1
                return marker(kind)
            return value
        if isinstance(value, dict):
            return {name: self.value(item, name if isinstance(name, str) else None) for name, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        return value

    def entry(self, entry: TraceEntry) -> TraceEntry:
        if isinstance(entry, TextEntry):
            text = self.text(entry.text)
            return entry if text is entry.text else entry.model_copy(update={"text": text})
        if isinstance(entry, ToolInvocation):
            arguments = self.value(entry.arguments)
            return entry if arguments == entry.arguments else entry.model_copy(update={"arguments": arguments})
        if isinstance(entry, ToolResult):
            output = self.text(entry.output)
            if output is entry.output:
                return entry
            update: dict[str, Any] = {"output": output}
            if not entry.truncated:
                # output_bytes describes the output the trace holds, which is now the redacted one.
                update["output_bytes"] = utf8_len(output)
            return entry.model_copy(update=update)
        return entry

    def entries(self, entries: Iterable[TraceEntry]) -> Iterator[TraceEntry]:
        """`entry` of each, in order; the strings of up to `_CHUNK_ENTRIES` entries at a time go
        through one prefilter scan."""
        chunk: list[TraceEntry] = []
        strings: list[str] = []
        chars = 0
        for entry in entries:
            chunk.append(entry)
            chars += _entry_strings(entry, strings)
            if len(chunk) >= _CHUNK_ENTRIES or chars >= _CHUNK_CHARS:
                yield from self._chunk(chunk, strings)
                chunk, strings, chars = [], [], 0
        if chunk:
            yield from self._chunk(chunk, strings)

    def _chunk(self, chunk: list[TraceEntry], strings: list[str]) -> list[TraceEntry]:
        # The strings are alive (held by the entries) while `_known` is used, so ids are unique.
        self._known = dict(zip(map(id, strings), find_candidates_many(strings), strict=True))
        try:
            return [self.entry(entry) for entry in chunk]
        finally:
            self._known = {}


def redact_text(value: str) -> tuple[str, dict[str, int]]:
    """Redact one string; returns it and the number of redactions per kind."""
    redactor = _Redactor()
    return redactor.text(value), dict(redactor.counts)


def redact_value(value: Any) -> tuple[Any, dict[str, int]]:
    """Redact every string in a JSON-like value (dict keys are kept, and used as context)."""
    redactor = _Redactor()
    return redactor.value(value), dict(redactor.counts)


def redact_trace(entries: Iterable[TraceEntry]) -> tuple[list[TraceEntry], dict[str, int]]:
    """Redact every entry; returns the new trace (same order, same call ids) and counts by kind."""
    redactor = _Redactor()
    out = list(redactor.entries(entries))
    return out, dict(sorted(redactor.counts.items()))


class Redactor:
    """Streaming use: `redact(entry)` one entry at a time; `counts` accumulates over all of them."""

    def __init__(self) -> None:
        self._redactor = _Redactor()

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(self._redactor.counts.items()))

    def redact(self, entry: TraceEntry) -> TraceEntry:
        return self._redactor.entry(entry)

    def redact_all(self, entries: Iterable[TraceEntry]) -> Iterator[TraceEntry]:
        """`redact` of each entry, lazily, reading a few entries ahead (up to 256, or 1 MB of
        text) to prefilter their strings in one scan: faster than `redact` one at a time."""
        return self._redactor.entries(entries)
