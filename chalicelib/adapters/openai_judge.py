"""OpenAI Chat Completions adapter for the judge port: cache-friendly messages, strict json_schema, errors.

The trace is the first (system) message and the question the last, so OpenAI's automatic prefix
cache hits for every judge after the first; `prompt_cache_key` (one per run) routes a run's calls
to the same cache. Usage mapping: `input_tokens` = prompt tokens NOT served from cache,
`cache_read_input_tokens` = `prompt_tokens_details.cached_tokens`, `cache_creation_input_tokens` =
`prompt_tokens_details.cache_write_tokens` (OpenAI reports none today, so 0); the three add up to
`prompt_tokens`. OpenAI has no token-count API: `count_tokens` returns None and callers use
`chalicelib.domain.judging.estimate_tokens`. `openai` is imported only inside functions.
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
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.completion_usage import CompletionUsage

_CONTEXT_OVERFLOW_MARKERS = (
    "maximum context length",
    "context window",
    "too many tokens",
    "prompt is too long",
)
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}


class OpenAIJudgeModel:
    """`JudgeModel` over `openai.AsyncOpenAI` (its retries/backoff/timeouts are configured by the caller)."""

    vendor = "openai"

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    def context_window(self, model: str) -> int:
        return known_context_window(model)

    async def judge(self, call: JudgeCall) -> JudgeReply:
        import openai

        messages: list[ChatCompletionMessageParam] = []
        if call.shared_context:
            messages.append({"role": "system", "content": call.shared_context})
        messages.append({"role": "user", "content": call.prompt})
        started = time.monotonic()
        try:
            # `timeout` is per attempt; the outer bound keeps attempts + backoff inside the deadline.
            async with asyncio.timeout(call.timeout_seconds):
                completion = await self._client.chat.completions.create(
                    model=call.model,
                    messages=messages,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {
                            "name": call.schema_name,
                            "schema": call.response_schema,
                            "strict": True,
                        },
                    },
                    max_completion_tokens=call.max_output_tokens,
                    prompt_cache_key=call.cache_key if call.cache_key else openai.omit,
                    timeout=call.timeout_seconds,
                )
        except TimeoutError as exc:
            raise VendorCallError(
                "timeout", f"OpenAI gave no answer within {call.timeout_seconds:g}s (including retries)."
            ) from exc
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc, model=call.model, secrets=[self._client.api_key]) from exc
        latency_ms = int((time.monotonic() - started) * 1000)

        text = ""
        stop_reason: str | None = None
        if completion.choices:
            choice = completion.choices[0]
            text = choice.message.content or ""
            stop_reason = "refusal" if choice.message.refusal else _STOP_REASONS.get(choice.finish_reason)
        return JudgeReply(
            text=text,
            usage=usage_from_openai(completion.usage),
            latency_ms=latency_ms,
            model=completion.model,
            request_id=completion._request_id,
            stop_reason=stop_reason,
        )

    async def count_tokens(self, model: str, shared_context: str, prompt: str) -> int | None:
        return None

    async def aclose(self) -> None:
        await self._client.close()


def usage_from_openai(usage: CompletionUsage | None) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details else 0
    written = (details.cache_write_tokens or 0) if details else 0
    return TokenUsage(
        input_tokens=max(usage.prompt_tokens - cached - written, 0),
        output_tokens=usage.completion_tokens,
        cache_read_input_tokens=cached,
        cache_creation_input_tokens=written,
    )


def translate_openai_error(exc: BaseException, *, model: str, secrets: Iterable[str | None] = ()) -> VendorCallError:
    """Map an `openai` SDK exception (after the SDK's own retries) onto the port's error kinds."""
    import openai

    secrets = list(secrets)
    if isinstance(exc, openai.APITimeoutError):
        return VendorCallError("timeout", "OpenAI request timed out.", secrets=secrets)
    if isinstance(exc, openai.APIConnectionError):
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "connection error"
        return VendorCallError("network", f"Could not reach the OpenAI API ({cause}).", secrets=secrets)
    if isinstance(exc, openai.APIResponseValidationError):
        return VendorCallError("invalid_output", "OpenAI returned a response the SDK could not parse.", secrets=secrets)
    if not isinstance(exc, openai.APIStatusError):
        return VendorCallError("server", f"OpenAI call failed ({type(exc).__name__}).", secrets=secrets)

    status = exc.status_code
    code = exc.code or ""
    # `exc.message` embeds the whole body; the SDK hands us the `error` object as `body`.
    detail = exc.body.get("message") if isinstance(exc.body, dict) else None
    detail = detail if isinstance(detail, str) else ""
    suffix = f" (HTTP {status}): {detail}" if detail else f" (HTTP {status})."
    retry_after = parse_retry_after(exc.response.headers)

    def error(kind: VendorErrorKind, message: str) -> VendorCallError:
        return VendorCallError(kind, message + suffix, retry_after=retry_after, status=status, secrets=secrets)

    if status in (401, 403):
        return error("auth", "OpenAI rejected the API key")
    if status == 404 or code == "model_not_found":
        return error("model_not_found", f"OpenAI has no model {model!r} (or the base URL is wrong)")
    if status == 429 and code == "insufficient_quota":
        return error("auth", "OpenAI refused the key: quota exhausted")
    if status == 429:
        return error("rate_limited", "OpenAI rate limit reached after retries")
    if status == 408:
        return error("timeout", "OpenAI timed out the request")
    if (
        code == "context_length_exceeded"
        or status == 413
        or (status == 400 and any(m in detail.lower() for m in _CONTEXT_OVERFLOW_MARKERS))
    ):
        return error("context_overflow", "The prompt does not fit the model's context window")
    if status in (503, 529):
        return error("overloaded", "OpenAI is overloaded")
    if status >= 500:
        return error("server", "OpenAI server error")
    return error("bad_request", "OpenAI rejected the request")
