"""The redaction prefilter: one hyperscan pass over a string finds where a detector could match.

The detectors' `re` passes cost about 1 ns a character each (one per anchor, two for assignments),
so ten of them over every string bound redaction near 50 MB/s. Hyperscan (Vectorscan on arm64) runs
all the gates (`tokens.Gate`, `assignments.KEY_OPERATOR`) at once at a few GB/s, and reports
positions: a pass then tries `re` only at its detectors' candidate starts, and the assignment scan
reads only the lines where a key tail stands before an operator. A string without candidates is
not touched by `re` at all; ordinary transcripts are mostly such strings.

Hyperscan reads bytes: the text goes in with every non-ASCII character folded to `?`, so byte
offsets are character offsets (the gates account for `?`). Each gate match costs a Python callback,
so a string where the gates match densely (more than one per `_DENSITY` characters: hostile input,
or a base64 blob full of `A`s) is handed back to the full scan instead, which has no per-candidate
cost; its speed on such input is what bench/sessions' hostile table measures.

Without the `hyperscan` package (a platform without its wheel) `find_candidates` answers None and
every string gets the full scan: same redactions, about half the speed.
"""

from __future__ import annotations

import functools
import threading
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from chalicelib.ingest.redaction.assignments import KEY_OPERATOR
from chalicelib.ingest.redaction.tokens import PASSES

# Past one gate match per this many characters (plus a floor for short strings), the full scan is
# cheaper than a callback and a `re` attempt per candidate.
_DENSITY = 128
_FLOOR = 64
_ASSIGNMENT = -1


@dataclass(frozen=True)
class Candidates:
    """Where `re` must look in one string: candidate starts by pass index, and the positions of
    operators after a secret-looking key (each pass's starts are unsorted and may repeat)."""

    starts: dict[int, list[int]]
    operators: list[int]


# The answer for a text where no gate matched (compared by identity).
NO_CANDIDATES = Candidates({}, [])


@dataclass(frozen=True)
class _GateUse:
    """What a gate match means: a candidate start `width` characters before its end in pass `index`,
    every `line_literal` of its line before its end (`tokens.Gate`), or an assignment operator."""

    index: int
    width: int
    line_literal: str | None


_GATES: tuple[tuple[str, bool, _GateUse], ...] = (
    *((gate.pattern, gate.caseless, _GateUse(index, gate.width, gate.line_literal))
      for index, scan in enumerate(PASSES) for gate in scan.gates),
    (KEY_OPERATOR, True, _GateUse(_ASSIGNMENT, 1, None)),
)
# By gate id, as plain tuples (read once per gate match).
_USES = tuple((use.index, use.width, use.line_literal) for _, _, use in _GATES)


@functools.cache
def _hyperscan() -> Any:
    """The `hyperscan` module, imported on first use (not on the cold path of routes that never
    redact), or None where it is not installed or not loadable on this machine."""
    try:
        import hyperscan
    except ImportError:  # pragma: no cover - exercised where the wheel is missing
        return None
    return hyperscan


@functools.cache
def _database() -> Any:
    """The compiled gates (about 0.06 s, once per process, on first use), or None without hyperscan."""
    hyperscan = _hyperscan()
    if hyperscan is None:
        return None
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=[pattern.encode() for pattern, _, _ in _GATES],
        ids=list(range(len(_GATES))),
        flags=[hyperscan.HS_FLAG_CASELESS if caseless else 0 for _, caseless, _ in _GATES],
    )
    return database


_local = threading.local()


def _scratch(database: Any) -> Any:
    # A scan releases the GIL and its scratch space must not be shared: one per thread.
    scratch = getattr(_local, "scratch", None)
    if scratch is None:
        scratch = _local.scratch = _hyperscan().Scratch(database)
    return scratch


def available() -> bool:
    return _database() is not None


class _Hits(list[int]):
    """Gate matches of one scan as `end << 8 | gate id`, stopping the scan past `limit`."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit


def _on_match(gate: int, _start: int, end: int, _flags: int, hits: _Hits) -> bool:
    hits.append(end << 8 | gate)
    return len(hits) > hits.limit


def _scan(joined: str, limit: int) -> _Hits | None:
    """The gate matches in `joined` (which starts with a line break), or None past `limit`."""
    database = _database()
    hits = _Hits(limit)
    try:
        database.scan(joined.encode("ascii", "replace"), match_event_handler=_on_match, context=hits,
                      scratch=_scratch(database))
    except _hyperscan().ScanTerminated:
        return None
    return hits


def _add_line_starts(text: str, lines: list[tuple[int, str, int]], candidates: Candidates) -> int:
    """For line gates (end, literal, pass index): every `literal` on the gate's line before its end is a
    candidate start; returns how many were added."""
    lines.sort()
    count = 0
    read_to = 0  # line gates on one line share its literals: each character is looked at once
    for end, literal, index in lines:
        position = max(text.rfind("\n", 0, end) + 1, read_to)
        found = candidates.starts.setdefault(index, [])
        while (position := text.find(literal, position, end)) >= 0:
            found.append(position)
            position += 1
            count += 1
        read_to = max(read_to, end)
    return count


def _limit(text: str) -> int:
    return len(text) // _DENSITY + _FLOOR


def find_candidates(text: str) -> Candidates | None:
    """The candidates in `text`, or None when the full scan must run (no hyperscan, or gates
    matching too densely for candidates to pay)."""
    if _database() is None:
        return None
    return find_candidates_many([text])[0]


def find_candidates_many(texts: list[str]) -> list[Candidates | None]:
    """`find_candidates` of each text, from one scan of them all (a scan has a fixed cost of about a
    microsecond, more than the gates spend on a short string).

    The texts are scanned joined by line breaks, after one: a line break is as good a boundary as the
    start of a text to every gate. A gate match belongs to the text holding its candidate start (the
    anchor, never a line break) or, for the other gates, its last character.
    """
    if _database() is None:
        return [None] * len(texts)
    offsets: list[int] = []
    limits: list[int] = []
    offset = 1
    for text in texts:
        offsets.append(offset)
        limits.append(_limit(text))
        offset += len(text) + 1
    hits = _scan("\n" + "\n".join(texts), sum(limits))
    if hits is None:
        return [None] * len(texts) if len(texts) == 1 else [find_candidates(text) for text in texts]
    found: list[Candidates | None] = [NO_CANDIDATES] * len(texts)
    if not hits:
        return found
    counts = [0] * len(texts)
    lines: dict[int, list[tuple[int, str, int]]] = {}
    single = len(texts) == 1
    for hit in hits:
        index, width, literal = _USES[hit & 0xFF]
        end = hit >> 8
        text_index = 0 if single else bisect_right(offsets, end - (width or 1)) - 1
        end -= offsets[text_index]
        candidates = found[text_index]
        if candidates is NO_CANDIDATES:
            candidates = found[text_index] = Candidates({}, [])
        assert candidates is not None
        counts[text_index] += 1
        if index == _ASSIGNMENT:
            candidates.operators.append(end - 1)
        elif literal is None:
            candidates.starts.setdefault(index, []).append(end - width)
        else:
            lines.setdefault(text_index, []).append((end, literal, index))
    for text_index, line_hits in lines.items():
        candidates = found[text_index]
        assert candidates is not None
        counts[text_index] += _add_line_starts(texts[text_index], line_hits, candidates)
    for text_index, count in enumerate(counts):
        if count > limits[text_index]:
            found[text_index] = None  # too dense: that text gets the full scan
    return found
