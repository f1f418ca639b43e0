"""Fitting a run's shared judge context into the judge model's context window (no prompt-too-long, ever).

The reference runner sent ~1.1 MB traces to a 200K-token model and got auto-compaction, hallucinated
verdicts or a 400 "Prompt is too long" (kapacitor-evals §8.2/§8.3). Here the prompt is measured
before any judge runs: the vendor's token-count API where it has one (Anthropic), else the
chars/4 estimate with a safety factor (OpenAI). If shared context + the largest question prompt
(+ its repair re-ask) + the output budget does not fit the window, the tool-output threshold is
halved (down to `min_threshold`), and if that is still not enough the oldest middle of the trace
is elided: the opening (the user's request, the plan) and the latest entries are kept, and a
marker entry says how many entries/bytes were removed. What was done is returned as a report that
the run stores in its `context` field.

The window assumed before dispatch can be wrong (a gateway, a regional deployment, a custom model
name): when the vendor refuses the prompt and states its real limit, `ContextFitter.refit` runs the
same fit again against that limit (`refits` in the report says what was removed and why), and
`ContextTooSmall` ends the run when nothing more can be removed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.context_limits import ContextTooSmall, StatedLimit
from chalicelib.domain.errors import DomainError
from chalicelib.domain.judging import CHARS_PER_TOKEN
from chalicelib.services.trace_spool import SpooledTrace

ELIDED_KIND = "elided"
DEFAULT_MIN_THRESHOLD = 200
# Room the marker entries take (two at most: before and after a pinned plan).
_MARKER_RESERVE_CHARS = 700
# Share of the trace budget the opening (request, early plan) may take; the rest goes to the latest entries.
_HEAD_SHARE = 0.25
# Share a plan found later in the trace may take (it is kept even when it sits in the elided middle).
_PLAN_SHARE = 0.15
# An entry cut to fit keeps at least this much of its text; smaller remainders are dropped instead.
_MIN_SHRUNK_CHARS = 200
_ELISION_ATTEMPTS = 6
# Tokens held back besides the output budget: message framing and estimate error.
_RESERVE_RATIO = 0.01
_MIN_RESERVE_TOKENS = 256


class ContextTooLarge(DomainError):
    """Even the elided trace does not fit: the fixed part of the prompt alone exceeds the window."""

    status = 422
    code = "context_too_large"


def context_json(doc: Mapping[str, Any]) -> str:
    """The eval-context object as embedded in the judge prompt (compact, like the API body)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _entry_chars(entry: Mapping[str, Any]) -> int:
    # +1 for the separating comma inside the trace array.
    return len(context_json(entry)) + 1


