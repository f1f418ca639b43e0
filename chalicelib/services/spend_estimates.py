"""Estimates of what a run may cost, and the quote that lets a dispatch reserve it without re-reading.

`SpendEstimator.estimate` loads the session's eval context exactly as the worker will (same
threshold, chain and redaction), renders the shared prompt, fits it to the model's window the way the
runner does when it cannot count tokens exactly, and applies `domain/spend_estimate.py`. It stores
a short-lived quote (`BUDGET#QUOTE#<id>`) of the upper bound for this request and session revision.

A dispatch that carries the quote reserves that bound with no read at all: its transaction checks
the quote item (same user, same request fingerprint, same amount, not expired) and that the session
is still at the quoted revision. Without a quote (or with a stale one) dispatch estimates itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chalicelib.adapters.run_store import TransactItem
from chalicelib.domain.clock import Clock
from chalicelib.domain.ids import new_id
from chalicelib.domain.judging import known_context_window
from chalicelib.domain.spend_prices import ModelPrice
from chalicelib.judges.catalog import Question
from chalicelib.judges.prompts import (
    PROMPT_SEPARATOR,
    RetrospectiveMeta,
    build_question_prompt,
    build_repair_prompt,
    build_retrospective_prompt,
    build_shared_context,
)

# Loaded with the prompts anyway (they name the schema's keys and the tools).
from chalicelib.judges.schema import retrospective_json_schema, verdict_json_schema
from chalicelib.judges.tools import (
    CALLS_PER_ROUND_ECHOED,
    MAX_TOOL_ROUNDS,
    REQUESTS_PER_TOOL_QUESTION_MAX,
    TOOL_SPECS,
    tool_rounds_bytes_max,
)

if TYPE_CHECKING:
    from chalicelib.domain.spend_estimate import RunEstimate
    from chalicelib.services.judge_tuning import RunnerTuning

QUOTE_TTL_SECONDS = 15 * 60
# Same length as a real run id (new_id("evr")), so the rendered prompt has the run's exact size.
_PLACEHOLDER_RUN_ID = "evr_" + "0" * 26
_REPAIR_ALLOWANCE = build_repair_prompt("x" * 2100, "e" * 600)


class SessionContextSource(Protocol):
    def get_session(self, tenant: str, session_id: str) -> Any: ...

    def load_eval_context(self, tenant: str, session_id: str, threshold: int | str | None = ...,
                          chain: bool = ...) -> Any: ...


class QuoteStore(Protocol):
    def save_quote(self, tenant: str, quote_id: str, *, user: str, fingerprint: str, high_micros: int,
                   session_revision: int, expires_at: int) -> None: ...

    def quote_check(self, tenant: str, quote_id: str, *, user: str, fingerprint: str, high_micros: int,
                    now_epoch: int) -> TransactItem: ...


@dataclass(frozen=True)
class RunShape:
    """What a run would judge, as far as its cost goes."""

    session_id: str
    questions: Sequence[Question]
    threshold: int
    chain: bool
    runner: str
    vendor: str | None
    model: str | None
    retrospective: bool = True
    batch: bool = False
    catalog_version: int = 0

    def fingerprint(self) -> str:
        parts = [self.session_id, self.runner, self.vendor or "", self.model or "", str(self.threshold),
                 str(self.chain), str(self.retrospective), str(self.batch), str(self.catalog_version),
                 *sorted(f"{q.id}:{hashlib.sha256(build_question_prompt(q).encode()).hexdigest()[:16]}"
                         for q in self.questions)]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Estimated:
    estimate: RunEstimate
    price: ModelPrice | None
    session_revision: int | None
    quote: str | None = None


@dataclass(frozen=True)
class Quote:
    quote_id: str
    high_micros: int
    session_revision: int


def encode_quote(q: Quote) -> str:
    raw = json.dumps([q.quote_id, q.high_micros, q.session_revision], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_quote(text: str | None) -> Quote | None:
    """The quote a client echoed from its estimate; None (estimate afresh) when it is not one of ours."""
    if not text or len(text) > 256:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        return None
    if not (isinstance(data, list) and len(data) == 3 and isinstance(data[0], str) and len(data[0]) <= 64
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in data[1:])):
        return None
    return Quote(quote_id=data[0], high_micros=data[1], session_revision=data[2])


class SpendEstimator:
    def __init__(self, *, sessions: SessionContextSource, quotes: QuoteStore, clock: Clock,
                 tuning: Callable[[], RunnerTuning]) -> None:
        self._sessions = sessions
        self._quotes = quotes
        self._clock = clock
        # The worker's judge tuning (max output tokens, retrospective on/off, window overrides).
        self._tuning = tuning

    def estimate(self, tenant: str, user: str, shape: RunShape, price: ModelPrice | None, *,
                 issue_quote: bool = True) -> Estimated:
        # The revision a quote is bound to; a dispatch estimating for itself does not need it (it
        # reserves from what it just read, and its spend guard caps the run at that anyway).
        # The arithmetic and the context fit are the estimate's alone: a dispatch carrying a quote only
        # fingerprints its prompts, so its first request does not import them.
        from chalicelib.domain.spend_estimate import TOOL_BLOCK_FRAMING_BYTES, EstimateInputs, estimate_run, utf8_len
        from chalicelib.services.context_fit import context_json

        revision: int | None = None
        if issue_quote:
            record = self._sessions.get_session(tenant, shape.session_id)
            revision = int(getattr(record, "revision", 0) or 0)
        context = self._sessions.load_eval_context(tenant, shape.session_id, shape.threshold, shape.chain)
        doc = context.model_dump(mode="json")
        shared = build_shared_context(shape.session_id, _PLACEHOLDER_RUN_ID, context_json(doc))
        prompts = [build_question_prompt(q) for q in shape.questions]
        longest = max(prompts, key=len) if prompts else ""
        retro_fixed = build_retrospective_prompt(RetrospectiveMeta(
            session_id=shape.session_id, eval_run_id=_PLACEHOLDER_RUN_ID, judge_model=shape.model or "model",
            overall_score=5, questions_selected=len(shape.questions)), [])
        tuning = self._tuning()
        max_output = tuning.max_output_tokens
        fitted_chars = self._fitted_chars(doc, context, shape, longest, max_output, shared)
        inputs = EstimateInputs(
            model=shape.model, questions=len(shape.questions), max_output_tokens=max_output,
            shared_context_bytes=utf8_len(shared),
            longest_prompt_bytes=utf8_len(longest + PROMPT_SEPARATOR + _REPAIR_ALLOWANCE),
            schema_bytes=utf8_len(json.dumps(verdict_json_schema(), separators=(",", ":"))),
            retrospective_fixed_bytes=utf8_len(retro_fixed + PROMPT_SEPARATOR + build_repair_prompt(
                "x" * 2100, "e" * 600, "retrospective")) + utf8_len(json.dumps(retrospective_json_schema())),
            fitted_context_chars=fitted_chars,
            mean_prompt_chars=sum(len(p) for p in prompts) // max(len(prompts), 1),
            retrospective=shape.retrospective and tuning.retrospective, price=price, batch=shape.batch,
            tool_questions=sum(1 for q in shape.questions if q.needs_tools),
            tool_specs_bytes=utf8_len(json.dumps(TOOL_SPECS)),
            tool_request_bytes=tool_rounds_bytes_max()
            + TOOL_BLOCK_FRAMING_BYTES * MAX_TOOL_ROUNDS * (1 + 2 * CALLS_PER_ROUND_ECHOED),
            requests_per_tool_question=REQUESTS_PER_TOOL_QUESTION_MAX)
        estimate = estimate_run(inputs)
        quote: str | None = None
        if issue_quote and revision is not None and price is not None and shape.runner == "server":
            quote_id = new_id("qte")
            expires = int(self._clock.now().timestamp()) + QUOTE_TTL_SECONDS
            self._quotes.save_quote(tenant, quote_id, user=user, fingerprint=shape.fingerprint(),
                                    high_micros=estimate.high_micros, session_revision=revision, expires_at=expires)
            quote = encode_quote(Quote(quote_id=quote_id, high_micros=estimate.high_micros,
                                       session_revision=revision))
        return Estimated(estimate=estimate, price=price, session_revision=revision, quote=quote)

    def quote_check(self, tenant: str, user: str, shape: RunShape, quote: Quote) -> TransactItem:
        return self._quotes.quote_check(tenant, quote.quote_id, user=user, fingerprint=shape.fingerprint(),
                                        high_micros=quote.high_micros,
                                        now_epoch=int(self._clock.now().timestamp()))

    def _fitted_chars(self, doc: Mapping[str, Any], context: Any, shape: RunShape, longest: str, max_output: int,
                      shared: str) -> int:
        """Characters of the shared context after the runner's fit (estimate mode: chars/4 x safety)."""
        from chalicelib.ingest.compaction import compact
        from chalicelib.services.context_fit import TokenMeter, fit_context, without_waiting

        model = shape.model or ""
        tuning = self._tuning()
        window = tuning.context_window_overrides.get(model) or known_context_window(model)

        async def no_count(shared_context: str, prompt: str) -> int | None:
            return None

        def reload(threshold: int) -> dict[str, Any]:
            trace, stats = compact(context.trace, threshold)
            compaction = {**context.compaction, **stats}
            return dict(context.model_copy(update={"trace": trace, "compaction": compaction}).model_dump(mode="json"))

        def render(text: str) -> str:
            return build_shared_context(shape.session_id, _PLACEHOLDER_RUN_ID, text)

        # A context the fit cannot shrink enough raises ContextTooLarge (422): the run would fail the same way.
        # Nothing here waits (no count API), so the fit runs without an event loop.
        fitted = without_waiting(fit_context(
            doc=doc, reload=reload, requested_threshold=shape.threshold, render=render,
            longest_prompt=longest + PROMPT_SEPARATOR + _REPAIR_ALLOWANCE,
            meter=TokenMeter(no_count, window=window, safety=tuning.estimate_safety), window=window,
            output_tokens=max_output, model=model))
        return min(len(fitted.shared_context), len(shared), math.ceil(window * 4))
