"""Context fit: eliding the oldest middle of a trace, lowering the threshold, and the report the run stores."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chalicelib.services.context_fit import (
    ELIDED_KIND,
    ContextTooLarge,
    PromptOverWindow,
    TokenMeter,
    context_json,
    elide_middle,
    fit_context,
    prompt_limit,
    shrink_context,
)


def entry(kind: str, i: int, size: int = 100) -> dict[str, Any]:
    ts = f"2025-06-01T10:00:{i % 60:02d}.000Z"
    if kind == "tool_invocation":
        return {"kind": kind, "timestamp": ts, "tool": "Bash", "call_id": f"c{i}", "arguments": {"n": i}}
    if kind == "tool_result":
        return {"kind": kind, "timestamp": ts, "tool": "Bash", "call_id": f"c{i}", "output": "o" * size,
                "is_error": False, "truncated": False, "output_bytes": size}
    return {"kind": kind, "timestamp": ts, "text": f"{kind} {i} " + "t" * size}


def session(n: int = 200, size: int = 300) -> list[dict[str, Any]]:
    entries = [entry("user_message", 0, 50), entry("assistant_thinking", 1, 50)]
    for i in range(2, n):
        entries.append(entry("tool_invocation" if i % 2 == 0 else "tool_result", i, size))
        if i == n // 2:
            entries.append(entry("plan", i, 80))
    entries.append(entry("assistant_message", n, 60))
    return entries


def chars(entries: list[dict[str, Any]]) -> int:
    return sum(len(context_json(e)) + 1 for e in entries)


def test_a_trace_that_fits_is_untouched() -> None:
    trace = session(20)
    result = elide_middle(trace, chars(trace))
    assert result.entries == trace
    assert result.elided_entries == result.elided_bytes == 0


def test_elision_keeps_the_opening_the_plan_and_the_latest_entries() -> None:
    trace = session(400)
    budget = chars(trace) // 5
    result = elide_middle(trace, budget)

    assert chars(result.entries) <= budget
    kept = result.entries
    assert kept[0] == trace[0] and kept[1] == trace[1]  # the user's request and the opening thinking
    assert any(e["kind"] == "plan" for e in kept)  # the plan from the middle of the session is pinned
    assert kept[-1] == trace[-1] and kept[-2] == trace[-2]  # the latest entries
    markers = [e for e in kept if e["kind"] == ELIDED_KIND]
    assert 1 <= len(markers) <= 2
    assert sum(m["elided_entries"] for m in markers) == result.elided_entries
    assert result.elided_entries == len(trace) - (len(kept) - len(markers))
    assert "elided" in markers[0]["text"] and str(markers[0]["elided_entries"]) in markers[0]["text"]
    # Order is preserved: the kept entries are a subsequence of the original trace.
    originals = [e for e in kept if e["kind"] != ELIDED_KIND]
    positions = [trace.index(e) for e in originals]
    assert positions == sorted(positions)
    assert result.elided_bytes == sum(len(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode())
                                      for e in trace if e not in originals)


def test_eliding_an_elided_trace_keeps_exact_counts() -> None:
    trace = session(400)
    once = elide_middle(trace, chars(trace) // 3)
    twice = elide_middle(once.entries, chars(once.entries) // 2)
    assert twice.elided_entries > once.elided_entries
    kept = [e for e in twice.entries if e["kind"] != ELIDED_KIND]
    assert twice.elided_entries == len(trace) - len(kept)


def test_a_huge_opening_message_is_cut_rather_than_dropped() -> None:
    trace = [entry("user_message", 0, 50_000), *session(50)[1:]]
    result = elide_middle(trace, 8_000)
    assert result.entries[0]["kind"] == "user_message"
    assert result.entries[0]["text"].startswith("user_message 0")
    assert "more chars removed" in result.entries[0]["text"]
    assert result.shortened_entries >= 1
    assert chars(result.entries) <= 8_000


def render(context: str) -> str:
    return "## Role\nfixed prompt text " * 20 + context


def doc_for(trace: list[dict[str, Any]], threshold: int = 2000) -> dict[str, Any]:
    total = sum(1 for e in trace if e["kind"] == "tool_result")
    truncated = sum(1 for e in trace if e["kind"] == "tool_result" and e["truncated"])
    return {"session_id": "s", "session_chain": ["s"], "trace": trace,
            "compaction": {"threshold_bytes": threshold, "tool_results_total": total,
                           "tool_results_truncated": truncated}}


def recompact(trace: list[dict[str, Any]]) -> Any:
    def reload(threshold: int) -> dict[str, Any]:
        out = []
        for e in trace:
            if e["kind"] == "tool_result" and len(e["output"]) > threshold:
                e = {**e, "output": f"<truncated: {len(e['output'])} bytes, kind=Bash>", "truncated": True}
            out.append(e)
        return doc_for(out, threshold)

    return reload


class Counter:
    def __init__(self, *, exact: bool = True, window: int | None = None) -> None:
        self.exact = exact
        self.window = window
        self.calls = 0

    async def __call__(self, shared: str, prompt: str) -> int | None:
        self.calls += 1
        tokens = (len(shared) + len(prompt)) // 3  # a denser tokenizer than chars/4
        if self.window is not None and tokens > self.window:
            raise PromptOverWindow("prompt is too long")
        return tokens if self.exact else None


def fit(trace: list[dict[str, Any]], *, window: int, counter: Counter, threshold: int = 2000) -> Any:
    return asyncio.run(fit_context(
        doc=recompact(trace)(threshold), reload=recompact(trace), requested_threshold=threshold, render=render,
        longest_prompt="question " * 50, meter=TokenMeter(counter, window=window), window=window,
        output_tokens=500, model="m"))


def test_nothing_changes_when_the_prompt_fits() -> None:
    fitted = fit(session(20), window=200_000, counter=Counter())
    assert fitted.report["threshold_used"] == 2000 and fitted.report["elided_entries"] == 0
    assert fitted.report["adjusted"] is False and fitted.report["note"] is None
    assert fitted.report["token_count_method"] == "count_tokens"


def test_the_threshold_is_halved_before_anything_is_elided() -> None:
    trace = session(60, size=1800)  # big tool outputs, under the 2000-byte default threshold
    fitted = fit(trace, window=14_000, counter=Counter())
    report = fitted.report
    assert report["threshold_used"] < 2000
    assert report["thresholds_tried"][0] == 2000 and report["thresholds_tried"] == sorted(
        report["thresholds_tried"], reverse=True)
    assert report["elided_entries"] == 0
    assert report["estimated_prompt_tokens"] <= prompt_limit(14_000, 500)
    assert "lowered from 2000" in report["note"]


@pytest.mark.parametrize("exact", [True, False])
def test_elision_when_a_lower_threshold_is_not_enough(exact: bool) -> None:
    trace = session(600, size=150)  # many small entries: truncation cannot help
    counter = Counter(exact=exact, window=9_000 if exact else None)
    fitted = fit(trace, window=9_000, counter=counter)
    report = fitted.report
    assert report["elided_entries"] > 0 and report["elided_bytes"] > 0
    assert report["estimated_prompt_tokens"] <= prompt_limit(9_000, 500)
    assert report["token_count_method"] == ("count_tokens" if exact else "estimate")
    assert fitted.doc["compaction"]["elided_entries"] == report["elided_entries"]
    assert fitted.shared_context == render(context_json(fitted.doc))
    assert "elided" in report["note"]


def test_a_fixed_part_larger_than_the_window_is_reported_not_sent() -> None:
    with pytest.raises(ContextTooLarge) as caught:
        fit(session(20), window=800, counter=Counter())
    assert caught.value.code == "context_too_large"


def test_shrinking_after_a_vendor_overflow_elides_more() -> None:
    trace = session(300)
    fitted = fit(trace, window=200_000, counter=Counter())
    smaller = shrink_context(fitted, render=render, model="m")
    assert len(smaller.shared_context) < len(fitted.shared_context)
    assert smaller.report["vendor_overflow_retries"] == 1
    assert smaller.report["elided_entries"] > 0 and smaller.report["adjusted"] is True
