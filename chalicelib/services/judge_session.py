"""One run's conversation with the judge vendor: the current model (replaced once after a key rotation),
the shared context (refit when the vendor refuses it as too long), waiting out rate limits, the
deadline, and the usage tally (its tuning knobs are `services/judge_tuning.py`'s).

Every judge of the run goes through one `JudgeSession`, which is what makes the recoveries run-wide:
one key refresh for all judges that met the 401, and one context refit that every judge refused as
"prompt too long" waits on, instead of each shrinking the trace on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from chalicelib.domain.context_limits import ContextTooSmall, StatedLimit
from chalicelib.domain.errors import DomainError
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.judging import (
    RUN_FATAL_ERROR_KINDS,
    FirstToken,
    JudgeCall,
    JudgeModel,
    JudgeReply,
    ToolChoice,
    ToolRound,
    ToolSpec,
    VendorCallError,
    VendorErrorKind,
)
from chalicelib.observability import logger
from chalicelib.services.context_fit import PromptOverWindow
from chalicelib.services.judge_tuning import RunnerTuning
from chalicelib.services.session_tools import RunTools

T = TypeVar("T")
# `refit(stated limit or None, characters of the refused prompt)` → the new shared context.
Refit = Callable[[StatedLimit | None, int], Awaitable[str]]


class Deadline:
    def __init__(self, seconds: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.at = monotonic() + seconds
        self.seconds = seconds

    def remaining(self) -> float:
        return self.at - self._monotonic()

    def passed(self) -> bool:
        return self.remaining() <= 0


# Why a run stops early: a vendor error that would fail every question alike, or the spend guard's
# `budget_exhausted` (services/spend_guard.py: the next call could pass what the run reserved).
AbortKind = VendorErrorKind | Literal["budget_exhausted"]


class RunAborted(Exception):
    """A failure that fails every question the same way (the key was refused, no such model, a context
    limit that cannot be met, no budget left); `error` is the run's error when it is not the vendor's
    own answer."""

    def __init__(self, kind: AbortKind, message: str, error: DomainError | None = None) -> None:
        super().__init__(message)
        self.kind: AbortKind = kind
        self.message = message
        self.error = error


class JudgeSession:
    def __init__(self, *, model: JudgeModel, model_name: str, cache_key: str, deadline: Deadline,
                 tuning: RunnerTuning, refresh: Callable[[], Awaitable[JudgeModel | None]]) -> None:
        self.model_name = model_name
        self.cache_key = cache_key
        self.deadline = deadline
        self.tuning = tuning
        self.shared_context = ""
        self.usage = TokenUsage()
        self.calls = 0
        self.vendor_errors: Counter[str] = Counter()
        self.latencies_ms: list[int] = []
        self.context_refits = 0
        self._model = model
        self._models: list[JudgeModel] = [model]
        self._generation = 0  # of the model (key)
        self._refresh = refresh
        self._refreshed = False
        self._key_lock = asyncio.Lock()
        self._refit: Refit | None = None
        self._context_generation = 0
        self._context_failure: RunAborted | None = None
        self._refit_lock = asyncio.Lock()
        # Offered on every call with the trace when the run has tool questions (the same tools on every call
        # keep one cached prefix: both vendors put tools before the system prompt); `toolbox` answers them.
        self.tools: tuple[ToolSpec, ...] = ()
        self.toolbox: RunTools | None = None
        # Length of the trace the judges see (positions 0..n-1), against which cited entries are checked.
        self.trace_entries: int | None = None

    @property
    def model(self) -> JudgeModel:
        return self._model

    def context_window(self) -> int:
        """The model table's window (an override first); the run's fit decides what it assumes."""
        override = self.tuning.context_window_overrides.get(self.model_name)
        return override or self._model.context_window(self.model_name)

    def set_refit(self, refit: Refit) -> None:
        self._refit = refit

    async def aclose(self) -> None:
        for model in self._models:
            try:
                await model.aclose()
            except Exception as exc:  # closing must never hide the run's outcome
                logger.warning("judge client close failed", extra={"error_type": type(exc).__name__})

    # -- requests -----------------------------------------------------------------------------------
    async def count_tokens(self, shared_context: str, prompt: str) -> int | None:
        try:
            return await self._with_key_refresh(
                lambda model: model.count_tokens(self.model_name, shared_context, prompt))
        except VendorCallError as exc:
            if exc.kind == "context_overflow":
                raise PromptOverWindow(exc.message, exc.stated_limit) from exc
            return None  # counting is an optimisation: without it the calibrated estimate decides

    async def judge(self, prompt: str, *, schema: dict[str, Any], schema_name: str, with_context: bool = True,
                    on_first_token: FirstToken | None = None, tool_choice: ToolChoice = "none",
                    rounds: tuple[ToolRound, ...] = ()) -> JudgeReply:
        """One request round. With the trace, the run's tools are offered (`tool_choice="auto"` lets the judge
        call them; `rounds` are its calls so far and our answers); without it (the retrospective), none."""
        tools = self.tools if with_context else ()
        while True:
            generation = self._context_generation
            context = self.shared_context if with_context else ""
            self._timeout()  # past the deadline nothing is sent

            def send(model: JudgeModel, context: str = context) -> Awaitable[JudgeReply]:
                call = JudgeCall(model=self.model_name, shared_context=context, prompt=prompt,
                                 response_schema=schema, schema_name=schema_name,
                                 max_output_tokens=self.tuning.max_output_tokens, cache_key=self.cache_key,
                                 timeout_seconds=self._timeout(), tools=tools,
                                 tool_choice=tool_choice if tools else "auto", rounds=rounds if tools else ())
                return model.judge(call, on_first_token=on_first_token)

            try:
                reply = await self._with_key_refresh(send)
            except VendorCallError as exc:
                if exc.kind == "context_overflow" and with_context:
                    await self._after_overflow(generation, exc, len(context) + len(prompt))
                    continue
                if exc.kind == "rate_limited" and self.tuning.retry_rate_limited:
                    await self._wait_out_rate_limit(exc)
                    continue  # the next attempt raises "timeout" once the deadline has passed
                raise
            self.calls += 1
            self.usage = self.usage + reply.usage
            self.latencies_ms.append(reply.latency_ms)
            return reply

    # -- recoveries ---------------------------------------------------------------------------------
    async def _with_key_refresh(self, attempt: Callable[[JudgeModel], Awaitable[T]]) -> T:
        """One vendor request, asked once more with a rotated key after a 401/403; the answers that
        would fail every question the same way raise RunAborted."""
        auth_retried = False
        while True:
            model, generation = self._model, self._generation
            try:
                return await attempt(model)
            except VendorCallError as exc:
                self.vendor_errors[exc.kind] += 1
                if exc.kind == "auth" and not auth_retried and await self._after_auth_error(generation):
                    auth_retried = True
                    continue
                if exc.kind in RUN_FATAL_ERROR_KINDS:
                    raise RunAborted(exc.kind, exc.message) from exc
                raise

    async def _after_auth_error(self, generation: int) -> bool:
        """True when a retry with a (new) key makes sense. One key refresh per run."""
        async with self._key_lock:
            if self._generation != generation:
                return True  # another judge already swapped in the rotated key
            if self._refreshed:
                return False
            self._refreshed = True
            fresh = await self._refresh()
            if fresh is None:
                return False
            self._models.append(fresh)
            self._model = fresh
            self._generation += 1
            return True

    async def _after_overflow(self, generation: int, exc: VendorCallError, refused_chars: int) -> None:
        """Return when the shared context has been refit (by this judge or another); every judge refused on
        the same context waits here for the one refit. Raises RunAborted when it cannot be refit."""
        async with self._refit_lock:
            if self._context_failure is not None:
                raise self._context_failure
            if self._context_generation != generation:
                return  # another judge refit it while this one was refused
            if self._refit is None:
                raise exc
            if self.context_refits >= self.tuning.max_context_refits:
                stated = exc.stated_limit
                self._context_failure = RunAborted("context_overflow", exc.message, ContextTooSmall(
                    f"{self.model_name} still refuses the prompt as too long after {self.context_refits} refits of "
                    "the trace; choose a model with a larger context window.",
                    details={"refits": self.context_refits,
                             "stated_limit_tokens": stated.limit_tokens if stated else None,
                             "stated_prompt_tokens": stated.prompt_tokens if stated else None}))
                raise self._context_failure from exc
            self.context_refits += 1
            try:
                self.shared_context = await self._refit(exc.stated_limit, refused_chars)
            except ContextTooSmall as too_small:
                self._context_failure = RunAborted("context_overflow", too_small.message, too_small)
                raise self._context_failure from exc
            self._context_generation += 1

    async def _wait_out_rate_limit(self, exc: VendorCallError) -> None:
        # Cancellation (a cancel, the deadline) interrupts the sleep like any in-flight call; like a call's
        # timeout it ends past the deadline, so the run's own stop wins. With the fleet's gate installed
        # the next attempt also waits for the shared pause and pace.
        wait = exc.retry_after if exc.retry_after is not None else self.tuning.rate_limit_backoff_seconds
        limit = max(self.deadline.remaining(), 0.0) + self.tuning.call_timeout_slack_seconds
        await asyncio.sleep(min(max(wait, 0.05), limit))

    def _timeout(self) -> float:
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise VendorCallError("timeout", "The run's deadline was reached before the call started.")
        return remaining + self.tuning.call_timeout_slack_seconds
