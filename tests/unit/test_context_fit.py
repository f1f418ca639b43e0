"""Context fit: eliding the oldest middle of a trace, lowering the threshold, and the report the run stores."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chalicelib.domain.context_limits import ContextTooSmall, StatedLimit
from chalicelib.services.context_fit import (
    ELIDED_KIND,
    ContextFitter,
    ContextTooLarge,
    FittedContext,
    PromptOverWindow,
    TokenMeter,
    context_json,
    elide_middle,
    fit_context,
    prompt_limit,
    without_waiting,
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


def vendor_tokens(shared: str, prompt: str) -> int:
    return (len(shared) + len(prompt)) // 3  # the vendor's tokenizer: denser than chars/4


class Counter:
    def __init__(self, *, exact: bool = True, window: int | None = None, states_limit: bool = False,
                 chars_per_token: int = 3) -> None:
        self.exact = exact
        self.chars_per_token = chars_per_token
        self.window = window
        self.states_limit = states_limit
        self.calls = 0
        self.refused = 0

    async def __call__(self, shared: str, prompt: str) -> int | None:
        self.calls += 1
        tokens = (len(shared) + len(prompt)) // self.chars_per_token
        if self.window is not None and tokens > self.window:
            self.refused += 1
            stated = StatedLimit(self.window, tokens) if self.states_limit else None
            raise PromptOverWindow("prompt is too long", stated)
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


def test_a_fit_whose_counter_never_waits_runs_without_an_event_loop() -> None:
    # The API's spend estimate (estimate mode, no count API) prices a run this way: same fit as asyncio.run.
    trace = session(600, size=150)

    def coroutine() -> Any:
        return fit_context(doc=recompact(trace)(2000), reload=recompact(trace), requested_threshold=2000,
                           render=render, longest_prompt="question " * 50,
                           meter=TokenMeter(Counter(exact=False), window=9_000), window=9_000, output_tokens=500,
                           model="m")

    looped, direct = asyncio.run(coroutine()), without_waiting(coroutine())
    assert direct.report["elided_entries"] > 0
    assert (direct.shared_context, direct.report) == (looped.shared_context, looped.report)


def test_a_fit_that_waits_is_refused_without_an_event_loop() -> None:
    async def waits(shared: str, prompt: str) -> int | None:
        await asyncio.sleep(0)
        return None

    with pytest.raises(RuntimeError, match="event loop"):
        without_waiting(fit_context(doc=recompact(session(20))(2000), reload=recompact(session(20)),
                                    requested_threshold=2000, render=render, longest_prompt="q",
                                    meter=TokenMeter(waits, window=200_000), window=200_000, output_tokens=500,
                                    model="m"))


def fitter(trace: list[dict[str, Any]], counter: Counter, threshold: int = 2000) -> ContextFitter:
    return ContextFitter(doc=recompact(trace)(threshold), reload=recompact(trace), requested_threshold=threshold,
                         render=render, longest_prompt="question " * 50, meter=TokenMeter(counter, window=200_000),
                         output_tokens=500, model="m")


def refused(fitter: ContextFitter, fitted: FittedContext, limit: int, *, with_count: bool = True) -> FittedContext:
    """The vendor refuses `fitted` and states `limit` (and, like Anthropic and OpenAI, what it counted)."""
    counted = vendor_tokens(fitted.shared_context, "question " * 50)
    chars = len(fitted.shared_context) + len("question " * 50)
    stated = StatedLimit(limit, counted if with_count else None)
    return asyncio.run(fitter.refit(fitted, stated, refused_chars=chars))


def test_without_a_stated_limit_a_refusal_elides_a_quarter_more() -> None:
    fit_ = fitter(session(300), Counter())
    fitted = asyncio.run(fit_.fit(200_000))
    smaller = asyncio.run(fit_.refit(fitted, None, refused_chars=len(fitted.shared_context)))
    assert len(smaller.shared_context) < len(fitted.shared_context)
    assert smaller.report["vendor_overflow_retries"] == 1
    assert smaller.report["refits"][0]["reason"] == "vendor_overflow_without_limit"
    assert smaller.report["elided_entries"] > 0 and smaller.report["adjusted"] is True


@pytest.mark.parametrize("exact", [True, False])
def test_a_stated_limit_is_met_by_one_refit_with_the_same_fit(exact: bool) -> None:
    """Half the prompt's size as the stated limit: the refit targets it (minus the output budget and a
    margin) and the refit prompt fits by the vendor's own count, with or without a count API."""
    fit_ = fitter(session(600, size=150), Counter(exact=exact))
    fitted = asyncio.run(fit_.fit(200_000))
    counted = vendor_tokens(fitted.shared_context, "question " * 50)
    limit = counted // 2
    refit = refused(fit_, fitted, limit)
    report = refit.report
    assert vendor_tokens(refit.shared_context, "question " * 50) <= prompt_limit(limit, 500)
    assert report["context_window"] == limit and report["assumed_context_window"] == 200_000
    assert report["window_source"] == "vendor"
    assert report["vendor_limit"] == {"limit_tokens": limit, "stated_prompt_tokens": counted, "source": "generate"}
    (step,) = report["refits"]
    assert step["reason"] == "vendor_stated_limit" and step["limit_tokens"] == limit
    assert step["elided_entries"] == report["elided_entries"] > 0
    assert f"The vendor stated a {limit}-token context limit" in report["note"]


