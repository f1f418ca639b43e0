"""Anthropic Messages adapter for the judge port: cached trace prefix, structured output, error translation.

The trace goes in the system prompt as one text block marked `cache_control: ephemeral`, so every
judge of a run after the first reads it from Anthropic's prompt cache (reference §8.4); the
question is the user message; the verdict shape is pinned with `output_config.format` json_schema.
`anthropic` is imported only inside functions (and for type checking), so importing this module
costs nothing on the API handler's cold start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.judging import (
    JudgeCall,
    JudgeReply,
    VendorCallError,
    VendorErrorKind,
    known_context_window,
    parse_retry_after,
    split_one_million_suffix,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import TextBlockParam

# The `[1m]` model suffix is a Claude Code alias; the API enables the 1M window with this beta header.
ONE_MILLION_CONTEXT_BETA = "context-1m-2025-08-07"
COUNT_TOKENS_TIMEOUT_SECONDS = 30.0
_CONTEXT_OVERFLOW_MARKERS = ("prompt is too long", "context window", "context length", "too many tokens")


class AnthropicJudgeModel:
    """`JudgeModel` over `anthropic.AsyncAnthropic`; the caller configures its retries, backoff and timeouts."""

    vendor = "anthropic"

    def __init__(self, client: AsyncAnthropic) -> None:
        self._client = client

    def context_window(self, model: str) -> int:
        return known_context_window(model)

    async def judge(self, call: JudgeCall) -> JudgeReply:
        import anthropic

        model, one_million = split_one_million_suffix(call.model)
        started = time.monotonic()
        try:
            # The SDK applies `timeout` per attempt and retries 429/5xx/timeouts; the outer bound keeps
            # the whole call (attempts + backoff sleeps) inside the caller's deadline.
            async with asyncio.timeout(call.timeout_seconds):
                message = await self._client.messages.create(
                    model=model,
                    max_tokens=call.max_output_tokens,
                    system=_system_blocks(call.shared_context) or anthropic.omit,
                    messages=[{"role": "user", "content": call.prompt}],
                    output_config={"format": {"type": "json_schema", "schema": call.response_schema}},
                    timeout=call.timeout_seconds,
                    extra_headers=_beta_headers(one_million),
                )
        except TimeoutError as exc:
            raise VendorCallError(
                "timeout", f"Anthropic gave no answer within {call.timeout_seconds:g}s (including retries)."
            ) from exc
        except anthropic.AnthropicError as exc:
            raise translate_anthropic_error(exc, model=call.model, secrets=self._secrets()) from exc
        latency_ms = int((time.monotonic() - started) * 1000)

        text = "".join(block.text for block in message.content if block.type == "text")
        usage = message.usage
        return JudgeReply(
            text=text,
            usage=TokenUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens or 0,
                cache_creation_input_tokens=usage.cache_creation_input_tokens or 0,
            ),
            latency_ms=latency_ms,
            model=message.model,
            request_id=message._request_id,
            stop_reason=message.stop_reason,
        )

    async def count_tokens(self, model: str, shared_context: str, prompt: str) -> int | None:
        import anthropic

        api_model, one_million = split_one_million_suffix(model)
        try:
            async with asyncio.timeout(COUNT_TOKENS_TIMEOUT_SECONDS):
                counted = await self._client.messages.count_tokens(
                    model=api_model,
                    system=_system_blocks(shared_context) or anthropic.omit,
                    messages=[{"role": "user", "content": prompt}],
                    timeout=COUNT_TOKENS_TIMEOUT_SECONDS,
                    extra_headers=_beta_headers(one_million),
                )
        except TimeoutError as exc:
            raise VendorCallError("timeout", "Anthropic token counting timed out.") from exc
        except anthropic.AnthropicError as exc:
            raise translate_anthropic_error(exc, model=model, secrets=self._secrets()) from exc
        return counted.input_tokens

    async def aclose(self) -> None:
        await self._client.close()

    def _secrets(self) -> list[str | None]:
        return [self._client.api_key, self._client.auth_token]


def _system_blocks(shared_context: str) -> list[TextBlockParam]:
    # Anthropic rejects empty text blocks; a probe without a trace simply has no system prompt.
    if not shared_context:
        return []
    return [{"type": "text", "text": shared_context, "cache_control": {"type": "ephemeral"}}]


def _beta_headers(one_million: bool) -> dict[str, str] | None:
    return {"anthropic-beta": ONE_MILLION_CONTEXT_BETA} if one_million else None


def translate_anthropic_error(exc: BaseException, *, model: str, secrets: Iterable[str | None] = ()) -> VendorCallError:
    """Map an `anthropic` SDK exception (after the SDK's own retries) onto the port's error kinds."""
    import anthropic

    secrets = list(secrets)
    if isinstance(exc, anthropic.APITimeoutError):
        return VendorCallError("timeout", "Anthropic request timed out.", secrets=secrets)
    if isinstance(exc, anthropic.APIConnectionError):
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "connection error"
        return VendorCallError("network", f"Could not reach the Anthropic API ({cause}).", secrets=secrets)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return VendorCallError(
            "invalid_output", "Anthropic returned a response the SDK could not parse.", secrets=secrets
        )
    if not isinstance(exc, anthropic.APIStatusError):
        return VendorCallError("server", f"Anthropic call failed ({type(exc).__name__}).", secrets=secrets)

    status = exc.status_code
    detail = exc.api_message or _body_text(exc.body)
    suffix = f" (HTTP {status}): {detail}" if detail else f" (HTTP {status})."
    retry_after = parse_retry_after(exc.response.headers)

    def error(kind: VendorErrorKind, message: str) -> VendorCallError:
        return VendorCallError(kind, message + suffix, retry_after=retry_after, status=status, secrets=secrets)

    if status in (401, 403):
        return error("auth", "Anthropic rejected the API key")
    if status == 402:
        return error("auth", "Anthropic refused the request for billing reasons")
    if status == 404:
        return error("model_not_found", f"Anthropic has no model {model!r} (or the base URL is wrong)")
    if status == 429:
        return error("rate_limited", "Anthropic rate limit reached after retries")
    if status == 529 or exc.type == "overloaded_error":
        return error("overloaded", "Anthropic is overloaded")
    if status == 408:
        return error("timeout", "Anthropic timed out the request")
    if status == 413 or (status == 400 and any(m in detail.lower() for m in _CONTEXT_OVERFLOW_MARKERS)):
        return error("context_overflow", "The prompt does not fit the model's context window")
    if status >= 500:
        return error("server", "Anthropic server error")
    return error("bad_request", "Anthropic rejected the request")


def _body_text(body: object) -> str:
    if isinstance(body, str):
        return body[:200]
    return ""
