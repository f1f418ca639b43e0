"""What both judge adapters share: the call's outer time bound and latency, streaming on request, and
the frame of vendor error translation (timeouts, connection, unparsable answers, HTTP statuses,
the limit a "prompt too long" refusal states).

A vendor adapter (`anthropic_judge`, `openai_judge`) supplies only what differs: how one request
round is sent (`_send`: plain or streamed), how its answer becomes a `JudgeReply`, the token count,
and the vendor's own status quirks. One round per `judge` call today; a multi-round call (tool use,
the cached prefix kept) is a loop over `_send` with the conversation grown by each answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any, ClassVar

from chalicelib.domain.context_limits import is_context_overflow_message, parse_stated_limit
from chalicelib.domain.judging import (
    FirstToken,
    JudgeCall,
    JudgeReply,
    VendorCallError,
    VendorErrorKind,
    known_context_window,
    parse_retry_after,
    scrub_secrets,
)

COUNT_TOKENS_TIMEOUT_SECONDS = 30.0
Verdict = tuple[VendorErrorKind, str]


class VendorJudgeModel(ABC):
    """`JudgeModel` over a vendor's async SDK client; the caller configures its retries and timeouts."""

    vendor: ClassVar[str]  # also the name of its SDK's package
    label: ClassVar[str]  # the vendor's name in messages
    sdk_error: ClassVar[str]  # the SDK's root exception class

    def __init__(self, client: Any) -> None:
        self._client = client

    def context_window(self, model: str) -> int:
        return known_context_window(model)

    async def judge(self, call: JudgeCall, *, on_first_token: FirstToken | None = None) -> JudgeReply:
        started = time.monotonic()
        # The SDK applies `timeout` per attempt and retries 429/5xx/timeouts; the outer bound keeps the
        # whole call (attempts + backoff sleeps) inside the caller's deadline.
        async with self._vendor_call(call.model, call.timeout_seconds,
                                     f"gave no answer within {call.timeout_seconds:g}s (including retries)"):
            reply = await self._send(call, on_first_token)
        return dataclasses.replace(reply, latency_ms=int((time.monotonic() - started) * 1000))

    async def count_tokens(self, model: str, shared_context: str, prompt: str) -> int | None:
        return None

    async def aclose(self) -> None:
        await self._client.close()

    # -- what a vendor supplies ---------------------------------------------------------------------
    @abstractmethod
    async def _send(self, call: JudgeCall, on_first_token: FirstToken | None) -> JudgeReply:
        """One request round; streamed (calling `on_first_token` at the first event) when it is given."""

    @abstractmethod
    def _detail(self, exc: Any) -> str:
        """The vendor's own error message from an `APIStatusError`."""

    def _vendor_verdict(self, status: int, exc: Any, detail: str, model: str) -> Verdict | None:
        """A vendor-specific reading of an error status, before the common one."""
        return None

    def _secrets(self) -> list[str | None]:
        return [self._client.api_key]

    # -- shared -------------------------------------------------------------------------------------
    def _sdk(self) -> ModuleType:
        # Imported on first use, never at module import: the API handler's cold start stays SDK-free.
        return importlib.import_module(self.vendor)

    @asynccontextmanager
    async def _vendor_call(self, model: str, timeout: float, timed_out: str) -> AsyncIterator[None]:
        sdk = self._sdk()
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError as exc:
            raise VendorCallError("timeout", f"{self.label} {timed_out}.") from exc
        except getattr(sdk, self.sdk_error) as exc:
            raise self.translate(exc, model=model) from exc

    async def _first_event(self, events: AsyncIterator[Any], on_first_token: FirstToken) -> AsyncIterator[Any]:
        """The stream's events, with `on_first_token` called once the response has begun."""
        announced = False
        async for event in events:
            if not announced:
                announced = True
                on_first_token()
            yield event

    def translate(self, exc: BaseException, *, model: str,
                  secrets: Iterable[str | None] | None = None) -> VendorCallError:
        """Map an SDK exception (after the SDK's own retries) onto the port's error kinds."""
        sdk = self._sdk()
        label = self.label
        secrets = list(self._secrets() if secrets is None else secrets)
        if isinstance(exc, sdk.APITimeoutError):
            return VendorCallError("timeout", f"{label} request timed out.", secrets=secrets)
        if isinstance(exc, sdk.APIConnectionError):
            cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "connection error"
            return VendorCallError("network", f"Could not reach the {label} API ({cause}).", secrets=secrets)
        if isinstance(exc, sdk.APIResponseValidationError):
            return VendorCallError("invalid_output", f"{label} returned a response the SDK could not parse.",
                                   secrets=secrets)
        if not isinstance(exc, sdk.APIStatusError):
            return VendorCallError("server", f"{label} call failed ({type(exc).__name__}).", secrets=secrets)

        status = exc.status_code
        detail = scrub_secrets(self._detail(exc), secrets)
        kind, message = self._vendor_verdict(status, exc, detail, model) or _common_verdict(label, status, detail,
                                                                                             model)
        suffix = f" (HTTP {status}): {detail}" if detail else f" (HTTP {status})."
        return VendorCallError(kind, message + suffix, retry_after=parse_retry_after(exc.response.headers),
                               status=status, secrets=secrets,
                               stated_limit=parse_stated_limit(detail) if kind == "context_overflow" else None)


def _common_verdict(label: str, status: int, detail: str, model: str) -> Verdict:
    if status in (401, 403):
        return "auth", f"{label} rejected the API key"
    if status == 404:
        return "model_not_found", f"{label} has no model {model!r} (or the base URL is wrong)"
    if status == 429:
        return "rate_limited", f"{label} rate limit reached after retries"
    if status == 408:
        return "timeout", f"{label} timed out the request"
    if status == 413 or (status == 400 and is_context_overflow_message(detail)):
        return "context_overflow", "The prompt does not fit the model's context window"
    if status >= 500:
        return "server", f"{label} server error"
    return "bad_request", f"{label} rejected the request"
