"""The worker's compacted trace held compressed: entries as compact JSON in zlib blocks, decoded when read.

Held as dicts, the compacted trace of a large session was what the worker's memory grew with (bench/memory:
0.30 bytes per stored byte, and each lower threshold the context fit tried built another copy of every
shortened entry), although the fit then elides nearly all of it. The spool keeps each entry once, as the
JSON a prompt embeds, compressed in blocks of ~64 KiB, and beside it what the fit needs without reading an
entry: its size in the prompt (characters and UTF-8 bytes), its kind, and for each tool result what
truncating its output would change. A lower threshold is a view over the same spool (`at_threshold`), so
measuring, lowering the threshold and eliding decode no entry; only the entries a prompt keeps, and the
judges' tools' passes, are decoded, one block at a time.
"""

from __future__ import annotations

import json
import sys
import threading
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from chalicelib.domain.trace import entry_from_json_line, utf8_len
from chalicelib.ingest.compaction import CompactionStats, CompactionTally, truncation_marker, validate_threshold
from chalicelib.judges.evidence import POSITION_KEY

# Raw bytes per compressed block: big enough for zlib to find the repeated keys, small enough that reading one
# entry inflates little.
BLOCK_BYTES = 64 * 1024
# Fastest level: the spool is written once per run and JSON compresses well at any level.
_ZLIB_LEVEL = 1


def encode_entry(entry: dict[str, Any]) -> str:
    """An entry as the prompt embeds it (`context_fit.context_json`)."""
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def _truncated(entry: dict[str, Any], size: int) -> dict[str, Any]:
    # The same change as `compact_wire`: the output becomes its marker, the entry says it was cut and how big.
    return {**entry, "output": truncation_marker(size, entry["tool"]), "truncated": True, "output_bytes": size}


def _pos_chars(pos: int) -> int:
    # `"pos":N,` ahead of the entry's other keys (`number_entries` puts it first).
    return len(POSITION_KEY) + 4 + len(str(pos))


