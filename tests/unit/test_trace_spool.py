"""The worker's spooled trace reads back exactly what the dict-held trace was, at every threshold."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from chalicelib.ingest.compaction import compact_wire
from chalicelib.judges.evidence import number_entries
from chalicelib.services.context_fit import (
    ContextFitter,
    TokenMeter,
    _entry_chars,
    _utf8,
    context_json,
    elide_middle,
)
from chalicelib.services.trace_spool import BLOCK_BYTES, SpooledTrace, TraceSpool


def wire_session(n: int = 3_000) -> list[dict[str, Any]]:
    """A session in wire form with what compaction and elision care about: outputs on both sides of each
    threshold, one already truncated at upload, non-ASCII and a lone surrogate, a plan in the middle."""
    entries: list[dict[str, Any]] = [
        {"kind": "user_message", "timestamp": "2025-06-01T10:00:00.000Z", "text": "Fix the rounding — ünïcode"},
        {"kind": "assistant_thinking", "timestamp": "2025-06-01T10:00:01.000Z", "text": "let me look \ud800 here"},
    ]
    for i in range(2, n):
        ts = f"2025-06-01T10:{i // 60 % 60:02d}:{i % 60:02d}.000Z"
        if i == n // 2:
            entries.append({"kind": "plan", "timestamp": ts, "text": "1. reproduce 2. fix 3. test"})
        elif i % 2 == 0:
            entries.append({"kind": "tool_invocation", "timestamp": ts, "tool": "Bash" if i % 4 else "Read",
                            "call_id": f"c{i}", "arguments": {"command": f"pytest -k t{i}"}})
        elif i == 7:
            entries.append({"kind": "tool_result", "timestamp": ts, "tool": "Bash", "call_id": f"c{i - 1}",
                            "output": "<truncated: 90000 bytes, kind=Bash>", "is_error": False, "truncated": True,
                            "output_bytes": 90_000})
        else:
            size = (i * 37) % 2_600
            entries.append({"kind": "tool_result", "timestamp": ts, "tool": "Bash" if i % 4 == 3 else "Read",
                            "call_id": f"c{i - 1}", "output": ("é" if i % 10 == 1 else "o") * size,
                            "is_error": i % 9 == 0})
    entries.append({"kind": "assistant_message", "timestamp": "2025-06-01T12:00:00.000Z", "text": "done"})
    return entries


@pytest.fixture(scope="module")
def session() -> list[dict[str, Any]]:
    return wire_session()


def spooled(entries: list[dict[str, Any]], threshold: int = 2000) -> SpooledTrace:
    spool = TraceSpool(threshold)
    spool.add_all(iter(entries))
    return SpooledTrace(spool)


@pytest.mark.parametrize("threshold", [2000, 1000, 200, 41, 0])
def test_each_threshold_reads_back_what_compacting_the_dicts_gives(session: list[dict[str, Any]],
                                                                   threshold: int) -> None:
    trace = spooled(session).at_threshold(threshold)
    held, held_stats = compact_wire(compact_wire(session, 2000)[0], threshold)

    assert list(trace) == held
    assert trace.stats() == held_stats
    assert len(trace) == len(held) and trace[5] == held[5] and trace[-1] == held[-1]
    assert trace[100:140] == held[100:140] and trace[3:40:7] == held[3:40:7]
    assert list(trace.sizes()) == [_entry_chars(e) for e in held]
    assert [trace.kind(i) for i in range(len(trace))] == [e["kind"] for e in held]
    assert trace.utf8_total(10, 900) == sum(_utf8(e) for e in held[10:900])


def test_numbered_entries_carry_their_position_and_sizes_count_it(session: list[dict[str, Any]]) -> None:
    doc = {"trace": spooled(session)}
    number_entries(doc)
    lower = doc["trace"].at_threshold(300)  # a reload shares the spool, numbering included
    held = number_entries({"trace": compact_wire(compact_wire(session, 2000)[0], 300)[0]})["trace"]

    assert list(lower) == held and held[1234]["pos"] == 1234
    assert list(lower.sizes()) == [_entry_chars(e) for e in held]


def test_the_spool_holds_a_fraction_of_the_trace_in_many_blocks(session: list[dict[str, Any]]) -> None:
    trace = spooled(session)
    as_json = sum(_utf8(e) for e in trace)
    assert as_json > 4 * BLOCK_BYTES  # several blocks: reads cross their edges (checked above)
    assert trace.spool.memory_bytes() < as_json / 3


def test_concurrent_readers_each_get_their_entries(session: list[dict[str, Any]]) -> None:
    trace = spooled(session)
    expected = compact_wire(session, 2000)[0]
    mismatches: list[int] = []

    def read(offset: int) -> None:
        for i in range(offset, len(trace), 97):
            if trace[i] != expected[i]:
                mismatches.append(i)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


@pytest.mark.parametrize("divisor", [3, 20, 200])
def test_eliding_the_spooled_trace_equals_eliding_the_dicts(session: list[dict[str, Any]], divisor: int) -> None:
    trace = spooled(session)
    held = compact_wire(session, 2000)[0]
    budget = sum(_entry_chars(e) for e in held) // divisor

    from_spool = elide_middle(trace, budget, trace.sizes())
    from_dicts = elide_middle(held, budget)

    assert from_spool == from_dicts and from_spool.elided_entries > 0


def test_the_fit_of_a_spooled_document_equals_the_fit_of_the_dicts(session: list[dict[str, Any]]) -> None:
    def render(context: str) -> str:
        return "## Role\nfixed prompt text\n" + context

    async def count(shared: str, prompt: str) -> int:
        return (len(shared) + len(prompt)) // 3

    def fit(doc: dict[str, Any], reload: Any) -> Any:
        fitter = ContextFitter(doc=doc, reload=reload, requested_threshold=2000, render=render,
                               longest_prompt="question " * 50, meter=TokenMeter(count, window=60_000),
                               output_tokens=500, model="m")
        return asyncio.run(fitter.fit(60_000))

    base = {"session_id": "s", "session_chain": ["s"], "chain_incomplete": False}
    trace = spooled(session)
    spool_doc = number_entries({**base, "trace": trace, "compaction": trace.stats()})

    def spool_reload(lower: int) -> dict[str, Any]:
        smaller = trace.at_threshold(lower)
        return {**spool_doc, "trace": smaller, "compaction": smaller.stats()}

    held, stats = compact_wire(session, 2000)
    dict_doc = number_entries({**base, "trace": held, "compaction": stats})

    def dict_reload(lower: int) -> dict[str, Any]:
        smaller, lower_stats = compact_wire(held, lower)
        return {**dict_doc, "trace": smaller, "compaction": lower_stats}

    from_spool, from_dicts = fit(spool_doc, spool_reload), fit(dict_doc, dict_reload)

    assert from_spool.report == from_dicts.report and from_spool.report["elided_entries"] > 0
    assert from_spool.report["threshold_used"] < 2000
    assert from_spool.doc == from_dicts.doc and isinstance(from_spool.doc["trace"], list)
    assert from_spool.shared_context == from_dicts.shared_context == render(context_json(from_dicts.doc))
