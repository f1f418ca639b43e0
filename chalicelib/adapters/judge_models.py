"""Composition of judge models: the only place that constructs the vendor SDK clients (imported lazily)."""

from __future__ import annotations

from chalicelib.domain.evaluation import VendorName
from chalicelib.domain.judging import JudgeModel

ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
CONNECT_TIMEOUT_SECONDS = 5.0


def build_judge_model(
    vendor: VendorName,
    *,
    api_key: str,
    base_url: str | None,
    max_retries: int = 4,
    timeout_seconds: float,
) -> JudgeModel:
    """A judge model for `vendor` whose client retries 408/409/429/5xx and timeouts with the SDK's backoff.

    The SDKs honour `retry-after-ms` / `retry-after` (Anthropic without a cap, OpenAI up to 120 s,
    beyond which it does not retry); otherwise they back off 0.5 s x 2^n (max 8 s, -25% jitter).
    `timeout_seconds` is the per-attempt default; `JudgeCall.timeout_seconds` overrides it per call.
    The base URL is explicit (the vendor's public API when None): environment variables such as
    ANTHROPIC_BASE_URL / OPENAI_BASE_URL are deliberately not consulted.
    """
    if not api_key:
        raise ValueError("an API key is required")
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    if not timeout_seconds > 0:
        raise ValueError("timeout_seconds must be positive")
    connect = min(CONNECT_TIMEOUT_SECONDS, timeout_seconds)
    if vendor == "anthropic":
        import anthropic

        from chalicelib.adapters.anthropic_judge import AnthropicJudgeModel

        return AnthropicJudgeModel(
            anthropic.AsyncAnthropic(
                api_key=api_key,
                base_url=base_url or ANTHROPIC_DEFAULT_BASE_URL,
                max_retries=max_retries,
                timeout=anthropic.Timeout(timeout_seconds, connect=connect),
            )
        )
    if vendor == "openai":
        import openai

        from chalicelib.adapters.openai_judge import OpenAIJudgeModel

        return OpenAIJudgeModel(
            openai.AsyncOpenAI(
                api_key=api_key,
                base_url=base_url or OPENAI_DEFAULT_BASE_URL,
                max_retries=max_retries,
                timeout=openai.Timeout(timeout_seconds, connect=connect),
            )
        )
    raise ValueError(f"unknown judge vendor {vendor!r}")
