"""The judge phase's tuning knobs (`RunnerTuning`), apart from the judge session so that the API's spend
estimate reads them without loading the worker's asyncio judge code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from chalicelib.services.context_fit import DEFAULT_MIN_THRESHOLD


@dataclass(frozen=True)
class RunnerTuning:
    """Knobs of the judge phase. Defaults come from bench/runner (see bench/RESULTS.md)."""

    # A run's judges in flight at most. Every pending question goes out in one wave at the warm-up's
    # first token (a tenant catalog has up to 53 questions), so a run takes about TTFT + L whatever its
    # size; the vendor's per-key rate limit (the fleet's gate) is the real ceiling, and this cap only
    # bounds one worker's open connections.
    concurrency: int = 64
    # "first": one judge alone writes the prompt cache (streamed), and the rest fan out as soon as its
    # answer begins, when the vendor's cache holds the prefix; "whole": they wait for its whole answer
    # (the earlier schedule, TTFT + 2 L; kept as bench/runner's baseline); "none": everything at once
    # (every judge that starts before the first answer begins pays a cache write).
    warm_up: Literal["first", "whole", "none"] = "first"
    # Never wait longer than this for the warm-up judge: a slow or hung first judge must not eat the run.
    warm_up_share: float = 0.25
    warm_up_max_seconds: float = 90.0
    progress_flush_seconds: float = 1.0
    cancel_poll_seconds: float = 1.0
    max_output_tokens: int = 2048
    retrospective: bool = True
    retrospective_min_seconds: float = 5.0
    min_threshold_bytes: int = DEFAULT_MIN_THRESHOLD
    estimate_safety: float = 1.1
    # The per-call timeout is the time left plus this slack, so at the deadline the run's own
    # cancellation (question marked timed_out) wins over the SDK timeout (question failed).
    call_timeout_slack_seconds: float = 0.5
    # A 429 that outlasts the SDK's retries waits (its retry-after, else the backoff below) and is asked
    # again while the run has time: only the deadline (or a cancel) ends a rate-limited question.
    # False restores the SDK-retries-only behaviour (the rate-limit benchmark's baseline).
    retry_rate_limited: bool = True
    rate_limit_backoff_seconds: float = 1.0
    # Refits after the vendor refused the shared context as too long (each to the limit it states, or a
    # quarter smaller when it states none); past this the run fails with context_too_small.
    max_context_refits: int = 3
    # Context windows for models the built-in table does not know (or knows wrong).
    context_window_overrides: Mapping[str, int] = field(default_factory=dict)
