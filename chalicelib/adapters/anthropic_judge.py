"""Anthropic Messages adapter for the judge port: cached trace prefix, structured output, tool use, streaming,
errors.

The trace goes in the system prompt as one text block marked `cache_control: ephemeral`, so every
judge of a run after the first reads it from Anthropic's prompt cache (reference §8.4); the
question is the user message; the verdict shape is pinned with `output_config.format` json_schema.
Anthropic makes a cache entry readable once the response that writes it has begun, so a streamed
call reports its first event (`message_start`) to the caller, who can fan the other judges out then.
Tool rounds follow the question as assistant tool_use / user tool_result turns (`_round_messages`); a
question that may use tools carries a second breakpoint (`_question_content`).
`anthropic` is imported only inside functions (and for type checking), so importing this module
costs nothing on the API handler's cold start.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from chalicelib.adapters.vendor_judge import COUNT_TOKENS_TIMEOUT_SECONDS, VendorJudgeModel, Verdict
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.judging import (
    FirstToken,
    JudgeCall,
    JudgeReply,
    ToolCallRequest,
    ToolRound,
    split_one_million_suffix,
)

if TYPE_CHECKING:
    from anthropic.types import Message, MessageParam, TextBlockParam

# The `[1m]` model suffix is a Claude Code alias; the API enables the 1M window with this beta header.
ONE_MILLION_CONTEXT_BETA = "context-1m-2025-08-07"


class AnthropicJudgeModel(VendorJudgeModel):
    """`JudgeModel` over `anthropic.AsyncAnthropic`."""

    vendor = "anthropic"
    label = "Anthropic"
    sdk_error = "AnthropicError"

    def _params(self, call: JudgeCall) -> dict[str, Any]:
        import anthropic

        model, one_million = split_one_million_suffix(call.model)
        params: dict[str, Any] = {
            "model": model, "max_tokens": call.max_output_tokens,
            "system": _system_blocks(call.shared_context) or anthropic.omit,
            "messages": [{"role": "user", "content": _question_content(call)}, *_round_messages(call.rounds)],
            "output_config": {"format": {"type": "json_schema", "schema": call.response_schema}},
            "timeout": call.timeout_seconds, "extra_headers": _beta_headers(one_million)}
        if call.tools:
            params["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                               for t in call.tools]
            params["tool_choice"] = {"type": call.tool_choice}
        return params

    async def _send(self, call: JudgeCall, on_first_token: FirstToken | None) -> JudgeReply:
        params = self._params(call)
        if on_first_token is None:
            return _reply(await self._client.messages.create(**params))
        async with self._client.messages.stream(**params) as stream:
            async for _event in self._first_event(stream, on_first_token):
                pass  # the SDK accumulates the message; only the first event's arrival matters here
            return _reply(await stream.get_final_message(), stream.request_id)

    async def count_tokens(self, model: str, shared_context: str, prompt: str) -> int | None:
        import anthropic

        api_model, one_million = split_one_million_suffix(model)
        async with self._vendor_call(model, COUNT_TOKENS_TIMEOUT_SECONDS, "token counting timed out"):
            counted = await self._client.messages.count_tokens(
                model=api_model, system=_system_blocks(shared_context) or anthropic.omit,
                messages=[{"role": "user", "content": prompt}], timeout=COUNT_TOKENS_TIMEOUT_SECONDS,
                extra_headers=_beta_headers(one_million))
        return int(counted.input_tokens)

    def _secrets(self) -> list[str | None]:
        return [self._client.api_key, self._client.auth_token]

    def _detail(self, exc: Any) -> str:
        if exc.api_message:
            return str(exc.api_message)
        # The whole text: `translate` scrubs secrets before anything is cut (a cut key escapes a scrub).
        return exc.body if isinstance(exc.body, str) else ""

    def _vendor_verdict(self, status: int, exc: Any, detail: str, model: str) -> Verdict | None:
        if status == 402:
            return "auth", "Anthropic refused the request for billing reasons"
        if status == 529 or exc.type == "overloaded_error":
            return "overloaded", "Anthropic is overloaded"
        return None


def _round_messages(rounds: tuple[ToolRound, ...]) -> list[MessageParam]:
    """Each tool round as the assistant's tool_use turn and our tool_result turn. The newest round's last
    result carries a cache breakpoint, so the next round reads the conversation so far from the cache (the
    system prompt's breakpoint, the trace, stays the first one)."""
    messages: list[MessageParam] = []
    for index, tool_round in enumerate(rounds):
        said: list[Any] = [{"type": "text", "text": tool_round.text}] if tool_round.text else []
        said += [{"type": "tool_use", "id": c.call_id, "name": c.name,
                  "input": c.arguments if isinstance(c.arguments, dict) else {}} for c in tool_round.calls]
        results: list[Any] = [{"type": "tool_result", "tool_use_id": r.call_id, "content": r.content,
                               "is_error": r.is_error} for r in tool_round.results]
        if index == len(rounds) - 1 and results:
            results[-1]["cache_control"] = {"type": "ephemeral"}
        messages += [{"role": "assistant", "content": said}, {"role": "user", "content": results}]
    return messages


def _question_content(call: JudgeCall) -> str | list[TextBlockParam]:
    """The question turn. A question that may use tools gets its own cache breakpoint: its tool round re-sends
    it, and reading it there (0.1x) after writing it once (1.25x) beats sending it uncached twice (2x) — the
    round's breakpoint on its last result would otherwise write the question again with the round."""
    if call.tools and (call.tool_choice != "none" or call.rounds):
        return [{"type": "text", "text": call.prompt, "cache_control": {"type": "ephemeral"}}]
    return call.prompt


def _reply(message: Message, request_id: str | None = None) -> JudgeReply:
    usage = message.usage
    calls = tuple(ToolCallRequest(call_id=block.id, name=block.name, arguments=block.input,
                                  raw_arguments=json.dumps(block.input, ensure_ascii=False))
                  for block in message.content if block.type == "tool_use")
    return JudgeReply(
        tool_calls=calls,
        text="".join(block.text for block in message.content if block.type == "text"),
        usage=TokenUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                         cache_read_input_tokens=usage.cache_read_input_tokens or 0,
                         cache_creation_input_tokens=usage.cache_creation_input_tokens or 0),
        latency_ms=0, model=message.model, request_id=request_id or message._request_id,
        stop_reason=message.stop_reason)


def _system_blocks(shared_context: str) -> list[TextBlockParam]:
    # Anthropic rejects empty text blocks; a probe without a trace simply has no system prompt.
    if not shared_context:
        return []
    return [{"type": "text", "text": shared_context, "cache_control": {"type": "ephemeral"}}]


def _beta_headers(one_million: bool) -> dict[str, str] | None:
    return {"anthropic-beta": ONE_MILLION_CONTEXT_BETA} if one_million else None

