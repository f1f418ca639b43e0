"""The run-time spend guard: a server run never sends a judge call that could take it past what it reserved.

`GuardedJudgeModel` wraps the run's `JudgeModel` (the judge runner does not know about money): before
each call it reserves the call's worst case (`domain/spend_estimate.py`: prompt bytes + framing at the
dearest input rate, `max_tokens` of output) against what is left of the attempt's reservation; when it
does not fit, the call is not sent and the run stops with `RunAborted("budget_exhausted")` (status
`failed`, code `budget_exhausted`, the verdicts already given are kept). When the reply arrives the
worst case is replaced by what the vendor reported.

A call that ended without a usage report (cancelled by a cancel or the deadline, timed out, a network
error) may still have been processed and billed: it stays counted at its worst case as `unreported`,
which the finalizer settles against the budgets on top of the reported cost. Errors the vendors do not
bill (429, 5xx/529, 401/403, 400 incl. an oversized prompt) release the reservation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.judging import FirstToken, JudgeCall, JudgeModel, JudgeReply, VendorCallError
from chalicelib.domain.spend_estimate import TOOL_BLOCK_FRAMING_BYTES, call_prompt_tokens_high, utf8_len
from chalicelib.domain.spend_prices import ModelPrice, cost_micros, worst_case_call_micros
from chalicelib.observability import logger
from chalicelib.services.judge_session import RunAborted

# Vendor error kinds after which the request may have been processed (so possibly billed).
_MAYBE_BILLED_KINDS = frozenset({"timeout", "network", "invalid_output"})


@dataclass
class SpendGuard:
    """One run attempt's money: its reservation, what the vendor reported, what is in flight."""

    limit_micros: int
    price: ModelPrice
    batch: bool = False
    billed_micros: int = 0
    unreported_micros: int = 0
    refused_calls: int = 0
    _inflight: dict[int, int] = field(default_factory=dict)
    _next: int = 0

    @property
    def committed_micros(self) -> int:
        return self.billed_micros + self.unreported_micros + sum(self._inflight.values())

    def worst_case(self, call: JudgeCall) -> int:
        prompt_bytes = (utf8_len(call.shared_context) + utf8_len(call.prompt)
                        + utf8_len(json.dumps(call.response_schema, separators=(",", ":"))) + _tool_bytes(call))
        tokens = call_prompt_tokens_high(prompt_bytes=prompt_bytes, model=call.model)
        return worst_case_call_micros(input_tokens=tokens, output_tokens=call.max_output_tokens, price=self.price,
                                      batch=self.batch)

    def reserve(self, call: JudgeCall) -> int:
        worst = self.worst_case(call)
        if self.committed_micros + worst > self.limit_micros:
            self.refused_calls += 1
            raise RunAborted("budget_exhausted",
                             f"The run's next judge call could cost up to ${worst / 1e6:.4f}; with "
                             f"${self.committed_micros / 1e6:.4f} committed it would pass the "
                             f"${self.limit_micros / 1e6:.4f} this run reserved of the budget.")
        self._next += 1
        self._inflight[self._next] = worst
        return self._next

    def settle(self, ticket: int, usage: TokenUsage | None, *, maybe_billed: bool) -> None:
        worst = self._inflight.pop(ticket, 0)
        if usage is not None:
            self.billed_micros += cost_micros(usage, self.price, batch=self.batch)
        elif maybe_billed:
            self.unreported_micros += worst


def _tool_bytes(call: JudgeCall) -> int:
    """What tool use adds to a request: the tool definitions and every earlier round (the judge's text and
    calls, echoed, and our results), each counted by its UTF-8 bytes plus message framing."""
    total = sum(utf8_len(t.name) + utf8_len(t.description) + utf8_len(json.dumps(t.parameters)) for t in call.tools)
    for r in call.rounds:
        total += TOOL_BLOCK_FRAMING_BYTES * (1 + len(r.calls) + len(r.results))
        total += utf8_len(r.text)
        total += sum(utf8_len(c.call_id) + utf8_len(c.name) + utf8_len(c.raw_arguments or json.dumps(c.arguments))
                     for c in r.calls)
        total += sum(utf8_len(b.call_id) + utf8_len(b.content) for b in r.results)
    return total


class GuardedJudgeModel:
    """`JudgeModel` that asks the run's `SpendGuard` before every judge call (token counting is free)."""

    def __init__(self, inner: JudgeModel, guard: SpendGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def judge(self, call: JudgeCall, *, on_first_token: FirstToken | None = None) -> JudgeReply:
        ticket = self._guard.reserve(call)
        try:
            reply = await self._inner.judge(call, on_first_token=on_first_token)
        except VendorCallError as exc:
            self._guard.settle(ticket, None, maybe_billed=exc.kind in _MAYBE_BILLED_KINDS)
            raise
        except BaseException:
            # Cancelled mid-flight (a cancel, the deadline, a sibling's abort): the request may have been
            # processed; count its worst case.
            self._guard.settle(ticket, None, maybe_billed=True)
            raise
        self._guard.settle(ticket, reply.usage, maybe_billed=True)
        return reply

    async def count_tokens(self, model: str, shared_context: str, prompt: str) -> int | None:
        return await self._inner.count_tokens(model, shared_context, prompt)

    def context_window(self, model: str) -> int:
        return self._inner.context_window(model)

    async def aclose(self) -> None:
        if self._guard.refused_calls:
            logger.info("spend guard refused judge calls", extra={"refused_calls": self._guard.refused_calls})
        await self._inner.aclose()
