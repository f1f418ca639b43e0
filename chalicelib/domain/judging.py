"""The vendor-neutral judge port: what one judge call sends and gets back, how vendors fail, and model facts.

Pure (no SDK imports). Adapters in `chalicelib.adapters.anthropic_judge` / `openai_judge` implement
`JudgeModel`; the worker and the test-connection service depend only on this module.

The call is split so the vendors' prompt caches can work (reference §8.4, 13x input cost): the big
`shared_context` (the compacted trace, identical for every question of a run) goes first and is
marked cacheable, the short per-question `prompt` follows it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from chalicelib.domain.evaluation import TokenUsage

if TYPE_CHECKING:
    from chalicelib.domain.context_limits import StatedLimit

VendorErrorKind = Literal[
    # the contract's test-connection kinds
    "auth",
    "model_not_found",
    "rate_limited",
    "network",
    "invalid_output",
    # internal kinds (the worker decides per kind whether a question is retried, failed or the run stops)
    "context_overflow",
    "overloaded",
    "server",
    "timeout",
    "bad_request",
]
PublicVendorErrorKind = Literal["auth", "model_not_found", "rate_limited", "network", "invalid_output"]

VENDOR_ERROR_KINDS: frozenset[str] = frozenset(get_args(VendorErrorKind))
# Transient kinds: the SDK already retried them with backoff; a later attempt (requeue) may succeed.
TRANSIENT_ERROR_KINDS: frozenset[str] = frozenset({"rate_limited", "overloaded", "server", "timeout", "network"})
# Kinds that will fail every question of the run the same way: stop instead of burning 13 calls.
RUN_FATAL_ERROR_KINDS: frozenset[str] = frozenset({"auth", "model_not_found"})

_PUBLIC_KIND: dict[str, PublicVendorErrorKind] = {
    "auth": "auth",
    "model_not_found": "model_not_found",
    "rate_limited": "rate_limited",
    "overloaded": "rate_limited",
    "network": "network",
    "timeout": "network",
    "server": "network",
    "invalid_output": "invalid_output",
    "context_overflow": "invalid_output",
    "bad_request": "invalid_output",
}

MAX_ERROR_MESSAGE_CHARS = 300
CHARS_PER_TOKEN = 4.0

DEFAULT_CONTEXT_WINDOW = 128_000
_ONE_MILLION_SUFFIX = "[1m]"
# (pattern on the lower-cased model name, window); first match wins.
_CONTEXT_WINDOWS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"^(claude-.*|sonnet|opus|haiku)\[1m\]$"), 1_000_000),
    (re.compile(r"^(claude-|sonnet$|opus$|haiku$)"), 200_000),
    (re.compile(r"^gpt-4\.1"), 1_047_576),
    (re.compile(r"^gpt-4o"), 128_000),
    (re.compile(r"^gpt-5"), 400_000),
    (re.compile(r"^o\d"), 200_000),
)

_KEY_SHAPES = re.compile(
    r"(?i:x-api-key|api[_-]?key|authorization)\s*[:=]\s*(?:(?i:bearer)\s+)?\S+"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{6,}"
    r"|(?i:sk-)[A-Za-z0-9_\-]{6,}"
)
# Characters keys are made of; a maximal run of them is one token for `scrub_secrets`.
_KEY_TOKEN = re.compile(r"[A-Za-z0-9_\-.+/=~]+")
# A token sharing this many consecutive characters with a secret is treated as a piece of it.
SECRET_FRAGMENT_CHARS = 8
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the judge may call: its name, what it does, and its parameters' JSON schema (strict-mode shape:
    every property required, `additionalProperties: false`)."""

    name: str
    description: str
    parameters: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """One tool call in a judge's answer. `arguments` is None when the vendor sent arguments that are not
    JSON (OpenAI sends them as a string); the tool then answers with an error the judge can read."""

    call_id: str
    name: str
    arguments: Any = field(hash=False)
    # The arguments exactly as the vendor sent them, echoed back in the next round (OpenAI: a JSON string).
    raw_arguments: str = ""


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    """Our answer to one tool call (JSON text for the judge)."""

    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ToolRound:
    """One round of a tool-using judge: its answer's text and tool calls, and our results for every call."""

    text: str
    calls: tuple[ToolCallRequest, ...]
    results: tuple[ToolResultBlock, ...]


ToolChoice = Literal["auto", "none"]


@dataclass(frozen=True, slots=True)
class JudgeCall:
    """One structured-output request to a judge model.

    `shared_context` is the cacheable prefix (the trace), byte-identical across a run's questions;
    `prompt` the per-question suffix. `timeout_seconds` bounds the whole call including the SDK's
    retries (derived by the caller from the run deadline). `cache_key` is per run (OpenAI
    `prompt_cache_key`, routing all of a run's calls to the same prefix cache).

    Tool use: `tools` are offered (identical on every call of a run that has any, since both vendors put
    them before the system prompt in the cached prefix), `tool_choice="none"` forbids calling them on this
    call, and `rounds` are the conversation so far (each a tool-using answer and our results), sent after
    `prompt`. One `judge` call is one request round; the caller runs the loop.
    """

    model: str
    shared_context: str
    prompt: str
    response_schema: dict[str, Any] = field(hash=False)
    schema_name: str = "judge_verdict"
    max_output_tokens: int = 2048
    cache_key: str | None = None
    timeout_seconds: float = 300.0
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = "auto"
    rounds: tuple[ToolRound, ...] = ()

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("JudgeCall.model must be non-empty")
        if not self.prompt.strip():
            raise ValueError("JudgeCall.prompt must be non-empty")
        if self.max_output_tokens <= 0:
            raise ValueError("JudgeCall.max_output_tokens must be positive")
        if not self.timeout_seconds > 0:
            raise ValueError("JudgeCall.timeout_seconds must be positive")
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", self.schema_name):
            raise ValueError("JudgeCall.schema_name must be 1-64 of [A-Za-z0-9_-] (OpenAI's rule)")
        if self.rounds and not self.tools:
            raise ValueError("JudgeCall.rounds need the tools they called")
        for tool_round in self.rounds:
            if [c.call_id for c in tool_round.calls] != [r.call_id for r in tool_round.results]:
                raise ValueError("every tool call of a round needs exactly one result, in order")


