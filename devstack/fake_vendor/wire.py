"""Both wire formats: reading a generate/count request into what the fake needs, and framing streamed answers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devstack.fake_vendor.errors import _bad_request
from devstack.fake_vendor.options import Vendor, estimate_tokens
from devstack.fake_vendor.tools import (
    ToolTurns,
    block_texts,
)


@dataclass
class _Parsed:
    """What the fake needs from one generate/count request, vendor-neutral."""

    vendor: Vendor
    model: str
    blocks: list[tuple[str, dict[str, Any] | None]]  # (text, cache_control) in prompt order
    prompt: str  # text of the last user message
    schema: dict[str, Any] | None
    schema_name: str | None
    max_tokens: int | None
    cache_key: str | None
    one_million_beta: bool
    top_level_cache_control: bool = False
    stream: bool = False
    tools: ToolTurns = field(default_factory=ToolTurns)

    @property
    def total_tokens(self) -> int:
        return sum(estimate_tokens(text) for text, _ in self.blocks)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_text(content: Any) -> list[tuple[str, dict[str, Any] | None]]:
    if isinstance(content, str):
        return [(content, None)]
    blocks: list[tuple[str, dict[str, Any] | None]] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                cc = block.get("cache_control")
                blocks.append((block["text"], cc if isinstance(cc, dict) else None))
            elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result"):
                blocks.extend(block_texts("anthropic", {"content": [block]}))
    return blocks


def _has_text(content: Any) -> bool:
    """A user turn that says something (the question), as opposed to one that only returns tool results."""
    return isinstance(content, str) or (isinstance(content, list) and any(
        isinstance(b, dict) and isinstance(b.get("text"), str) for b in content))


def _parse_request(vendor: Vendor, body: dict[str, Any], headers: Mapping[str, str]) -> _Parsed:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad_request(vendor, "model: field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad_request(vendor, "messages: at least one message is required")
    tools = ToolTurns.parse(vendor, body)
    if len(tools.results) != len(tools.calls_made):
        raise _bad_request(vendor, "messages: every tool call needs exactly one tool result in the next turn")
    # Offered tools come first in the prompt (and its cache prefix), before the system prompt, as on both vendors.
    blocks: list[tuple[str, dict[str, Any] | None]] = [(tools.definitions, None)] if tools.definitions else []
    prompt = ""
    if vendor == "anthropic":
        system = body.get("system")
        if system is not None:
            system_blocks = _content_text(system)
            if isinstance(system, list) and any(not text for text, _ in system_blocks):
                raise _bad_request(vendor, "system: text content blocks must be non-empty")
            blocks.extend(system_blocks)
        for message in messages:
            if not isinstance(message, dict):
                raise _bad_request(vendor, "messages: each message must be an object")
            message_blocks = _content_text(message.get("content"))
            if any(not text for text, _ in message_blocks) or not message_blocks:
                raise _bad_request(vendor, "messages: text content blocks must be non-empty")
            blocks.extend(message_blocks)
            if message.get("role") == "user" and _has_text(message.get("content")):
                prompt = "".join(text for text, _ in message_blocks)
        fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
        schema = fmt.get("schema") if isinstance(fmt, dict) else None
        beta = headers.get("anthropic-beta", "")
        return _Parsed(
            vendor=vendor,
            model=model,
            blocks=blocks,
            prompt=prompt,
            schema=schema if isinstance(schema, dict) else None,
            schema_name=None,
            max_tokens=body.get("max_tokens"),
            cache_key=None,
            one_million_beta="context-1m" in beta,
            top_level_cache_control=isinstance(body.get("cache_control"), dict),
            stream=body.get("stream") is True,
            tools=tools,
        )
    for message in messages:
        if not isinstance(message, dict):
            raise _bad_request(vendor, "messages: each message must be an object")
        message_blocks = _content_text(message.get("content")) + block_texts("openai", message)
        joined = "".join(text for text, _ in message_blocks)
        blocks.append((joined, None))
        if message.get("role") == "user":
            prompt = joined
    response_format = body.get("response_format") or {}
    json_schema = response_format.get("json_schema") if isinstance(response_format, dict) else None
    schema = json_schema.get("schema") if isinstance(json_schema, dict) else None
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        schema = {}
    return _Parsed(
        vendor=vendor,
        model=model,
        blocks=blocks,
        prompt=prompt,
        schema=schema if isinstance(schema, dict) else None,
        schema_name=json_schema.get("name") if isinstance(json_schema, dict) else None,
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        cache_key=body.get("prompt_cache_key"),
        one_million_beta=False,
        stream=body.get("stream") is True,
        tools=tools,
    )


@dataclass
class _Stream:
    """A streamed answer: its wire events, and the generation time left after the first one (L - TTFT)."""

    events: list[bytes]
    remaining_seconds: float


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _chunks_of(text: str, size: int = 40) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]
