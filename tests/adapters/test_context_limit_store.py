"""The learned context limits on DynamoDB (moto): one item per (tenant, vendor, base_url, model)."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.context_limit_store import DynamoContextLimitStore
from chalicelib.domain.context_limits import LearnedContextLimit

GATEWAY = "https://gateway.example.com/v1"


def limit(model: str, tokens: int, *, vendor: str = "openai", base_url: str | None = GATEWAY,
          at: str = "2026-12-04T10:00:00.000Z") -> LearnedContextLimit:
    return LearnedContextLimit(vendor=vendor, model=model, base_url=base_url, limit_tokens=tokens,
                               stated_prompt_tokens=tokens + 1000, source="generate", learned_at=at,
                               eval_run_id="evr_1")


def store(aws: Any, now: float = 1_800_000_000.0) -> DynamoContextLimitStore:
    session, resources = aws
    return DynamoContextLimitStore(session.client("dynamodb"), resources.table_name, wall=lambda: now)


def test_a_limit_is_kept_per_base_url_and_model_and_the_latest_statement_wins(aws: Any) -> None:
    limits = store(aws)
    limits.remember("acme", limit("gpt-4.1", 64_000))
    limits.remember("acme", limit("gpt-4.1", 32_000))  # the vendor lowered it again
    limits.remember("acme", limit("gpt-4.1", 128_000, base_url=None))  # the vendor's own API
    limits.remember("globex", limit("gpt-4.1", 8_000))

    got = limits.get("acme", "openai", GATEWAY, "gpt-4.1")
    assert got is not None and got.limit_tokens == 32_000 and got.stated_prompt_tokens == 33_000
    own = limits.get("acme", "openai", None, "gpt-4.1")
    assert own is not None and own.limit_tokens == 128_000 and own.base_url is None
    assert limits.get("acme", "openai", GATEWAY, "gpt-4o") is None
    assert limits.get("acme", "anthropic", GATEWAY, "gpt-4.1") is None
    assert sorted(x.limit_tokens for x in limits.learned("acme")) == [32_000, 128_000]


def test_forget_clears_one_model_or_all_of_a_vendors_limits_of_one_tenant(aws: Any) -> None:
    limits = store(aws)
    limits.remember("acme", limit("gpt-4.1", 64_000))
    limits.remember("acme", limit("gpt-4o", 32_000))
    limits.remember("acme", limit("claude-x", 100_000, vendor="anthropic"))
    limits.remember("globex", limit("gpt-4o", 8_000))

    assert [x.model for x in limits.forget("acme", "openai", model="gpt-4o")] == ["gpt-4o"]
    assert [x.model for x in limits.learned("acme", "openai")] == ["gpt-4.1"]
    assert [x.model for x in limits.forget("acme", "openai")] == ["gpt-4.1"]
    assert [x.model for x in limits.learned("acme")] == ["claude-x"]
    assert [x.model for x in limits.learned("globex")] == ["gpt-4o"]


def test_an_expired_limit_is_not_used_before_ttl_deletion_catches_up(aws: Any) -> None:
    store(aws, now=1_800_000_000.0).remember("acme", limit("gpt-4.1", 64_000))
    later = store(aws, now=1_800_000_000.0 + 31 * 86_400)
    assert later.get("acme", "openai", GATEWAY, "gpt-4.1") is None
    assert later.learned("acme") == []
