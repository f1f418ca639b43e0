"""Reading the limit a vendor states in its "prompt too long" refusal, and the window a run assumes."""

from __future__ import annotations

import pytest

from chalicelib.domain.context_limits import (
    StatedLimit,
    assumed_window,
    context_limit_sk,
    is_context_overflow_message,
    parse_stated_limit,
)


@pytest.mark.parametrize(("message", "stated"), [
    ("prompt is too long: 278113 tokens > 200000 maximum", StatedLimit(200_000, 278_113)),
    ("Prompt is too long: 1280512 tokens > 1000000 maximum", StatedLimit(1_000_000, 1_280_512)),
    ("input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000, decrease input length or "
     "`max_tokens` and try again", StatedLimit(200_000, 188_240)),
    ("This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens. "
     "Please reduce the length of the messages.", StatedLimit(128_000, 130_512)),
    ("This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (8000 in the "
     "messages, 1000 in the completion). Please reduce the length of the messages or completion.",
     StatedLimit(8_192, 8_000)),
    ("litellm.ContextWindowExceededError: maximum context length is 32768 tokens", StatedLimit(32_768, None)),
])
def test_each_vendors_refusal_states_its_limit(message: str, stated: StatedLimit) -> None:
    assert is_context_overflow_message(message)
    assert parse_stated_limit(message) == stated


@pytest.mark.parametrize("message", [
    "Prompt is too long",  # the claude CLI: no numbers
    "Your input exceeds the context window of this model. Please adjust your input and try again.",  # codex
    "prompt is too long: many tokens > 0 maximum",
    "prompt is too long: 12 tokens > 0 maximum",
    "maximum context length is 99999999999999 tokens",  # past 9 digits: not a number we trust
])
def test_a_refusal_without_a_usable_number_states_nothing(message: str) -> None:
    assert parse_stated_limit(message) is None


def test_other_errors_are_not_overflows() -> None:
    assert not is_context_overflow_message("Invalid API key.")
    assert parse_stated_limit("Rate limit exceeded: 429 tokens > 100 maximum per minute") is None


def test_hostile_messages_are_read_in_linear_time_and_bounded_length() -> None:
    hostile = "prompt is too long: " + "9" * 50_000 + " tokens > " + "1 " * 50_000
    assert parse_stated_limit(hostile) is None


def test_the_assumed_window_prefers_an_override_then_a_learned_limit_then_the_table() -> None:
    assert assumed_window("claude-sonnet-4-6").source == "known"
    assert assumed_window("claude-sonnet-4-6").tokens == 200_000
    assert assumed_window("claude-sonnet-4-6", learned=90_000) == assumed_window("x", learned=90_000)
    assert assumed_window("claude-sonnet-4-6", learned=90_000).source == "learned"
    assert assumed_window("claude-sonnet-4-6", learned=90_000, override=50_000).source == "override"
    unknown = assumed_window("acme-internal-llm")
    assert unknown.source == "default" and unknown.tokens == 128_000


def test_the_item_key_separates_base_urls_and_models() -> None:
    keys = {context_limit_sk("openai", base_url, model) for base_url in (None, "https://a.example/v1",
                                                                          "https://b.example/v1")
            for model in ("gpt-4.1", "gpt-4o")}
    assert len(keys) == 6 and all(k.startswith("CTXLIMIT#openai#") for k in keys)
