"""The fake vendor's knobs and rules: global options, scripted behaviours, its tokenizer and window table."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

HOST = "127.0.0.1"


CHARS_PER_TOKEN = 4


DEFAULT_HANG_SECONDS = 3600.0


_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"})


_ANTHROPIC_ALIASES = ("sonnet", "opus", "haiku")


_OPENAI_PREFIXES = ("gpt-", "gpt", "o1", "o3", "o4", "chatgpt", "ft:gpt")


Vendor = Literal["anthropic", "openai"]


Endpoint = Literal["generate", "count_tokens", "any"]


def estimate_tokens(text: str) -> int:
    """The fake's tokenizer: ceil(chars / 4). Callers estimating without a count API use the same rule."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def key_fingerprint(api_key: str) -> str:
    """Non-reversible id of a key, so tests can tell which key a request used without recording it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def context_window_for(model: str, *, one_million_beta: bool = False) -> int:
    """The fake's own window table (deliberately independent of the runner's table)."""
    name = model.lower()
    is_claude = name.removesuffix("[1m]").startswith("claude") or name.removesuffix("[1m]") in _ANTHROPIC_ALIASES
    if is_claude and (name.endswith("[1m]") or one_million_beta):
        return 1_000_000
    if is_claude:
        return 200_000
    if name.startswith("gpt-4.1"):
        return 1_047_576
    if name.startswith("gpt-5"):
        return 400_000
    if re.match(r"^o\d", name):
        return 200_000
    return 128_000


@dataclass
class FakeVendorOptions:
    """Global behaviour, set via `FakeVendor(options=...)`, `.configure(**kw)` or `POST /_fake/options`."""

    latency: float = 0.0  # seconds every generate call takes, L (benchmarks)
    ttft: float | None = None  # seconds to the first token (cache readable, first streamed event); None → L
    rate_limit_per_minute: float | None = None  # token bucket over generate calls; past it → 429
    enforce_context_window: bool = True
    context_windows: dict[str, int] = field(default_factory=dict)  # exact model name → window
    revoked_keys: list[str] = field(default_factory=list)  # besides keys containing "bad"/"revoked"
    allowed_models: list[str] | None = None  # extra accepted models; None → name heuristics only
    cache_ttl_seconds: float = 300.0
    min_cacheable_tokens: int = 0  # real vendors: ~1024; 0 keeps small test traces cacheable
    echo_key_in_errors: bool = False  # ONLY for testing that callers scrub vendor error text
    output_tokens_floor: int = 1


@dataclass
class Rule:
    """One scripted behaviour; `match` is a question id (exact), a substring of the user prompt, or "*"."""

    match: str = "*"
    times: int | None = 1  # None → forever
    vendor: Vendor | None = None
    model: str | None = None
    endpoint: Endpoint = "generate"
    latency: float = 0.0
    status: int | None = None
    retry_after: float | None = None  # seconds; sent as `retry-after-ms` and (ceil) `retry-after`
    should_retry: bool | None = None  # sends `x-should-retry`
    message: str | None = None  # error message override
    error_type: str | None = None
    error_code: str | None = None
    malformed: bool = False
    fenced: bool = False
    wrong_ids: bool = False
    score: int | None = None
    hang: bool = False
    hang_seconds: float = DEFAULT_HANG_SECONDS
    prompt_too_long: bool = False
    text: str | None = None  # raw assistant text override
    # Tool calls to answer with, one per round, before the verdict (see devstack.fake_vendor_tools). A rule
    # applies to each request, and a tool-using question makes one request per round: give it enough `times`.
    tool_calls: list[dict[str, Any]] | None = None
    ignore_tool_choice: bool = False
    id: str = ""
    used: int = 0

    def live(self) -> bool:
        return self.times is None or self.used < self.times

    def applies(self, *, vendor: Vendor, model: str, endpoint: str, question_id: str | None, prompt: str) -> bool:
        if not self.live():
            return False
        if self.vendor is not None and self.vendor != vendor:
            return False
        if self.model is not None and self.model != model:
            return False
        if self.endpoint != "any" and self.endpoint != endpoint:
            return False
        return self.match == "*" or self.match == question_id or self.match in prompt


_RULE_FIELDS = {f.name for f in dataclasses.fields(Rule)} - {"id", "used"}


_OPTION_FIELDS = {f.name for f in dataclasses.fields(FakeVendorOptions)}


def _rule_from(data: Mapping[str, Any]) -> Rule:
    unknown = set(data) - _RULE_FIELDS
    if unknown:
        raise ValueError(f"unknown rule field(s): {sorted(unknown)}; allowed: {sorted(_RULE_FIELDS)}")
    return Rule(**dict(data))