def _utf8(entry: Mapping[str, Any]) -> int:
    return len(context_json(entry).encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Elision:
    entries: list[dict[str, Any]]
    elided_entries: int = 0
    elided_bytes: int = 0
    shortened_entries: int = 0


def _shrink_entry(entry: Mapping[str, Any], max_chars: int) -> dict[str, Any] | None:
    """A copy of `entry` whose longest text field is cut so the entry fits `max_chars`; None if it cannot."""
    field_name = next((f for f in ("text", "output") if isinstance(entry.get(f), str)), None)
    if field_name is None:
        return None
    value: str = entry[field_name]
    overhead = _entry_chars({**entry, field_name: ""}) + 80
    keep = max_chars - overhead
    if keep < _MIN_SHRUNK_CHARS or keep >= len(value):
        return None
    cut = len(value) - keep
    return {**entry, field_name: value[:keep] + f"… <elided: {cut} more chars removed to fit the context window>"}


def _is_marker(entry: Mapping[str, Any]) -> bool:
    return entry.get("kind") == ELIDED_KIND


def _marker(entries: Sequence[Mapping[str, Any]], start: int, stop: int) -> dict[str, Any]:
    """The marker entry standing for `entries[start:stop]`."""
    first = str(entries[start].get("timestamp", ""))
    last = str(entries[stop - 1].get("timestamp", ""))
    if isinstance(entries, SpooledTrace):  # no markers in it: sized without reading an entry
        count, size = stop - start, entries.utf8_total(start, stop)
    else:
        # A marker from an earlier elision stands for the entries it replaced, so counts stay exact when
        # an already-elided trace is elided again (after a vendor overflow).
        run = entries[start:stop]
        count = sum(int(e.get("elided_entries", 0)) if _is_marker(e) else 1 for e in run)
        size = sum(int(e.get("elided_bytes", 0)) if _is_marker(e) else _utf8(e) for e in run)
    return {
        "kind": ELIDED_KIND,
        "timestamp": first,
        "text": (f"<elided: {count} trace entries ({size} bytes, {first} to {last}) were removed so the trace "
                 "fits the judge model's context window. Judge only what is shown and do not penalise the "
                 "agent for what you cannot see.>"),
        "elided_entries": count,
        "elided_bytes": size,
    }


def elide_middle(entries: Sequence[Mapping[str, Any]], budget_chars: int,
                 sizes: Sequence[int] | None = None) -> Elision:
    """Keep the opening and the latest entries within `budget_chars` (JSON chars), replacing the rest
    with marker entries.

    The opening is everything before the first tool activity (the user's request, early plan and
    thinking), up to a quarter of the budget; the first `plan` entry after it is pinned too (plan
    adherence is judged against it); the remaining budget goes to the newest entries, kept
    contiguous. An entry too large for its share is cut rather than dropped when it is the first
    of its part. `sizes` are the entries' `_entry_chars`, when the caller has them. Only the kept
    entries and each elided run's first and last are read (the worker's trace is decoded as read).
    """
    if sizes is None:
        sizes = [_entry_chars(e) for e in entries]
    if sum(sizes) <= budget_chars:
        kept_all = [dict(e) for e in entries]
        elided, elided_bytes = _elided_totals(kept_all)
        return Elision(kept_all, elided_entries=elided, elided_bytes=elided_bytes)
    n = len(entries)
    kind_of = entries.kind if isinstance(entries, SpooledTrace) else (lambda i: entries[i].get("kind"))
    kept: list[dict[str, Any] | None] = [None] * n
    shortened = 0
    remaining = max(budget_chars - _MARKER_RESERVE_CHARS, 0)

    first_tool = next((i for i in range(n) if kind_of(i) in ("tool_invocation", "tool_result")), n)
    head_budget = int(remaining * _HEAD_SHARE)
    used = 0
    head_end = 0
    for i in range(first_tool):
        if used + sizes[i] <= head_budget:
            kept[i] = dict(entries[i])
            used += sizes[i]
        elif i == 0:
            cut = _shrink_entry(entries[i], head_budget - used)
            if cut is None:
                break
            kept[i] = cut
            used += _entry_chars(cut)
            shortened += 1
        else:
            break
        head_end = i + 1

    plan_index = next((i for i in range(head_end, n) if kind_of(i) == "plan"), None)
    if plan_index is not None:
        plan_budget = int(remaining * _PLAN_SHARE)
        if sizes[plan_index] <= plan_budget:
            kept[plan_index] = dict(entries[plan_index])
            used += sizes[plan_index]
        elif (cut := _shrink_entry(entries[plan_index], plan_budget)) is not None:
            kept[plan_index] = cut
            used += _entry_chars(cut)
            shortened += 1

    tail_budget = remaining - used
    tail_started = False
    for j in range(n - 1, head_end - 1, -1):
        if kept[j] is not None:  # the pinned plan
            continue
        if sizes[j] <= tail_budget:
            kept[j] = dict(entries[j])
            tail_budget -= sizes[j]
        elif not tail_started and (cut := _shrink_entry(entries[j], tail_budget)) is not None:
            kept[j] = cut
            tail_budget -= _entry_chars(cut)
            shortened += 1
        else:
            break
        tail_started = True

    out: list[dict[str, Any]] = []
    run_start: int | None = None
    for i, keep in enumerate(kept):
        if keep is None:
            run_start = i if run_start is None else run_start
            continue
        if run_start is not None:
            out.append(_marker(entries, run_start, i))
            run_start = None
        out.append(keep)
    if run_start is not None:
        out.append(_marker(entries, run_start, n))
    elided, elided_bytes = _elided_totals(out)
    return Elision(out, elided_entries=elided, elided_bytes=elided_bytes, shortened_entries=shortened)


def _elided_totals(entries: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    markers = [e for e in entries if _is_marker(e)]
    return (sum(int(m.get("elided_entries", 0)) for m in markers),
            sum(int(m.get("elided_bytes", 0)) for m in markers))


# ------------------------------------------------------------------------------------ measuring


TokenCounter = Callable[[str, str], Awaitable[int | None]]
# A vendor's count is trusted to this much once it has stated one (its tokenizer, our rounding).
_CALIBRATED_SAFETY = 1.02


class PromptOverWindow(Exception):
    """The vendor's count API refused to count because the prompt exceeds the model's window; `stated` is
    the limit its message names, when it names one."""

    def __init__(self, message: str, stated: StatedLimit | None = None) -> None:
        super().__init__(message)
        self.stated = stated


class TokenMeter:
    """Prompt size in tokens: the vendor's count API when it answers, else ceil(chars/4 * safety).

    The counted/characters ratio of the last exact count calibrates later estimates (used to size
    the elision budget), so a tokenizer denser than 4 chars/token does not defeat the fit. A count
    the vendor stated in a refusal calibrates it for good: from then on no measure is below the
    stated ratio, even when the count API (a gateway's, say) counts lower than the generate endpoint.
    `stated` keeps the lowest limit a count-API refusal named. `known_limit` is a limit the vendor stated
    on an earlier run (a learned limit): a prompt over it even at 4 chars/token is not sent to the count
    API, which would only refuse it as too long (so a run that starts from a learned limit makes no
    overflow call at all, its count calls included).
    """

    def __init__(self, count: TokenCounter, *, window: int, safety: float = 1.1,
                 known_limit: int | None = None) -> None:
        self._count = count
        self._window = window
        self._safety = safety
        self._known_limit = known_limit
        self._exact = False
        self._stated_ratio: float | None = None
        self.tokens_per_char = safety / CHARS_PER_TOKEN
        self.counted = 0
        self.stated: StatedLimit | None = None

    @property
    def method(self) -> str:
        return "count_tokens" if self._exact else "estimate"

    def calibrate(self, tokens: int, chars: int) -> None:
        """The vendor counted `tokens` for a prompt of `chars` characters (in its refusal)."""
        if tokens > 0 and chars > 0:
            self._stated_ratio = max(tokens / chars * _CALIBRATED_SAFETY, self._stated_ratio or 0.0)
            self.tokens_per_char = max(self.tokens_per_char, self._stated_ratio)

    def aim_at(self, window: int) -> None:
        self._window = window

    def without_count(self, chars: int) -> int | None:
        """What `measure` answers for a prompt of `chars` characters when it would not ask the vendor (far over
        the window, or over the limit the vendor stated by its own count per character), else None."""
        floor = math.ceil(chars * self._stated_ratio) if self._stated_ratio else 0
        if chars / CHARS_PER_TOKEN > 2 * self._window:
            # hopelessly over even at 4 chars/token: no need to ask the vendor
            return max(math.ceil(chars * self._safety / CHARS_PER_TOKEN), floor)
        if self.stated is not None and floor > self.stated.limit_tokens:
            return floor  # over the limit the vendor stated, by its own count per character: it would refuse again
        stated = self.stated.limit_tokens if self.stated is not None else self._known_limit
        if stated is not None and chars / CHARS_PER_TOKEN > stated:
            # over a limit the vendor enforces even at 4 chars/token: its count API would refuse it
            return max(math.ceil(chars * self._safety / CHARS_PER_TOKEN), floor)
        return None

    async def measure(self, shared_context: str, prompt: str) -> int:
        chars = len(shared_context) + len(prompt)
        known = self.without_count(chars)
        if known is not None:
            return known
        floor = math.ceil(chars * self._stated_ratio) if self._stated_ratio else 0
        estimate = max(math.ceil(chars * self._safety / CHARS_PER_TOKEN), floor)
        try:
            counted = await self._count(shared_context, prompt)
        except PromptOverWindow as exc:
            stated = exc.stated
            if stated is not None and (self.stated is None or stated.limit_tokens < self.stated.limit_tokens):
                self.stated = stated
            if stated is not None and stated.prompt_tokens:
                self.calibrate(stated.prompt_tokens, chars)
                return max(stated.prompt_tokens, floor)
            # Over the window by an unknown amount: at least one token over, and no less than estimated.
            return max(estimate, self._window + 1)
        if counted is not None:
            self._exact = True
            self.counted += 1
            if chars and self._stated_ratio is None:
                self.tokens_per_char = max(counted / chars, 1e-3)
            return max(counted, floor)
        self._exact = False
        return estimate


# ------------------------------------------------------------------------------------ fitting


@dataclass
class FittedContext:
    """The eval-context document the judges will see, its rendered shared prompt, and what was done."""

    doc: dict[str, Any]
    shared_context: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def adjusted(self) -> bool:
        return bool(self.report.get("adjusted"))

    @property
    def window(self) -> int:
        return int(self.report["context_window"])


def prompt_limit(window: int, output_tokens: int) -> int:
    """Prompt tokens allowed: the window minus the output budget and a small reserve."""
    reserve = max(_MIN_RESERVE_TOKENS, int(window * _RESERVE_RATIO))
    return window - output_tokens - reserve


def _with_trace(doc: Mapping[str, Any], elision: Elision) -> dict[str, Any]:
    compaction = dict(doc.get("compaction") or {})
    compaction["elided_entries"] = elision.elided_entries
    compaction["elided_bytes"] = elision.elided_bytes
    return {**doc, "trace": elision.entries, "compaction": compaction}


def _note(report: Mapping[str, Any], model: str) -> str | None:
    parts: list[str] = []
    if report["threshold_used"] != report["threshold_requested"]:
        parts.append(f"the tool-output threshold was lowered from {report['threshold_requested']} to "
                     f"{report['threshold_used']} bytes")
    if report["elided_entries"]:
        parts.append(f"{report['elided_entries']} trace entries ({report['elided_bytes']} bytes) from the middle "
                     "of the session were elided (the opening request/plan and the latest entries were kept)")
    if not parts:
        return None
    vendor = report.get("vendor_limit")
    if vendor:
        why = (f"The vendor stated a {vendor['limit_tokens']}-token context limit for {model} (the runner had "
               f"assumed {report['assumed_context_window']} tokens)")
    else:
        why = f"The trace did not fit {model}'s {report['context_window']}-token context window"
    return why + ": " + " and ".join(parts) + "."


class ContextFitter:
    """Fits one run's eval context to a token window, before dispatch and again when the vendor states a
    lower limit than assumed (`refit`): the tool-output threshold is halved first (down to
    `min_threshold`), then the middle of the trace is elided.

    `render(context_json)` builds the shared prompt prefix; `reload(threshold)` returns the eval context
    compacted at a lower threshold; `longest_prompt` is the largest per-question suffix (with its repair
    re-ask) that will follow the prefix, or a function of the window being fitted to (a tool question's
    rounds get a smaller budget in a smaller window).
    """

    def __init__(self, *, doc: Mapping[str, Any], reload: Callable[[int], Mapping[str, Any]],
                 requested_threshold: int, render: Callable[[str], str],
                 longest_prompt: str | Callable[[int], str], meter: TokenMeter,
                 output_tokens: int, model: str, min_threshold: int = DEFAULT_MIN_THRESHOLD,
                 window_source: str = "known") -> None:
        self._doc = doc
        self._reload = reload
        self._requested = requested_threshold
        self._render = render
        self._prompt = longest_prompt
        self.meter = meter
        self._output = output_tokens
        self._model = model
        self._min_threshold = min_threshold
        self._window_source = window_source
        self._assumed: int | None = None
        # `_entry_chars` of the loaded document's entries, by identity (`_entry_sizes`).
        self._sizes: dict[int, int] = {}

    async def fit(self, window: int) -> FittedContext:
        """The initial fit. A count-API refusal that states a lower limit than `window` moves the target
        to that limit (recorded as the vendor's). Raises ContextTooLarge when nothing but the prompt's
        fixed part is left and it still does not fit."""
        self._assumed = window
        self.meter.aim_at(window)
        try:
            fitted = await self._fit(self._doc, self._requested, window)
        except ContextTooLarge as exc:
            if self.meter.stated is None or self.meter.stated.limit_tokens >= window:
                raise
            raise await self._too_small(self.meter.stated, "the instructions, the question and the output "
                                                           "budget alone exceed it") from exc
        stated = self.meter.stated
        if stated is not None and stated.limit_tokens < window:
            self._record_stated(fitted.report, stated, "count_tokens")
        return fitted

    async def refit(self, fitted: FittedContext, stated: StatedLimit | None, *, refused_chars: int,
                    source: str = "generate") -> FittedContext:
        """The vendor refused `fitted` as too long. With a stated limit N: fit again to N minus the output
        budget and a margin; without one: elide a quarter more of the trace. Raises ContextTooSmall
        when the fixed prompt alone exceeds N, or when the trace cannot be shrunk any further."""
        if stated is None:
            return self._shrink_step(fitted)
        if stated.prompt_tokens:
            self.meter.calibrate(stated.prompt_tokens, refused_chars)
        else:
            # It counted more than the limit for what we sent: no less than that, per character.
            self.meter.calibrate(stated.limit_tokens + 1, refused_chars)
        return await self._fit_to_stated(fitted, stated, source)

    # -- internals --------------------------------------------------------------------------------
    def _entry_sizes(self, trace: Sequence[Mapping[str, Any]]) -> Sequence[int]:
        """`_entry_chars` of each entry. Those of the loaded document are remembered by identity: it stays
        loaded for the whole fit (so no id of one of its entries can belong to another object meanwhile),
        and every reload shares the entries it does not change. A reload's own entries are measured anew.
        A spooled trace (the worker's) knows its entries' sizes without reading them."""
        if isinstance(trace, SpooledTrace):
            return trace.sizes()
        cache = self._sizes
        loaded = self._doc.get("trace") or []
        if not cache and not isinstance(loaded, SpooledTrace):
            cache.update((id(e), _entry_chars(e)) for e in loaded)
        return [cache.get(id(entry)) or _entry_chars(entry) for entry in trace]

    async def _measure_doc(self, doc: dict[str, Any], prompt: str) -> tuple[str | None, int, dict[str, Any]]:
        """`doc`'s rendered shared context, the prompt's size in tokens and `doc` as rendered. A document far
        over the window is measured from its entries' sizes, never rendered (None): for a large session that
        render is the biggest allocation of the run. The size counts the rendered document without its trace
        plus the trace's JSON; the render's fence can only be a few characters longer. A spooled trace is
        read into a list when the document is rendered (it is then about a window's size)."""
        trace = doc.get("trace") or []
        chars = len(self._render(context_json({**doc, "trace": []}))) + len(prompt)
        chars += sum(self._entry_sizes(trace)) - (1 if trace else 0)
        tokens = self.meter.without_count(chars)
        if tokens is not None:
            return None, tokens, doc
        if not isinstance(trace, list):
            doc = {**doc, "trace": list(trace)}
        shared = self._render(context_json(doc))
        return shared, await self.meter.measure(shared, prompt), doc

    def _prompt_for(self, window: int) -> str:
        return self._prompt if isinstance(self._prompt, str) else self._prompt(window)

    async def _fit_to_stated(self, fitted: FittedContext, stated: StatedLimit, source: str) -> FittedContext:
        window = stated.limit_tokens
        self.meter.aim_at(window)
        threshold = int(fitted.report["threshold_used"])
        start = self._doc if threshold == self._requested else self._reload(threshold)
        try:
            refitted = await self._fit(start, threshold, window, earlier=fitted.report)
        except ContextTooLarge as exc:
            raise await self._too_small(stated, "the instructions, the question and the output budget alone "
                                                "exceed it", exc) from exc
        if len(refitted.shared_context) >= len(fitted.shared_context):
            raise await self._too_small(stated, "the trace cannot be shrunk any further")
        refitted.report["refits"] = list(fitted.report.get("refits", []))
        self._record_stated(refitted.report, stated, source)
        return refitted

    def _record_stated(self, report: dict[str, Any], stated: StatedLimit, source: str) -> None:
        report["vendor_limit"] = {"limit_tokens": stated.limit_tokens, "stated_prompt_tokens": stated.prompt_tokens,
                                  "source": source}
        report["refits"] = [*report.get("refits", []), {
            "reason": "vendor_stated_limit", "source": source, "limit_tokens": stated.limit_tokens,
            "stated_prompt_tokens": stated.prompt_tokens, "threshold_used": report["threshold_used"],
            "elided_entries": report["elided_entries"], "elided_bytes": report["elided_bytes"],
            "prompt_tokens": report["estimated_prompt_tokens"]}]
        report["vendor_overflow_retries"] = len(report["refits"])
        report["window_source"] = "vendor"
        report["adjusted"] = True
        report["note"] = _note(report, self._model)

    async def _too_small(self, stated: StatedLimit, why: str,
                         cause: ContextTooLarge | None = None) -> ContextTooSmall:
        fixed = await self.meter.measure(self._render(context_json({**self._doc, "trace": []})),
                                         self._prompt_for(stated.limit_tokens))
        return ContextTooSmall(
            f"{self._model} refused the prompt as too long and states a {stated.limit_tokens}-token limit; it "
            f"cannot be met because {why} (fixed prompt ~{fixed} tokens + {self._output} output tokens). "
            "Choose a model with a larger context window.",
            details={"stated_limit_tokens": stated.limit_tokens, "stated_prompt_tokens": stated.prompt_tokens,
                     "fixed_prompt_tokens": fixed, "output_tokens": self._output,
                     "assumed_context_window": self._assumed})

    def _shrink_step(self, fitted: FittedContext, factor: float = 0.75) -> FittedContext:
        """No number to go by: elide the trace to `factor` of its size."""
        trace = list(fitted.doc.get("trace") or [])
        budget = int(sum(_entry_chars(e) for e in trace) * factor)
        elision = elide_middle(trace, budget)
        if elision.elided_entries <= int((fitted.doc.get("compaction") or {}).get("elided_entries", 0)) \
                and elision.shortened_entries == 0:
            raise ContextTooSmall(
                f"{self._model} still refuses the prompt as too long and states no limit; the trace cannot be "
                "shrunk any further. Choose a model with a larger context window.",
                details={"context_window": fitted.window, "trace_entries": len(trace)})
        doc = _with_trace(fitted.doc, elision)
        report = dict(fitted.report)
        report["elided_entries"] = elision.elided_entries
        report["elided_bytes"] = elision.elided_bytes
        report["refits"] = [*fitted.report.get("refits", []), {
            "reason": "vendor_overflow_without_limit", "factor": factor,
            "elided_entries": elision.elided_entries, "elided_bytes": elision.elided_bytes}]
        report["vendor_overflow_retries"] = len(report["refits"])
        report["trace_entries"] = len(elision.entries)
        report["trace_chars"] = len(context_json(doc))
        report["adjusted"] = True
        report["note"] = _note(report, self._model) or "The vendor reported a context overflow; the trace was elided."
        return FittedContext(doc=doc, shared_context=self._render(context_json(doc)), report=report)

    async def _fit(self, doc: Mapping[str, Any], threshold: int, window: int, *,
                   earlier: Mapping[str, Any] | None = None) -> FittedContext:
        render, longest_prompt, meter = self._render, self._prompt_for(window), self.meter

        def lowered(window: int) -> int:
            # A count-API refusal may state a lower limit mid-fit: aim at it from then on.
            return min(window, meter.stated.limit_tokens) if meter.stated is not None else window

        limit = prompt_limit(window, self._output)
        tried = list(earlier["thresholds_tried"]) if earlier else [threshold]
        current: dict[str, Any] = dict(doc)
        shared, tokens, current = await self._measure_doc(current, longest_prompt)
        original_tokens = int((earlier or {}).get("original_prompt_tokens", tokens))
        window = lowered(window)
        longest_prompt = self._prompt_for(window)
        limit = prompt_limit(window, self._output)

        while tokens > limit and threshold > self._min_threshold:
            compaction = current.get("compaction") or {}
            if compaction.get("tool_results_truncated", 0) >= compaction.get("tool_results_total", 0):
                break  # every tool output is already a marker: a lower threshold cannot help
            threshold = max(self._min_threshold, threshold // 2)
            tried.append(threshold)
            shared = None  # not kept while the next one is measured
            # Nor the previous reload while the next is built: each holds a new dict per shortened entry, so two
            # at once were the fit's peak for a large session.
            current = {}
            current = dict(self._reload(threshold))
            shared, tokens, current = await self._measure_doc(current, longest_prompt)
            window = lowered(window)
            longest_prompt = self._prompt_for(window)
            limit = prompt_limit(window, self._output)

        trace: Sequence[dict[str, Any]] = current.get("trace") or []
        elision = Elision(trace if isinstance(trace, list) else [])
        if tokens > limit:
            fixed_chars = len(render(context_json({**current, "trace": []}))) + len(longest_prompt)
            budget_chars = int(limit / meter.tokens_per_char) - fixed_chars
            for _ in range(_ELISION_ATTEMPTS):
                if budget_chars <= 0:
                    break
                elision = elide_middle(trace, budget_chars, self._entry_sizes(trace))
                candidate = _with_trace(current, elision)
                shared = render(context_json(candidate))
                tokens = await meter.measure(shared, longest_prompt)
                if tokens <= limit:
                    current = candidate
                    break
                budget_chars = int(budget_chars * 0.85)
            if tokens > limit:
                raise ContextTooLarge(
                    f"The session does not fit {self._model}'s {window}-token context window even with the trace "
                    "elided; choose a model with a larger context window.",
                    details={"context_window": window, "estimated_prompt_tokens": tokens})

        report: dict[str, Any] = {
            "threshold_requested": self._requested,
            "threshold_used": threshold,
            "thresholds_tried": tried,
            "elided_entries": elision.elided_entries,
            "elided_bytes": elision.elided_bytes,
            "shortened_entries": elision.shortened_entries,
            "estimated_prompt_tokens": tokens,
            "original_prompt_tokens": original_tokens,
            "context_window": window,
            "assumed_context_window": self._assumed or window,
            "window_source": self._window_source,
            "output_tokens_reserved": self._output,
            "token_count_method": meter.method,
            "trace_entries": len(current.get("trace") or []),
            "trace_chars": len(context_json(current)),
            "session_chain": list(current.get("session_chain") or []),
            "compaction": {k: (current.get("compaction") or {}).get(k) for k in (
                "threshold_bytes", "tool_results_total", "tool_results_truncated", "bytes_saved")},
            "vendor_limit": None,
            "refits": [],
            "vendor_overflow_retries": 0,
        }
        report["adjusted"] = threshold != self._requested or elision.elided_entries > 0
        report["note"] = _note(report, self._model)
        assert shared is not None  # within the limit, so measured from its render
        return FittedContext(doc=current, shared_context=shared, report=report)


async def fit_context(
    *,
    doc: Mapping[str, Any],
    reload: Callable[[int], Mapping[str, Any]],
    requested_threshold: int,
    render: Callable[[str], str],
    longest_prompt: str,
    meter: TokenMeter,
    window: int,
    output_tokens: int,
    model: str,
    min_threshold: int = DEFAULT_MIN_THRESHOLD,
) -> FittedContext:
    """Fit `doc` (an eval-context object) into `window` (`ContextFitter.fit` in one call)."""
    fitter = ContextFitter(doc=doc, reload=reload, requested_threshold=requested_threshold, render=render,
                           longest_prompt=longest_prompt, meter=meter, output_tokens=output_tokens, model=model,
                           min_threshold=min_threshold)
    return await fitter.fit(window)


def without_waiting(fit: Coroutine[Any, Any, FittedContext]) -> FittedContext:
    """Runs a fit whose meter never waits (its counter answers at once, as the estimate's does) to the end,
    with no event loop: the API's dispatch prices a run this way, and `asyncio.run` would cost its first
    request the asyncio import and a loop for a coroutine that never suspends."""
    try:
        fit.send(None)
    except StopIteration as done:
        result: FittedContext = done.value
        return result
    fit.close()
    raise RuntimeError("the fit waited on its token counter: it needs an event loop (asyncio.run)")
