"""Trace positions as judges see and cite them: numbering the eval context's entries and checking the
`evidence_entries` a verdict cites against the trace.

A position is an entry's 0-based index in the session's eval-context trace (the whole continuation chain
when the run judges one, oldest first). Every entry a judge sees carries it as `pos`, so a judge cites what
it read instead of counting array elements, and positions survive the context fit: elided stretches are
replaced by marker entries, the kept entries keep their `pos`. The trace viewer, the tools
(`search_session` answers with positions) and the console's finding links all use the same numbers.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from chalicelib.domain.evaluation import MAX_EVIDENCE_ENTRIES

POSITION_KEY = "pos"


@runtime_checkable
class NumberedOnRead(Protocol):
    """A trace that gives each entry its `pos` as it is read (the worker's spooled trace)."""

    def number_entries(self) -> None: ...


def number_entries(doc: dict[str, Any]) -> dict[str, Any]:
    """Give every entry of `doc["trace"]` its `pos` (first key), in place, and return `doc`.

    The trace list itself is kept (each entry is replaced by a numbered copy that shares its values), so
    whatever holds the list sees the positions too, and a large trace is never held twice. A trace that
    numbers its entries as they are read (the worker's, whose `reload(threshold)` shares it) is told to.
    """
    trace = doc.get("trace")
    if isinstance(trace, NumberedOnRead):
        trace.number_entries()
    elif isinstance(trace, list):
        for i, entry in enumerate(trace):
            trace[i] = {POSITION_KEY: i, **{k: v for k, v in entry.items() if k != POSITION_KEY}}
    return doc


def check_evidence_entries(value: Any, trace_entries: int | None) -> tuple[list[int], list[str]]:
    """The valid positions of a judge's `evidence_entries` (sorted, unique, at most MAX_EVIDENCE_ENTRIES)
    and what was dropped and why. Positions are checked against `trace_entries` when it is known.

    Evidence links are supplementary: a bad list never fails the verdict, the bad items are dropped.
    """
    if value is None:
        return [], []
    if not isinstance(value, list):
        return [], ["evidence_entries is not an array; dropped"]
    violations: list[str] = []
    valid: set[int] = set()
    rejected: list[str] = []
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or item < 0:
            rejected.append(repr(item)[:20])
        elif trace_entries is not None and item >= trace_entries:
            rejected.append(str(item))
        else:
            valid.add(item)
    if rejected:
        bound = f" (the trace has {trace_entries} entries: 0..{trace_entries - 1})" if trace_entries else ""
        violations.append(f"evidence_entries {', '.join(rejected[:5])} are not trace positions{bound}; dropped")
    ordered = sorted(valid)
    if len(ordered) > MAX_EVIDENCE_ENTRIES:
        violations.append(f"{len(ordered)} evidence_entries cited; the first {MAX_EVIDENCE_ENTRIES} kept")
        ordered = ordered[:MAX_EVIDENCE_ENTRIES]
    return ordered, violations
