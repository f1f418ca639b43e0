"""OpenAI Chat Completions adapter for the judge port: cache-friendly messages, strict json_schema, function
calling, streaming, errors.

The trace is the first (system) message and the question follows it (then any tool rounds: the assistant's
`tool_calls`, our `tool` answers), so OpenAI's automatic prefix cache hits for every judge after the first;
`prompt_cache_key` (one per run) routes a run's calls to the same cache. A streamed call
(`stream_options.include_usage`, so the usage still arrives, in the last chunk) reports its first chunk to
the caller, who can fan the other judges out then.
Usage mapping: `input_tokens` = prompt tokens NOT served from cache,
`cache_read_input_tokens` = `prompt_tokens_details.cached_tokens`, `cache_creation_input_tokens` =
`prompt_tokens_details.cache_write_tokens` (OpenAI reports none today, so 0); the three add up to
`prompt_tokens`. OpenAI has no token-count API: `count_tokens` returns None and callers use
`chalicelib.domain.judging.estimate_tokens`. `openai` is imported only inside functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.adapters.vendor_judge import VendorJudgeModel, Verdict
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.json_depth import loads_bounded
from chalicelib.domain.judging import FirstToken, JudgeCall, JudgeReply, ToolCallRequest

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.completion_usage import CompletionUsage

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use"}


class OpenAIJudgeModel(VendorJudgeModel):
    """`JudgeModel` over `openai.AsyncOpenAI`."""

    vendor = "openai"
    label = "OpenAI"
    sdk_error = "OpenAIError"

    def _params(self, call: JudgeCall) -> dict[str, Any]:
        import openai

        messages: list[ChatCompletionMessageParam] = []
        if call.shared_context:
            messages.append({"role": "system", "content": call.shared_context})
        messages.append({"role": "user", "content": call.prompt})
        for tool_round in call.rounds:
            messages.append({"role": "assistant", "content": tool_round.text or None, "tool_calls": [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.raw_arguments}}
                for c in tool_round.calls]})
            messages += [{"role": "tool", "tool_call_id": r.call_id, "content": r.content} for r in tool_round.results]
        params: dict[str, Any] = {
            "model": call.model, "messages": messages,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": call.schema_name, "schema": call.response_schema, "strict": True}},
            "max_completion_tokens": call.max_output_tokens,
            "prompt_cache_key": call.cache_key if call.cache_key else openai.omit,
            "timeout": call.timeout_seconds}
        if call.tools:
            params["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                                 "parameters": t.parameters, "strict": True}}
                               for t in call.tools]
            params["tool_choice"] = call.tool_choice
        return params

    async def _send(self, call: JudgeCall, on_first_token: FirstToken | None) -> JudgeReply:
        params = self._params(call)
        if on_first_token is None:
            completion = await self._client.chat.completions.create(**params)
            text, stop_reason = "", None
            calls: tuple[ToolCallRequest, ...] = ()
            if completion.choices:
                choice = completion.choices[0]
                text = choice.message.content or ""
                stop_reason = "refusal" if choice.message.refusal else _STOP_REASONS.get(choice.finish_reason)
                calls = tuple(_tool_call(c.id, c.function.name, c.function.arguments)
                              for c in choice.message.tool_calls or () if c.type == "function")
            return JudgeReply(text=text, usage=usage_from_openai(completion.usage), latency_ms=0,
                              model=completion.model, request_id=completion._request_id, stop_reason=stop_reason,
                              tool_calls=calls)
        stream = await self._client.chat.completions.create(**params, stream=True,
                                                            stream_options={"include_usage": True})
        parts: list[str] = []
        # Streamed tool calls arrive in pieces keyed by their index: id and name first, arguments in chunks.
        pending: dict[int, dict[str, str]] = {}
        model, finish, refused, usage = call.model, None, False, None
        async with stream:
            async for chunk in self._first_event(stream, on_first_token):
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    parts.append(choice.delta.content or "")
                    refused = refused or bool(choice.delta.refusal)
                    finish = choice.finish_reason or finish
                    for delta in choice.delta.tool_calls or ():
                        piece = pending.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                        piece["id"] = delta.id or piece["id"]
                        if delta.function is not None:
                            piece["name"] += delta.function.name or ""
                            piece["arguments"] += delta.function.arguments or ""
        calls = tuple(_tool_call(p["id"], p["name"], p["arguments"]) for _, p in sorted(pending.items()))
        return JudgeReply(text="".join(parts), usage=usage_from_openai(usage), latency_ms=0, model=model,
                          request_id=stream.response.headers.get("x-request-id"),
                          stop_reason="refusal" if refused else _STOP_REASONS.get(finish or ""), tool_calls=calls)

    def _detail(self, exc: Any) -> str:
        # `exc.message` embeds the whole body; the SDK hands us the `error` object as `body`.
        detail = exc.body.get("message") if isinstance(exc.body, dict) else None
        return detail if isinstance(detail, str) else ""

    def _vendor_verdict(self, status: int, exc: Any, detail: str, model: str) -> Verdict | None:
        code = exc.code or ""
        if code == "model_not_found":
            return "model_not_found", f"OpenAI has no model {model!r} (or the base URL is wrong)"
        if status == 429 and code == "insufficient_quota":
            return "auth", "OpenAI refused the key: quota exhausted"
        if code == "context_length_exceeded":
            return "context_overflow", "The prompt does not fit the model's context window"
        if status in (503, 529):
            return "overloaded", "OpenAI is overloaded"
        return None


def _tool_call(call_id: str, name: str, raw: str) -> ToolCallRequest:
    """A function call with its JSON arguments parsed (depth-bounded); arguments that do not parse are None,
    which the tool answers with an error the judge can read."""
    try:
        arguments: Any = loads_bounded(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        arguments = None
    return ToolCallRequest(call_id=call_id, name=name, arguments=arguments, raw_arguments=raw)


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