@dataclass(frozen=True, slots=True)
class JudgeReply:
    """The judge's raw text (parsed and validated by `chalicelib.judges`, not here) and its accounting.

    `stop_reason` is the vendor's, normalised: "end_turn", "max_tokens" (output truncated), "refusal",
    "tool_use" (the answer is `tool_calls`), or the raw value. Usage is returned even when the text turns
    out unusable, so tokens are never lost.
    """

    text: str
    usage: TokenUsage
    latency_ms: int
    model: str
    request_id: str | None
    stop_reason: str | None = None
    tool_calls: tuple[ToolCallRequest, ...] = ()


class VendorCallError(Exception):
    """A judge call failed. `message` is sanitised: no API key, no request headers, bounded length."""

    def __init__(
        self,
        kind: VendorErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        secrets: Iterable[str | None] = (),
        stated_limit: StatedLimit | None = None,
    ) -> None:
        if kind not in VENDOR_ERROR_KINDS:
            raise ValueError(f"unknown vendor error kind {kind!r}")
        clean = sanitize_vendor_message(message, secrets=secrets)
        super().__init__(clean)
        self.kind: VendorErrorKind = kind
        self.message = clean
        self.retry_after = retry_after
        self.status = status
        # context_overflow only: the limit the vendor stated (parsed before the message was bounded).
        self.stated_limit = stated_limit

    @property
    def public_kind(self) -> PublicVendorErrorKind:
        """The contract's test-connection vocabulary (internal kinds folded into the closest one)."""
        return _PUBLIC_KIND[self.kind]

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_ERROR_KINDS

    def __repr__(self) -> str:
        return f"VendorCallError(kind={self.kind!r}, status={self.status!r}, message={self.message!r})"


FirstToken = Callable[[], None]


class JudgeModel(Protocol):
    """A vendor's judge endpoint. Implementations translate every vendor failure into `VendorCallError`."""

    async def judge(self, call: JudgeCall, *, on_first_token: FirstToken | None = None) -> JudgeReply:
        """One structured answer. With `on_first_token` the answer is streamed and the callback runs once,
        when the response begins (the moment the vendor's prompt cache holds the call's prefix)."""
        ...

    async def count_tokens(self, model: str, shared_context: str, prompt: str) -> int | None:
        """Exact input tokens of the call; None when the vendor has no count API (use `estimate_tokens`)."""
        ...

    def context_window(self, model: str) -> int: ...

    async def aclose(self) -> None: ...


def known_context_window(model: str) -> int:
    """Input window of a model id/alias; `[1m]` variants of Claude models get 1M; unknown → 128K."""
    name = model.strip().lower()
    for pattern, window in _CONTEXT_WINDOWS:
        if pattern.search(name):
            return window
    return DEFAULT_CONTEXT_WINDOW


def matches_known_model(model: str) -> bool:
    """Whether the built-in window table knows this model id/alias (else its window is a default)."""
    name = model.strip().lower()
    return any(pattern.search(name) for pattern, _ in _CONTEXT_WINDOWS)


def split_one_million_suffix(model: str) -> tuple[str, bool]:
    """`claude-sonnet-4-6[1m]` → (`claude-sonnet-4-6`, True): a CLI alias suffix, not an API model id."""
    if model.lower().endswith(_ONE_MILLION_SUFFIX):
        return model[: -len(_ONE_MILLION_SUFFIX)], True
    return model, False


def estimate_tokens(text: str) -> int:
    """Estimate for vendors without a count API: ceil(chars / 4) (the local fake uses the same rule)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the vendor asked us to wait (`retry-after-ms` preferred, then `retry-after` seconds)."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return None


def scrub_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without any trace of `secrets` or of key-shaped tokens, whatever the vendor did to them.

    A vendor may echo a key upper- or lower-cased, or cut (its own truncation, or a caller's), so
    matching the exact key is not enough: every token (a run of key characters) that shares
    `SECRET_FRAGMENT_CHARS` consecutive characters with a secret, in any case, is removed whole.
    Linear in the text: one pass over its tokens, a set lookup per window.
    """
    fragments: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= 4:
            lowered = secret.lower()
            width = min(SECRET_FRAGMENT_CHARS, len(lowered))
            fragments.update(lowered[i:i + width] for i in range(len(lowered) - width + 1))
    widths = {len(f) for f in fragments}

    def token(match: re.Match[str]) -> str:
        value = match.group().lower()
        for width in widths:
            if any(value[i:i + width] in fragments for i in range(len(value) - width + 1)):
                return "[redacted]"
        return match.group()

    if fragments:
        text = _KEY_TOKEN.sub(token, text)
    return _KEY_SHAPES.sub("[redacted]", text)


def sanitize_vendor_message(message: str, *, secrets: Iterable[str | None] = ()) -> str:
    """Vendor text made safe to store and show: secrets (any case, any cut) and key-shaped tokens
    removed first, then one line, then bounded, so truncation can never leave a piece of a key."""
    text = scrub_secrets(message, secrets)
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) > MAX_ERROR_MESSAGE_CHARS:
        text = text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    return text
