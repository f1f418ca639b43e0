"""Fleet-wide vendor rate limiting, pure: the shared pacing state of one (tenant, vendor) and its rules.

Every worker Lambda of a tenant sends with the same vendor key, so the vendor's per-key limit is a
fleet property; the state below lives in one DynamoDB item (`chalicelib.adapters.rate_limiter`) and
these functions are the only way it changes (each change is one conditional write).

- **Unpaced until the vendor pushes back.** Until a 429, and again `forget_after_seconds` after the
  last one, calls go out as they come (a run costs a state read per wave of calls, no writes).
- **One 429 pauses the fleet.** A 429 sets `blocked_until` = now + its retry-after; every worker
  waits for it before sending, instead of each one hammering the vendor on its own schedule.
- **Paced at a learned rate (AIMD).** The first 429 starts pacing at an estimate: the vendor's
  advertised requests-per-minute limit when a response header carries it, else the retry-after
  (a token bucket's wait for its next token is about one interval). Calls then reserve send slots
  `interval` apart on a fleet-wide timeline (`next_slot`, the generic cell rate algorithm's
  theoretical arrival time), and every slot reserved shortens the interval by `increase_per_call`
  (probing upwards); a 429 on a call that was paced at the current interval or slower lengthens it
  by 1/`decrease_factor`. A 429 on a call paced faster than the current interval (sent before the
  last decrease) or sent unpaced says nothing new about the current pace and only extends the pause.
  When pacing lapses the interval is kept, and the next 429 resumes pacing from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

# Response headers in which the vendors advertise the key's requests-per-minute limit.
ADVERTISED_LIMIT_HEADERS = ("anthropic-ratelimit-requests-limit", "x-ratelimit-limit-requests")


class VendorCallGate(Protocol):
    """Wraps every HTTP attempt of a judge call (the SDK's own retries included)."""

    async def before_send(self) -> None:
        """Return when this attempt may go out (the fleet's pause and pace allow it)."""
        ...

    async def after_response(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from the vendor's answer (a 429 pauses and slows the fleet)."""
        ...


@dataclass(frozen=True)
class RateLimitPolicy:
    decrease_factor: float = 0.8  # rate x this on a 429 that proves the current pace too fast
    increase_per_call: float = 0.005  # rate x (1 + this) per paced call: a decrease is undone after ~45 calls
    min_interval_seconds: float = 0.001  # 60 000 requests a minute: faster than any per-key limit
    max_interval_seconds: float = 30.0
    max_initial_interval_seconds: float = 1.0  # a long retry-after (a token limit) is no request interval
    default_pause_seconds: float = 1.0  # a 429 without retry-after
    max_pause_seconds: float = 120.0
    burst_seconds: float = 1.0  # an idle fleet may send this many seconds' worth of calls at once
    forget_after_seconds: float = 600.0  # no 429 for this long: unpaced again (the limit may have grown)
    advertised_share: float = 0.95  # pace at this share of an advertised requests-per-minute limit
    ttl_seconds: int = 86_400  # the item expires (DynamoDB TTL) a day after its last change


@dataclass(frozen=True)
class FleetPacing:
    """The shared state; times are epoch seconds (wall clock: it is compared across machines)."""

    interval: float | None = None  # the learned seconds between the fleet's calls (kept while unpaced)
    next_slot: float = 0.0  # the fleet's next free send time while paced
    blocked_until: float = 0.0  # no call before this (the latest 429's retry-after)
    limited_at: float = 0.0  # the latest 429; pacing lapses `forget_after_seconds` after it
    version: int = 0  # optimistic concurrency; 0 → no item stored yet

    def paced(self, now: float, policy: RateLimitPolicy) -> bool:
        return self.interval is not None and now - self.limited_at < policy.forget_after_seconds


@dataclass(frozen=True)
class RateLimitSignal:
    """One 429 as a worker saw it: when, the pause asked for, and how its request had been paced."""

    at: float
    retry_after: float | None = None
    advertised_per_minute: float | None = None
    sent_interval: float | None = None  # the interval the request was paced at; None → sent unpaced


def reserve(state: FleetPacing, *, now: float, count: int,
            policy: RateLimitPolicy) -> tuple[FleetPacing | None, list[float]]:
    """Send times for `count` calls, and the state to store (None: nothing to store: unpaced).

    Paced slots start at the later of the fleet's next free slot, the pause and `now` minus the burst
    allowance, `interval` apart; each reserved slot speeds the pace up a little (the additive probe)."""
    if count <= 0:
        return None, []
    if not state.paced(now, policy):
        return None, [max(now, state.blocked_until)] * count
    assert state.interval is not None
    interval = state.interval
    start = max(state.next_slot, state.blocked_until, now - policy.burst_seconds)
    slots = [max(now, start + i * interval) for i in range(count)]
    faster = max(policy.min_interval_seconds, interval / (1.0 + policy.increase_per_call) ** count)
    return replace(state, interval=faster, next_slot=start + count * interval), slots


def after_rate_limited(state: FleetPacing, signals: Sequence[RateLimitSignal],
                       policy: RateLimitPolicy) -> FleetPacing | None:
    """The state after these 429s, or None when they change nothing the fleet does not already know."""
    if not signals:
        return None
    interval = state.interval
    blocked = state.blocked_until
    limited_at = state.limited_at
    for signal in sorted(signals, key=lambda s: s.at):
        pause = signal.retry_after if signal.retry_after is not None else policy.default_pause_seconds
        pause = min(max(pause, 0.0), policy.max_pause_seconds)
        blocked = max(blocked, signal.at + pause)
        floor = advertised_interval(signal.advertised_per_minute, policy) or 0.0
        paced = interval is not None and signal.at - limited_at < policy.forget_after_seconds
        estimate = min(max(pause, policy.min_interval_seconds), policy.max_initial_interval_seconds)
        if interval is None:
            interval = max(estimate, floor)
        elif not paced:
            interval = max(interval, floor)  # pacing lapsed: resume at the pace last learned
        elif signal.sent_interval is None:
            # The unpaced calls in flight when pacing started all come back 429: a token bucket's
            # longest wait among them (for a token just taken) is the best estimate of its interval.
            interval = min(max(interval, estimate, floor), policy.max_initial_interval_seconds)
        elif signal.sent_interval >= interval * (1 - 1e-9):
            interval = min(policy.max_interval_seconds, max(interval / policy.decrease_factor, floor))
        limited_at = max(limited_at, signal.at)
    # Only news is written: a slower pace, or a pause that reaches past the slots already handed out
    # (and, once in a while, the latest 429's time, which keeps pacing from lapsing).
    horizon = state.blocked_until
    if state.paced(limited_at, policy):
        horizon = max(horizon, state.next_slot)
    if (interval == state.interval and blocked <= horizon
            and limited_at - state.limited_at < policy.forget_after_seconds / 10):
        return None
    return replace(state, interval=interval, blocked_until=blocked, next_slot=max(state.next_slot, blocked),
                   limited_at=limited_at)


def advertised_interval(per_minute: float | None, policy: RateLimitPolicy) -> float | None:
    if per_minute is None or not per_minute > 0:
        return None
    return 60.0 / (per_minute * policy.advertised_share)


def advertised_limit(headers: Mapping[str, str]) -> float | None:
    """The key's requests-per-minute limit when the vendor advertises it on the response."""
    for name in ADVERTISED_LIMIT_HEADERS:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None
