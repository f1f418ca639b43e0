"""Composition of judge models: the only place that constructs the vendor SDK clients (imported lazily)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chalicelib.adapters.outbound_http import OutboundGuard
from chalicelib.adapters.vendor_judge import VendorJudgeModel
from chalicelib.coldstart import collection_held
from chalicelib.domain.base_url import BaseUrlPolicy
from chalicelib.domain.evaluation import VendorName
from chalicelib.domain.judging import JudgeModel
from chalicelib.domain.rate_limit import VendorCallGate

ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
CONNECT_TIMEOUT_SECONDS = 5.0
# The generate endpoints, which the vendors' request limits count (token counting has its own limit).
_GATED_PATH_SUFFIXES = ("/messages", "/chat/completions")
# Without a stage policy: public HTTPS on 443 only (the vendors' own APIs pass; nothing internal does).
STRICT_OUTBOUND = OutboundGuard(BaseUrlPolicy())


def build_judge_model(
    vendor: VendorName,
    *,
    api_key: str,
    base_url: str | None,
    max_retries: int = 4,
    timeout_seconds: float,
    gate: VendorCallGate | None = None,
    outbound: OutboundGuard = STRICT_OUTBOUND,
) -> JudgeModel:
    """A judge model for `vendor` whose client retries 408/409/429/5xx and timeouts with the SDK's backoff.

    The SDKs honour `retry-after-ms` / `retry-after` (Anthropic without a cap, OpenAI up to 120 s,
    beyond which it does not retry); otherwise they back off 0.5 s x 2^n (max 8 s, -25% jitter).
    `timeout_seconds` is the per-attempt default; `JudgeCall.timeout_seconds` overrides it per call.
    The base URL is explicit (the vendor's public API when None): environment variables such as
    ANTHROPIC_BASE_URL / OPENAI_BASE_URL are deliberately not consulted.

    `gate` (the fleet's rate limiter) wraps every HTTP attempt of a generate call, the SDK's retries
    included: it runs as the SDK's httpx event hooks, inside the SDK's retry loop.

    `outbound` (the stage's guard, `Container.outbound_guard`) builds the SDK's HTTP client: every
    connection, redirects included, is resolved and checked against the stage's base-URL policy and
    pinned to the checked address, and the client talks to the base URL's origin only (see
    `chalicelib.adapters.outbound_http`). The default is the strict policy: public HTTPS on port 443.
    """
    client = build_vendor_client(vendor, api_key=api_key, base_url=base_url, max_retries=max_retries,
                                 timeout_seconds=timeout_seconds, outbound=outbound,
                                 event_hooks=gate_hooks(gate) if gate else {})
    adapter: type[VendorJudgeModel]
    if vendor == "anthropic":
        from chalicelib.adapters.anthropic_judge import AnthropicJudgeModel

        adapter = AnthropicJudgeModel
    else:
        from chalicelib.adapters.openai_judge import OpenAIJudgeModel

        adapter = OpenAIJudgeModel
    return adapter(client)


def build_vendor_client(
    vendor: VendorName,
    *,
    api_key: str,
    base_url: str | None,
    max_retries: int,
    timeout_seconds: float,
    outbound: OutboundGuard = STRICT_OUTBOUND,
    event_hooks: dict[str, list[Callable[[Any], Awaitable[None]]]] | None = None,
) -> Any:
    """The vendor's async SDK client (`AsyncAnthropic` / `AsyncOpenAI`) behind the outbound guard: what
    judge models and the vendor batch APIs (`adapters/vendor_batches.py`) are built on."""
    if not api_key:
        raise ValueError("an API key is required")
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    if not timeout_seconds > 0:
        raise ValueError("timeout_seconds must be positive")
    connect = min(CONNECT_TIMEOUT_SECONDS, timeout_seconds)
    sdk: Any
    client_class: Any
    if vendor == "anthropic":
        with collection_held():  # most of a second of imports, none of it garbage (chalicelib/coldstart.py)
            import anthropic

        sdk, client_class, default_url = anthropic, anthropic.AsyncAnthropic, ANTHROPIC_DEFAULT_BASE_URL
    elif vendor == "openai":
        with collection_held():
            import openai

        sdk, client_class, default_url = openai, openai.AsyncOpenAI, OPENAI_DEFAULT_BASE_URL
    else:
        raise ValueError(f"unknown judge vendor {vendor!r}")
    url = base_url or default_url
    return client_class(
        api_key=api_key, base_url=url, max_retries=max_retries, timeout=sdk.Timeout(timeout_seconds, connect=connect),
        http_client=sdk.DefaultAsyncHttpxClient(transport=outbound.async_transport(url), trust_env=False,
                                                event_hooks=event_hooks or {}))


def gate_hooks(gate: VendorCallGate) -> dict[str, list[Callable[[Any], Awaitable[None]]]]:
    """httpx event hooks (they run once per attempt) that hold each generate request for the gate and
    report each answer to it."""

    def gated(path: str) -> bool:
        return path.endswith(_GATED_PATH_SUFFIXES)

    async def on_request(request: Any) -> None:
        if gated(request.url.path):
            await gate.before_send()

    async def on_response(response: Any) -> None:
        if gated(response.request.url.path):
            await gate.after_response(response.status_code, response.headers)

    return {"request": [on_request], "response": [on_response]}
