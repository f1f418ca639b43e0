"""OpenAI Chat Completions answers: the completion object and its chunks."""

from __future__ import annotations

import time
from typing import Any

from devstack.fake_vendor.wire import _chunks_of, _sse


def _openai_completion(model: str, text: str, usage: dict[str, int], output_tokens: int) -> Any:
    prompt_tokens = usage["input_tokens"] + usage["cache_read_input_tokens"]
    return {
        "id": f"chatcmpl-fake{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": prompt_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage["cache_read_input_tokens"], "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake_vendor",
    }


def _openai_chunks(completion: dict[str, Any]) -> list[bytes]:
    """Chat Completions streaming: a role chunk, content chunks, the finish chunk, the usage chunk, [DONE]."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"], "system_fingerprint": completion["system_fingerprint"]}
    choice = completion["choices"][0]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(None, {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in _chunks_of(choice["message"]["content"])]
    events.append(chunk({}, choice["finish_reason"]))
    events.append(_sse(None, {**base, "choices": [], "usage": completion["usage"]}))
    events.append(b"data: [DONE]\n\n")
    return events