class TraceSpool:
    """Entries compacted at `threshold` as they are added (`add`, then `close`), read back by position.

    Thread-safe for reading: the judges' tools read from worker threads while the event loop fits.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = validate_threshold(threshold)
        self._tally = CompactionTally(self.threshold)
        self._blocks: list[bytes] = []
        self._block_first = array("q")  # position of each block's first entry
        self._pending = bytearray()
        self._offsets = array("I")  # each entry's start within its block
        self._chars = array("q")  # `_entry_chars` (its JSON + a comma) as spooled, without `pos`
        self._bytes = array("q")  # its JSON's UTF-8 length, without `pos`
        self._kinds = bytearray()
        self._kind_names: list[str] = []
        self._kind_codes: dict[str, int] = {}
        # Tool results in trace order: their position, the output's size (-1: a marker already), the bytes a
        # truncation removes, the entry's chars and bytes once truncated, and the tool.
        self._results = array("q")
        self._result_sizes = array("q")
        self._result_removed = array("q")
        self._result_chars = array("q")
        self._result_bytes = array("q")
        self._result_tools: list[str] = []
        self.numbered = False
        self._lock = threading.Lock()
        self._cached_block = -1
        self._cached: bytes = b""

    def __len__(self) -> int:
        return len(self._chars)

    # -- writing --------------------------------------------------------------------------------
    def add_all(self, entries: Iterable[dict[str, Any]]) -> None:
        for entry in entries:
            self.add(entry)
        self.close()

    def add(self, entry: dict[str, Any]) -> None:
        if POSITION_KEY in entry:  # positions are the spool's to give (`number_entries`)
            entry = {k: v for k, v in entry.items() if k != POSITION_KEY}
        kind = entry.get("kind")
        if kind == "tool_result":
            entry = self._add_result(entry)
        line = encode_entry(entry)
        data = line.encode("utf-8", "surrogatepass")
        if self._pending and len(self._pending) + len(data) > BLOCK_BYTES:
            self._flush()
        if not self._pending:
            self._block_first.append(len(self._chars))
        self._offsets.append(len(self._pending))
        self._pending += data
        self._pending += b"\n"  # compact JSON escapes every newline in its strings
        self._chars.append(len(line) + 1)
        self._bytes.append(len(data))
        name = str(kind)
        code = self._kind_codes.get(name)
        if code is None:
            code = self._kind_codes[name] = len(self._kind_names)
            self._kind_names.append(sys.intern(name))
        self._kinds.append(code)

    def _add_result(self, entry: dict[str, Any]) -> dict[str, Any]:
        tally = self._tally
        tally.total += 1
        tool = sys.intern(str(entry["tool"]))
        output = entry.get("output", "")
        self._results.append(len(self._chars))
        self._result_tools.append(tool)
        if entry.get("truncated"):
            removed = int(entry.get("output_bytes", 0)) - utf8_len(output)
            self._record_result(-1, removed, 0, 0)
            tally.truncation(tool, removed)
            return entry
        size = utf8_len(output)
        short = _truncated(entry, size)
        removed = size - utf8_len(short["output"])
        short_line = encode_entry(short)
        self._record_result(size, removed, len(short_line) + 1, utf8_len(short_line))
        if size <= self.threshold:
            return entry
        tally.truncation(tool, removed)
        return short

    def _record_result(self, size: int, removed: int, chars: int, nbytes: int) -> None:
        self._result_sizes.append(size)
        self._result_removed.append(removed)
        self._result_chars.append(chars)
        self._result_bytes.append(nbytes)

    def _flush(self) -> None:
        if self._pending:
            self._blocks.append(zlib.compress(bytes(self._pending), _ZLIB_LEVEL))
            self._pending = bytearray()

    def close(self) -> None:
        """No more entries: the last block is compressed."""
        self._flush()

    # -- reading --------------------------------------------------------------------------------
    def stats(self, threshold: int) -> CompactionStats:
        """What compacting the trace at `threshold` (at most the spool's) did: `compact_wire`'s stats."""
        threshold = min(validate_threshold(threshold), self.threshold)
        if threshold == self.threshold:
            return self._tally.stats(len(self))
        tally = CompactionTally(threshold)
        for size, removed, tool in zip(self._result_sizes, self._result_removed, self._result_tools, strict=True):
            tally.total += 1
            if size < 0 or size > threshold:
                tally.truncation(tool, removed)
        return tally.stats(len(self))

    def memory_bytes(self) -> int:
        """Roughly what the spool holds (its blocks and per-entry arrays)."""
        arrays = (self._block_first, self._offsets, self._chars, self._bytes, self._results, self._result_sizes,
                  self._result_removed, self._result_chars, self._result_bytes)
        return (sum(len(b) for b in self._blocks) + len(self._pending) + len(self._kinds)
                + sum(a.itemsize * len(a) for a in arrays) + 8 * len(self._result_tools))

    def kind(self, pos: int) -> str:
        return self._kind_names[self._kinds[pos]]

    def sizes(self, threshold: int, *, utf8: bool = False) -> array[int]:
        """Each entry's `_entry_chars` (or its JSON's UTF-8 length) at `threshold`, with `pos` once numbered."""
        out = array("q", self._bytes if utf8 else self._chars)
        short = self._result_bytes if utf8 else self._result_chars
        for pos, size, smaller in zip(self._results, self._result_sizes, short, strict=True):
            if size > threshold:
                out[pos] = smaller
        if self.numbered:
            for pos in range(len(out)):
                out[pos] += _pos_chars(pos)
        return out

    def entry(self, pos: int, threshold: int) -> dict[str, Any]:
        if not 0 <= pos < len(self):
            raise IndexError(pos)
        block = bisect_right(self._block_first, pos) - 1
        with self._lock:
            raw = self._block(block)
        return self._shaped(pos, raw, threshold)

    def entries(self, threshold: int, start: int = 0) -> Iterator[dict[str, Any]]:
        """The entries from `start` on, inflating each block once."""
        n = len(self)
        pos = max(start, 0)
        while pos < n:
            block = bisect_right(self._block_first, pos) - 1
            with self._lock:
                raw = self._block(block)
            end = self._block_first[block + 1] if block + 1 < len(self._block_first) else n
            for p in range(pos, end):
                yield self._shaped(p, raw, threshold)
            pos = end

    def _block(self, block: int) -> bytes:
        if block != self._cached_block:
            self._cached = zlib.decompress(self._blocks[block])
            self._cached_block = block
        return self._cached

    def _shaped(self, pos: int, raw: bytes, threshold: int) -> dict[str, Any]:
        start = self._offsets[pos]
        entry = entry_from_json_line(raw[start:raw.index(b"\n", start)])
        if entry.get("kind") == "tool_result" and not entry.get("truncated"):
            size = utf8_len(entry.get("output", ""))
            if size > threshold:
                entry = _truncated(entry, size)
        if self.numbered:
            entry = {POSITION_KEY: pos, **entry}
        return entry


class SpooledTrace(Sequence[dict[str, Any]]):
    """A spool's entries at one threshold (at most the spool's), as the eval context's `trace`."""

    def __init__(self, spool: TraceSpool, threshold: int | None = None) -> None:
        self.spool = spool
        self.threshold = spool.threshold if threshold is None else min(threshold, spool.threshold)

    def at_threshold(self, threshold: int) -> SpooledTrace:
        return SpooledTrace(self.spool, validate_threshold(threshold))

    def stats(self) -> CompactionStats:
        return self.spool.stats(self.threshold)

    def number_entries(self) -> None:
        """Every entry read from now on carries its `pos` (first key), as `number_entries` gives a list."""
        self.spool.numbered = True

    def kind(self, pos: int) -> str:
        return self.spool.kind(pos)

    def sizes(self) -> array[int]:
        """Each entry's `_entry_chars`, without reading an entry."""
        return self.spool.sizes(self.threshold)

    def utf8_total(self, start: int, stop: int) -> int:
        """The UTF-8 length of the JSON of entries `start` to `stop` (an elided run's size)."""
        return sum(self.spool.sizes(self.threshold, utf8=True)[start:stop])

    def __len__(self) -> int:
        return len(self.spool)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return [e for _, e in zip(range(start, stop), self.spool.entries(self.threshold, start), strict=False)]
            return [self.spool.entry(i, self.threshold) for i in range(start, stop, step)]
        if index < 0:
            index += len(self)
        return self.spool.entry(index, self.threshold)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.spool.entries(self.threshold)

    def __repr__(self) -> str:
        return f"SpooledTrace({len(self)} entries at threshold {self.threshold})"
