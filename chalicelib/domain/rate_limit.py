"""Fleet-wide vendor rate limiting, pure: the shared pacing state of one (tenant, vendor) and its rules.

Every worker Lambda of a tenant sends with the same vendor key, so the vendor's per-key limit is a
fleet property; the state below lives in one DynamoDB item (`chalicelib.adapters.rate_limiter`) and
these functions are the only way it changes (each change is one conditional write).

- **Paced by the vendor's own numbers before any 429.** Every answer carries the key's request limit
  and what is left of it (`anthropic-ratelimit-requests-limit/-remaining`, `x-ratelimit-limit-requests`
  / `x-ratelimit-remaining-requests`). The vendors refill that budget continuously (a token bucket of
  `limit` calls refilled at `limit` a minute), so the fleet keeps a model of it: `next_slot` is the
  time from which the bucket's credit accrued (credit at `now` = (now - next_slot) / interval calls),
  an answer that shows less credit than the model moves it (`after_observed`), and once the credit
  falls under `advertised_pace_below` of the bucket every call reserves its slot, `interval` =
  60 / (limit x `advertised_pace_share`) apart, spending the credit left at once and then the refill.
  A fleet whose bucket stays near full never writes.
- **Unpaced while the vendor says there is room.** With no advertised pressure and no 429 in the
  last `forget_after_seconds`, calls go out as they come (a run costs a state read per wave of calls,
  no writes).
- **One 429 pauses the fleet.** A 429 sets `blocked_until` = now + its retry-after; every worker
  waits for it before sending, instead of each one hammering the vendor on its own schedule.
- **A 429 the budget explains teaches nothing more.** A 429 on a call sent unpaced whose answer shows
  the advertised budget spent (a fresh fleet's first fan-out outran it before any answer told the
  fleet) pauses the fleet and starts the budget model from an empty bucket; the vendor's numbers
  described it, so the fleet keeps pacing by them, credit refilled while it idles included.
- **Paced at a learned rate (AIMD).** Any other 429 starts pacing at an estimate: the vendor's
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
# (limit, remaining) header pairs: Anthropic's, OpenAI's.
_BUDGET_HEADERS = (("anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining"),
                   ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests"))


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
    # Pacing by the advertised limit and remaining count, before any 429 (False: only 429s pace the fleet).
    use_advertised: bool = True
    advertised_pace_share: float = 0.98  # pace at this share of the advertised requests-per-minute
    advertised_pace_below: float = 0.9  # reserve slots once the modelled credit falls under this share
    observed_tolerance_calls: float = 4.0  # an answer showing this many calls less credit than modelled is news


@dataclass(frozen=True)
class FleetPacing:
    """The shared state; times are epoch seconds (wall clock: it is compared across machines)."""

    interval: float | None = None  # the learned seconds between the fleet's calls (kept while unpaced)
    next_slot: float = 0.0  # the fleet's next free send time while paced
    blocked_until: float = 0.0  # no call before this (the latest 429's retry-after)
    limited_at: float = 0.0  # the latest 429; pacing lapses `forget_after_seconds` after it
    version: int = 0  # optimistic concurrency; 0 → no item stored yet
    advertised_interval: float | None = None  # 60 / (advertised limit x pace share); None → none seen
    advertised_depth: float = 0.0  # the advertised bucket, in calls (the per-minute limit)

    def limited(self, now: float, policy: RateLimitPolicy) -> bool:
        """Paced because of a recent 429 (the learned interval)."""
        return self.interval is not None and now - self.limited_at < policy.forget_after_seconds

    def credit(self, now: float) -> float | None:
        """Calls the vendor's budget has left at `now` by the fleet's model of it (None: no model)."""
        if self.advertised_interval is None:
            return None
        return min(self.advertised_depth, max(0.0, (now - self.next_slot) / self.advertised_interval))

    def advertised_paced(self, now: float, policy: RateLimitPolicy) -> bool:
        credit = self.credit(now)
        if not policy.use_advertised or credit is None:
            return False
        return credit < self.advertised_depth * policy.advertised_pace_below

    def paced(self, now: float, policy: RateLimitPolicy) -> bool:
        return self.limited(now, policy) or self.advertised_paced(now, policy)

    def pace(self, now: float, policy: RateLimitPolicy) -> tuple[float, float] | None:
        """(seconds between calls, burst allowance in seconds) while paced, else None. A recent 429 wins
        (the vendor's numbers did not describe what it enforces), never faster than it advertises."""
        if self.limited(now, policy):
            assert self.interval is not None
            return max(self.interval, self.advertised_interval or 0.0), policy.burst_seconds
        if self.advertised_paced(now, policy):
            assert self.advertised_interval is not None
            return self.advertised_interval, self.advertised_depth * self.advertised_interval
        return None


@dataclass(frozen=True)
class RateLimitObservation:
    """An answer's advertised budget: the key's requests-per-minute limit and the calls left, as of `at`
    (when the call was sent: the vendor counted it on arrival)."""

    at: float
    per_minute: float
    remaining: float


@dataclass(frozen=True)
class RateLimitSignal:
    """One 429 as a worker saw it: when, the pause asked for, and how its request had been paced."""

    at: float
    retry_after: float | None = None
    advertised_per_minute: float | None = None
    sent_interval: float | None = None  # the interval the request was paced at; None → sent unpaced
    advertised_remaining: float | None = None  # the requests the 429 answer says are left; None → not shown


def explained_by_budget(signal: RateLimitSignal, policy: RateLimitPolicy) -> bool:
    """A 429 on a call sent unpaced whose answer shows the advertised request budget spent: the vendor's
    own numbers account for it (the call went out before the fleet paced by them, e.g. the first fan-out
    of a fresh fleet), so it pauses the fleet and the budget model takes it as an empty bucket, but it is
    no evidence that those numbers are wrong. Learned pacing (whose burst is one second) would throw the
    credit the vendor refills while the fleet idles away for the next ten minutes."""
    return (policy.use_advertised and signal.sent_interval is None and signal.advertised_remaining is not None
            and signal.advertised_remaining < 1)


def reserve(state: FleetPacing, *, now: float, count: int,
            policy: RateLimitPolicy) -> tuple[FleetPacing | None, list[float]]:
    """Send times for `count` calls, and the state to store (None: nothing to store: unpaced).

    Paced slots start at the later of the fleet's next free slot, the pause and `now` minus the burst
    allowance, `interval` apart; each reserved slot speeds the pace up a little (the additive probe)."""
    if count <= 0:
        return None, []
    pace = state.pace(now, policy)
    if pace is None:
        return None, [max(now, state.blocked_until)] * count
    interval, burst = pace
    start = max(state.next_slot, state.blocked_until, now - burst)
    slots = [max(now, start + i * interval) for i in range(count)]
    if not state.limited(now, policy):
        return replace(state, next_slot=start + count * interval), slots  # the advertised pace: no probing
    assert state.interval is not None
    faster = max(policy.min_interval_seconds, state.interval / (1.0 + policy.increase_per_call) ** count)
    return replace(state, interval=faster, next_slot=start + count * interval), slots


def after_observed(state: FleetPacing, observations: Sequence[RateLimitObservation],
                   policy: RateLimitPolicy) -> FleetPacing | None:
    """The state after answers that advertised the budget, or None when they say nothing new: a budget
    is news once its credit is short (or the fleet is already pacing by it) and the answers show less
    credit than the model by more than `observed_tolerance_calls`. A fleet whose bucket stays near full,
    or whose model matches what the vendor counts, never writes."""
    if not observations or not policy.use_advertised:
        return None
    latest = max(observations, key=lambda o: o.at)
    interval = 60.0 / (latest.per_minute * policy.advertised_pace_share)
    depth = latest.per_minute
    # Less credit in any of the answers moves the model; more credit never does (answers lag behind).
    next_slot = max(o.at - o.remaining * interval for o in observations)
    short = min(o.remaining for o in observations) < depth * policy.advertised_pace_below
    if not short and not state.advertised_paced(latest.at, policy):
        return None  # room enough: nothing to pace
    same = state.advertised_interval is not None and math.isclose(state.advertised_interval, interval)
    if same and next_slot <= state.next_slot + policy.observed_tolerance_calls * interval:
        return None  # the model already counts these calls
    return replace(state, advertised_interval=interval, advertised_depth=depth,
                   next_slot=max(state.next_slot, next_slot))


def release(state: FleetPacing, slots: Sequence[float], *, now: float,
            policy: RateLimitPolicy) -> FleetPacing | None:
    """Hand back send slots a run reserved and will not use (it was cancelled or ended): the fleet's
    timeline moves back by their count, never before `now`. None when there is nothing to give back."""
    pace = state.pace(now, policy)
    unused = [slot for slot in slots if slot > now]
    if not unused or pace is None or state.next_slot <= now:
        return None
    interval, _ = pace
    return replace(state, next_slot=max(now, state.next_slot - len(unused) * interval))


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
        if explained_by_budget(signal, policy):
            continue  # the pause only; the answer's budget reaches the model as an observation
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


def advertised_budget(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """(requests-per-minute limit, requests left) when the answer advertises both."""
    for limit_name, remaining_name in _BUDGET_HEADERS:
        limit, remaining = _number(headers.get(limit_name)), _number(headers.get(remaining_name))
        if limit is not None and limit > 0 and remaining is not None and remaining >= 0:
            return limit, min(remaining, limit)
    return None


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
