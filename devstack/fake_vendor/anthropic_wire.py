"""Anthropic Messages answers: the message object and its server-sent events."""

from __future__ import annotations

from typing import Any

from devstack.fake_vendor.wire import _chunks_of, _sse


def _anthropic_message(model: str, text: str, usage: dict[str, int], output_tokens: int, request_id: str) -> Any:
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["input_tokens"],
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage["cache_creation_input_tokens"],
                "ephemeral_1h_input_tokens": 0,
            },
            "service_tier": "standard",
        },
    }


def _anthropic_events(message: dict[str, Any]) -> list[bytes]:
    """Messages streaming: message_start (input usage), one text block in deltas, message_delta, message_stop."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 1}}
    text = message["content"][0]["text"]
    events = [_sse("message_start", {"type": "message_start", "message": start}),
              _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": "", "citations": None}})]
    events += [_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}})
               for piece in _chunks_of(text)]
    events += [_sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
               _sse("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                      "usage": {"output_tokens": usage["output_tokens"],
                                                "input_tokens": usage["input_tokens"],
                                                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                                                "cache_read_input_tokens": usage["cache_read_input_tokens"]}}),
               _sse("message_stop", {"type": "message_stop"})]
    return events
