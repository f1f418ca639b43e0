"""What the judge-phase benches share (bench/runner, bench/tools, bench/ctxlimit): the local stack's outbound
policy for the fake vendor, the model each vendor is asked for, and RunPorts without AWS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from chalicelib.adapters.outbound_http import OutboundGuard
from chalicelib.domain.base_url import BaseUrlPolicy
from chalicelib.domain.context_limits import StatedLimit
from chalicelib.domain.evaluation import QuestionOutcome, TokenUsage

# The fake vendor listens on 127.0.0.1 over http: the local stack's outbound policy.
LOCAL_OUTBOUND = OutboundGuard(BaseUrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True))

Vendor = Literal["anthropic", "openai"]
MODELS: dict[Vendor, str] = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1"}


class NoAws:
    """RunPorts without AWS: progress writes succeed, nothing is cancelled, keys never rotate; stated
    context limits are kept in memory (what `CTXLIMIT#…` items hold)."""

    def __init__(self, remembered: dict[str, int] | None = None) -> None:
        self.flushes = 0
        self.remembered = remembered if remembered is not None else {}

    async def flush(self, outcomes: Sequence[QuestionOutcome], usage: TokenUsage, context: Any) -> bool:
        self.flushes += 1
        return True

    async def is_cancelled(self) -> bool:
        return False

    async def refresh_model(self) -> Any:
        return None

    async def remember_context_limit(self, stated: StatedLimit, source: str) -> None:
        self.remembered["limit"] = stated.limit_tokens
