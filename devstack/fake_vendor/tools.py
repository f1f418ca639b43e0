"""Tool use in the FAKE vendor (dev/test only): Anthropic tool_use / tool_result and OpenAI function calling,
deterministic and scriptable, so the real SDKs drive a tool-using judge against `devstack.fake_vendor`.

What a request brings (`ToolTurns.parse`): the tools offered and `tool_choice`, and the conversation's tool
rounds (our judge's earlier calls and the results it got). What the fake answers when tools are offered and
not forbidden (`tool_choice` none), one call per round:
- a rule's `tool_calls` (`[{"name", "arguments"} | {"name", "arguments_raw"}]`, the raw string only on the
  OpenAI wire: arguments that are not JSON), in order, then the verdict (with the rule's
  `ignore_tool_choice`, even when the request forbids tools: a judge that does not stop by itself);
- otherwise, by default, one call: `get_tool_result` of the first output the trace shows truncated (its
  `call_id` is on the marker's entry), or `get_session_summary` when none is, then the verdict.
The verdict cites in `evidence_entries` the positions (`pos`) the latest tool result named, else the first
entry of the trace. Offered tools are part of the cached prompt prefix (first, before the system prompt), as on
both real vendors, so calls with and without tools do not share a cache entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_POS = re.compile(r'"pos":\s*(\d+)')
# A tool result the trace shows as a marker (entries are embedded as JSON, `call_id` just before `output`).
_TRUNCATED_CALL = re.compile(r'"call_id":\s*"([^"]{1,200})",\s*"output":\s*"<truncated:')
# devstack.fake_vendor's server-sent-event encoder: (event name or None, data) → bytes.
Sse = Callable[[str | None, Any], bytes]


@dataclass
class ToolTurns:
    """The tool side of one generate request, vendor-neutral."""

    offered: list[str] = field(default_factory=list)
    definitions: str = ""  # the tools as they enter the prompt prefix
    choice: str = "auto"
    calls_made: list[dict[str, Any]] = field(default_factory=list)  # {"name", "arguments"}
    results: list[str] = field(default_factory=list)  # our judge's tool results, in order

    @property
    def allowed(self) -> bool:
        return bool(self.offered) and self.choice != "none"

    @staticmethod
    def parse(vendor: str, body: Mapping[str, Any]) -> ToolTurns:
        turns = ToolTurns()
        tools = body.get("tools")
        if isinstance(tools, list) and tools:
            names = [t.get("name") if vendor == "anthropic" else (t.get("function") or {}).get("name")
                     for t in tools if isinstance(t, dict)]
            turns.offered = [n for n in names if isinstance(n, str)]
            turns.definitions = json.dumps(tools, sort_keys=True)
        choice = body.get("tool_choice")
        turns.choice = str(choice.get("type", "auto")) if isinstance(choice, dict) else str(choice or "auto")
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if vendor == "anthropic" and isinstance(content, list):
                for block in content:
                    if not isinstance(block, dict):
                        continue
                    if block.get("type") == "tool_use":
                        turns.calls_made.append({"name": block.get("name"), "arguments": block.get("input")})
                    elif block.get("type") == "tool_result":
                        turns.results.append(result_text(block.get("content")))
            elif vendor == "openai":
                for call in message.get("tool_calls") or []:
                    function = call.get("function") or {}
                    turns.calls_made.append({"name": function.get("name"), "arguments": function.get("arguments")})
                if message.get("role") == "tool":
                    turns.results.append(result_text(content))
        return turns

    def next_call(self, scripted: list[dict[str, Any]] | None, *, context: str = "", ignore_choice: bool = False
                  ) -> dict[str, Any] | None:
        """The call to answer with now, or None for the verdict. `ignore_choice`: a judge that calls tools
        even when they are forbidden (to test that the caller's limit holds anyway). By default the judge
        reads the first output the trace (`context`) shows truncated, else asks for the outline: one call."""
        if not self.offered or (self.choice == "none" and not ignore_choice):
            return None
        done = len(self.calls_made)
        if scripted is not None:
            return scripted[done] if done < len(scripted) else None
        if done:
            return None
        truncated = _TRUNCATED_CALL.search(context)
        if truncated is not None and "get_tool_result" in self.offered:
            return {"name": "get_tool_result", "arguments": {"call_id": truncated.group(1)}}
        return {"name": "get_session_summary", "arguments": {}} if "get_session_summary" in self.offered else None

    def cited_positions(self, context: str) -> list[int]:
        """The positions the latest tool result naming any names (at most three), else the trace's first entry."""
        for text in reversed(self.results):
            found = list(dict.fromkeys(int(m.group(1)) for m in _POS.finditer(text)))
            if found:
                return found[:3]
        first = _POS.search(context)
        return [int(first.group(1))] if first else []


def result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def block_texts(vendor: str, message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """The prompt text a tool round contributes (for token counts and the cache prefix), with its
    `cache_control` when the block has one."""
    content = message.get("content")
    out: list[tuple[str, dict[str, Any] | None]] = []
    if vendor == "anthropic" and isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            cc = block.get("cache_control") if isinstance(block.get("cache_control"), dict) else None
            if block.get("type") == "tool_use":
                out.append((json.dumps({"tool_use": block.get("name"), "input": block.get("input")}), cc))
            elif block.get("type") == "tool_result":
                out.append((result_text(block.get("content")) or "(empty)", cc))
    elif vendor == "openai" and message.get("tool_calls"):
        out.append((json.dumps(message["tool_calls"], sort_keys=True), None))
    return out


def arguments_json(call: Mapping[str, Any]) -> str:
    raw = call.get("arguments_raw")
    return raw if isinstance(raw, str) else json.dumps(call.get("arguments") or {})


# ------------------------------------------------------------------------------------- answers


def anthropic_tool_message(model: str, call: Mapping[str, Any], call_id: str, usage: dict[str, int],
                           output_tokens: int, request_id: str) -> dict[str, Any]:
    arguments = call.get("arguments")
    return {
        "id": f"msg_{request_id}", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "tool_use", "id": call_id, "name": call["name"],
                     "input": arguments if isinstance(arguments, dict) else {}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": usage["input_tokens"], "output_tokens": output_tokens,
                  "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                  "cache_read_input_tokens": usage["cache_read_input_tokens"],
                  "cache_creation": {"ephemeral_5m_input_tokens": usage["cache_creation_input_tokens"],
                                     "ephemeral_1h_input_tokens": 0},
                  "service_tier": "standard"},
    }


def anthropic_tool_events(message: dict[str, Any], sse: Sse) -> list[bytes]:
    """Messages streaming of a tool_use answer: the block starts with an empty input, which arrives as
    input_json_delta pieces."""
    usage = message["usage"]
    block = message["content"][0]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    arguments = json.dumps(block["input"])
    events = [sse("message_start", {"type": "message_start", "message": start}),
              sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {**block, "input": {}}})]
    events += [sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "input_json_delta", "partial_json": arguments[i:i + 16]}})
               for i in range(0, len(arguments), 16)]
    events += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
               sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use",
                                                                         "stop_sequence": None},
                                     "usage": {"output_tokens": usage["output_tokens"],
                                               "input_tokens": usage["input_tokens"],
                                               "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                                               "cache_read_input_tokens": usage["cache_read_input_tokens"]}}),
               sse("message_stop", {"type": "message_stop"})]
    return events