def test_a_refit_halves_the_threshold_before_it_elides() -> None:
    trace = session(60, size=1800)  # big tool outputs, under the 2000-byte default threshold
    fit_ = fitter(trace, Counter())
    fitted = asyncio.run(fit_.fit(200_000))
    refit = refused(fit_, fitted, int(vendor_tokens(fitted.shared_context, "") * 0.7))
    assert refit.report["threshold_used"] < 2000 and refit.report["elided_entries"] == 0
    assert refit.report["thresholds_tried"][0] == 2000


def test_a_stated_limit_below_the_fixed_prompt_fails_at_once() -> None:
    fit_ = fitter(session(300), Counter())
    fitted = asyncio.run(fit_.fit(200_000))
    with pytest.raises(ContextTooSmall) as caught:
        refused(fit_, fitted, 600)
    error = caught.value
    assert error.code == "context_too_small" and error.status == 422
    assert error.details is not None and error.details["stated_limit_tokens"] == 600
    assert error.details["fixed_prompt_tokens"] + error.details["output_tokens"] > 600
    assert "600-token limit" in error.message


def test_when_nothing_more_can_be_removed_the_refit_says_so() -> None:
    fit_ = fitter(session(12), Counter())
    fitted = asyncio.run(fit_.fit(200_000))
    with pytest.raises(ContextTooSmall):
        for _ in range(40):
            fitted = asyncio.run(fit_.refit(fitted, None, refused_chars=len(fitted.shared_context)))


def test_a_count_api_refusal_that_states_a_limit_moves_the_target_before_dispatch() -> None:
    counter = Counter(window=6_000, states_limit=True)
    fitted = asyncio.run(fitter(session(600, size=150), counter).fit(200_000))
    report = fitted.report
    assert report["context_window"] == 6_000 and report["window_source"] == "vendor"
    assert report["vendor_limit"]["source"] == "count_tokens"
    assert vendor_tokens(fitted.shared_context, "question " * 50) <= prompt_limit(6_000, 500)


@pytest.mark.parametrize("learned", [True, False])
def test_a_run_that_starts_from_a_learned_limit_sends_nothing_over_it_to_the_count_api(learned: bool) -> None:
    # The vendor stated 20,000 tokens on an earlier run. The session is ~1.6x that at 4 chars/token (the
    # vendor's tokenizer here, like the dev fake's): asking the count API about it would only get another
    # "prompt is too long". (A denser tokenizer can still refuse the first elided candidate once: the meter
    # learns its tokens per character from that refusal, not from the earlier run.)
    trace = session(600, size=150)
    counter = Counter(window=20_000, states_limit=True, chars_per_token=4)
    fitter = ContextFitter(doc=recompact(trace)(2000), reload=recompact(trace), requested_threshold=2000,
                           render=render, longest_prompt="question " * 50,
                           meter=TokenMeter(counter, window=20_000, known_limit=20_000 if learned else None),
                           output_tokens=500, model="m", window_source="learned")
    fitted = asyncio.run(fitter.fit(20_000))
    assert counter.refused == (0 if learned else 1)
    assert counter.calls >= 1 and fitted.report["token_count_method"] == "count_tokens"  # the fit itself is counted
    assert (len(fitted.shared_context) + len("question " * 50)) // 4 <= prompt_limit(20_000, 500)
    assert fitted.report["elided_entries"] > 0


def test_a_document_far_over_the_window_is_measured_from_its_entries_not_rendered() -> None:
    # Rendering a large session's whole document at each halving step was the worker's biggest allocation
    # (bench/memory); the meter answers those without the vendor anyway. Same fit as rendering every step.
    trace = session(2_000, size=1_900)
    rendered: list[int] = []

    def recording(context: str) -> str:
        rendered.append(len(context))
        return render(context)

    def fit_with(render_fn: Any, measure_from_sizes: bool) -> FittedContext:
        fitter = ContextFitter(doc=recompact(trace)(2000), reload=recompact(trace), requested_threshold=2000,
                               render=render_fn, longest_prompt="question " * 50,
                               meter=TokenMeter(Counter(exact=False), window=9_000), output_tokens=500, model="m")
        if not measure_from_sizes:
            async def render_always(doc: Any, prompt: str) -> tuple[str | None, int, Any]:
                shared = fitter._render(context_json(doc))
                return shared, await fitter.meter.measure(shared, prompt), doc

            fitter._measure_doc = render_always  # type: ignore[method-assign]
        return asyncio.run(fitter.fit(9_000))

    fitted = fit_with(recording, measure_from_sizes=True)
    whole = len(context_json(recompact(trace)(2000)))
    assert rendered and max(rendered) < whole // 20  # only the trace-less skeleton and the elided candidates
    reference = fit_with(render, measure_from_sizes=False)
    assert fitted.doc == reference.doc and fitted.shared_context == reference.shared_context
    assert fitted.report == reference.report
