"""Context limits: the one a vendor states when it refuses a prompt as too long, the window the runner
assumes per model, and the learned limits it remembers per (tenant, vendor, base_url, model).

Pure. Gateways, regional deployments and custom model names make the real limit differ from the
model's published window; the vendor says the real one in its refusal, so the runner parses it,
refits to it (`chalicelib.services.context_fit`) and remembers it (`CTXLIMIT#…` items,
`chalicelib.adapters.context_limit_store`) so the next run on that model fits before its first call.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from chalicelib.domain.errors import DomainError
from chalicelib.domain.judging import DEFAULT_CONTEXT_WINDOW, known_context_window, matches_known_model

CONTEXT_LIMIT_PREFIX = "CTXLIMIT#"
# A vendor's message is read only this far: the numbers come first in every format we know.
_MAX_MESSAGE_CHARS = 2000
# Each pattern is linear (no nested quantifiers) and the numbers are bounded to 9 digits.
# Anthropic: "prompt is too long: 278113 tokens > 200000 maximum"
_ANTHROPIC_PROMPT = re.compile(r"prompt is too long:\s{0,3}(\d{1,9}) tokens? > (\d{1,9}) maximum", re.I)
# Anthropic, when the output budget is counted in: "input length and `max_tokens` exceed context limit:
# 188240 + 21333 > 200000, decrease input length or `max_tokens` and try again"
_ANTHROPIC_WITH_OUTPUT = re.compile(
    r"exceed context limit:\s{0,3}(\d{1,9})\s{0,3}\+\s{0,3}(\d{1,9})\s{0,3}>\s{0,3}(\d{1,9})", re.I)
# OpenAI (and OpenAI-compatible gateways, vLLM, LiteLLM): "This model's maximum context length is
# 128000 tokens. However, your messages resulted in 130512 tokens." / "... However, you requested
# 140000 tokens (130000 in the messages, 10000 in the completion)."
_OPENAI_LIMIT = re.compile(r"maximum context length is\s{0,3}(\d{1,9})\s{0,3}tokens", re.I)
_OPENAI_MESSAGES = re.compile(r"(\d{1,9}) in the messages", re.I)
_OPENAI_PROMPT = re.compile(r"(?:resulted in|requested)\s{0,3}(\d{1,9})\s{0,3}tokens", re.I)
# Phrases of a "too long" refusal (numbers or not), the vendors' and the CLIs' ("Prompt is too long").
_OVERFLOW_MARKERS = ("prompt is too long", "context window", "context length", "too many tokens",
                     "maximum context length", "exceed context limit", "input is too long",
                     "context_length_exceeded")

WindowSource = Literal["known", "default", "learned", "override"]
LimitSource = Literal["generate", "count_tokens", "cli"]


@dataclass(frozen=True)
class StatedLimit:
    """What a vendor's refusal says: the model's limit and what it counted for the refused prompt."""

    limit_tokens: int
    prompt_tokens: int | None = None


def is_context_overflow_message(message: str) -> bool:
    """A vendor (or CLI) message that refuses the prompt as too long, whether or not it has numbers."""
    text = message[:_MAX_MESSAGE_CHARS].lower()
    return any(marker in text for marker in _OVERFLOW_MARKERS)


def parse_stated_limit(message: str) -> StatedLimit | None:
    """The limit a "too long" refusal states; None when it states no usable number (the caller then
    falls back to shrinking by a fixed step)."""
    text = message[:_MAX_MESSAGE_CHARS]
    if found := _ANTHROPIC_PROMPT.search(text):
        return _stated(int(found.group(2)), int(found.group(1)))
    if found := _ANTHROPIC_WITH_OUTPUT.search(text):
        return _stated(int(found.group(3)), int(found.group(1)))
    if found := _OPENAI_LIMIT.search(text):
        prompt = _OPENAI_MESSAGES.search(text) or _OPENAI_PROMPT.search(text)
        return _stated(int(found.group(1)), int(prompt.group(1)) if prompt else None)
    return None


def _stated(limit: int, prompt: int | None) -> StatedLimit | None:
    if limit <= 0:
        return None
    return StatedLimit(limit_tokens=limit, prompt_tokens=prompt if prompt and prompt > 0 else None)


# ------------------------------------------------------------------------------------ assumed windows


@dataclass(frozen=True)
class AssumedWindow:
    """The window a run fits to before the vendor has said anything, and where it comes from."""

    tokens: int
    source: WindowSource


def assumed_window(model: str, *, learned: int | None = None, override: int | None = None,
                   table: int | None = None) -> AssumedWindow:
    """An override first, then a limit the vendor stated earlier for this (base_url, model), then the
    model table (`table`: the adapter's view of it, else the built-in one); a model name the table does
    not know gets the conservative default (the smallest window among the current frontier models)
    until the vendor states its real limit."""
    if override:
        return AssumedWindow(override, "override")
    if learned:
        return AssumedWindow(learned, "learned")
    if matches_known_model(model):
        return AssumedWindow(table or known_context_window(model), "known")
    return AssumedWindow(DEFAULT_CONTEXT_WINDOW, "default")


# ------------------------------------------------------------------------------------ remembered limits


def context_limit_sk(vendor: str, base_url: str | None, model: str) -> str:
    """`CTXLIMIT#<vendor>#<base_url digest>#<model>`: one item per (vendor, base_url, model) of a tenant.
    The base URL is hashed (it may be long); the item keeps it in clear for the admin's view."""
    digest = hashlib.sha256((base_url or "").encode()).hexdigest()[:16]
    return f"{CONTEXT_LIMIT_PREFIX}{vendor}#{digest}#{model}"


class LearnedContextLimit(BaseModel):
    """A context limit a vendor stated for a model behind a base URL (null: the vendor's own API)."""

    # Built on first use (`defer_build`): the worker's and the admin view's, never dispatch's (bench/coldstart).
    model_config = ConfigDict(defer_build=True, frozen=True)

    vendor: str
    model: str
    base_url: str | None = None
    limit_tokens: int
    stated_prompt_tokens: int | None = None
    source: LimitSource = "generate"
    learned_at: str
    eval_run_id: str | None = None


class ContextTooSmall(DomainError):
    """The vendor's stated limit leaves no room: the fixed prompt (instructions, question and output
    budget) alone exceeds it, or the trace cannot be shrunk any further."""

    status = 422
    code = "context_too_small"