def openai_tool_completion(completion: dict[str, Any], call: Mapping[str, Any], call_id: str) -> dict[str, Any]:
    """`completion` (the fake's text answer) turned into a function-call answer."""
    choice = completion["choices"][0]
    message = {"role": "assistant", "content": None, "refusal": None, "annotations": [],
               "tool_calls": [{"id": call_id, "type": "function",
                               "function": {"name": call["name"], "arguments": arguments_json(call)}}]}
    return {**completion, "choices": [{**choice, "message": message, "finish_reason": "tool_calls"}]}


def openai_tool_chunks(completion: dict[str, Any], sse: Sse) -> list[bytes]:
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"], "system_fingerprint": completion["system_fingerprint"]}
    tool_call = completion["choices"][0]["message"]["tool_calls"][0]
    arguments = tool_call["function"]["arguments"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(None, {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": None, "refusal": None,
                     "tool_calls": [{"index": 0, "id": tool_call["id"], "type": "function",
                                     "function": {"name": tool_call["function"]["name"], "arguments": ""}}]})]
    events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i:i + 16]}}]})
               for i in range(0, len(arguments), 16)]
    events.append(chunk({}, "tool_calls"))
    events.append(sse(None, {**base, "choices": [], "usage": completion["usage"]}))
    events.append(b"data: [DONE]\n\n")
    return events
