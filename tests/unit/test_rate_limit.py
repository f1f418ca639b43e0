"""The fleet's pacing rules (pure): unpaced until a 429 or a short advertised budget, the pause, slot
reservation, the learned rate (estimate, decrease once per episode, probe upwards), lapsing, advertised
limits and budgets, handing back unused slots, a virtual-time simulation of a fleet against a vendor
token bucket; and the judge runner waiting out 429s until the deadline (in-memory judge model)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.domain.judging import VendorCallError
from chalicelib.domain.rate_limit import (
    FleetPacing,
    RateLimitObservation,
    RateLimitPolicy,
    RateLimitSignal,
    advertised_budget,
    advertised_interval,
    advertised_limit,
    after_observed,
    after_rate_limited,
    release,
    reserve,
)
from chalicelib.services.judge_runner import RunnerTuning
from tests.unit.judge_runner_kit import FAST, Ports, ScriptedModel, Step
from tests.unit.judge_runner_kit import run as judge

POLICY = RateLimitPolicy()
NOW = 1_800_000_000.0


def paced(interval: float = 0.25, *, next_slot: float = 0.0, blocked_until: float = 0.0,
          limited_at: float = NOW - 1) -> FleetPacing:
    """A fleet that saw a 429 a second ago and paces at `interval`."""
    return FleetPacing(interval=interval, next_slot=next_slot, blocked_until=blocked_until, limited_at=limited_at)


# ------------------------------------------------------------------------------------ reserving


def test_unpaced_calls_go_now_and_store_nothing() -> None:
    state, slots = reserve(FleetPacing(), now=NOW, count=3, policy=POLICY)
    assert state is None
    assert slots == [NOW, NOW, NOW]


def test_unpaced_calls_still_wait_for_the_pause() -> None:
    state, slots = reserve(FleetPacing(blocked_until=NOW + 2), now=NOW, count=2, policy=POLICY)
    assert state is None and slots == [NOW + 2, NOW + 2]


def test_paced_slots_are_one_interval_apart_after_the_fleets_next_slot() -> None:
    state, slots = reserve(paced(0.5, next_slot=NOW + 3), now=NOW, count=3, policy=POLICY)
    assert slots == [NOW + 3, NOW + 3.5, NOW + 4]
    assert state is not None and state.next_slot == NOW + 4.5
    # Each slot handed out probes a little faster.
    assert state.interval == pytest.approx(0.5 / (1 + POLICY.increase_per_call) ** 3)


def test_paced_slots_respect_the_pause_and_an_idle_fleet_gets_a_small_burst() -> None:
    _, after_pause = reserve(paced(0.5, next_slot=NOW, blocked_until=NOW + 1), now=NOW, count=2, policy=POLICY)
    assert after_pause == [NOW + 1, NOW + 1.5]
    # Idle for a long time: slots start one burst window back, so the first two go at once.
    _, idle = reserve(paced(0.5, next_slot=NOW - 100), now=NOW, count=4, policy=POLICY)
    assert idle == [NOW, NOW, NOW, NOW + 0.5]


def test_pacing_lapses_after_the_forget_window_and_nothing_is_stored() -> None:
    old = paced(0.5, limited_at=NOW - POLICY.forget_after_seconds, next_slot=NOW + 50)
    state, slots = reserve(old, now=NOW, count=2, policy=POLICY)
    assert state is None and slots == [NOW, NOW]


def test_the_interval_never_probes_below_the_floor() -> None:
    state, _ = reserve(paced(POLICY.min_interval_seconds), now=NOW, count=50, policy=POLICY)
    assert state is not None and state.interval == POLICY.min_interval_seconds


# ------------------------------------------------------------------------------------ learning from 429s


def test_the_first_429_pauses_the_fleet_and_starts_pacing_at_its_retry_after() -> None:
    state = after_rate_limited(FleetPacing(), [RateLimitSignal(at=NOW, retry_after=0.25)], POLICY)
    assert state is not None
    assert state.blocked_until == NOW + 0.25 and state.next_slot == NOW + 0.25
    assert state.interval == 0.25 and state.limited_at == NOW
    assert state.paced(NOW + 1, POLICY)


def test_a_long_retry_after_is_a_pause_not_a_pace() -> None:
    state = after_rate_limited(FleetPacing(), [RateLimitSignal(at=NOW, retry_after=40)], POLICY)
    assert state is not None
    assert state.blocked_until == NOW + 40
    assert state.interval == POLICY.max_initial_interval_seconds


def test_missing_and_huge_retry_after_are_bounded() -> None:
    default = after_rate_limited(FleetPacing(), [RateLimitSignal(at=NOW)], POLICY)
    assert default is not None and default.blocked_until == NOW + POLICY.default_pause_seconds
    huge = after_rate_limited(FleetPacing(), [RateLimitSignal(at=NOW, retry_after=86_400)], POLICY)
    assert huge is not None and huge.blocked_until == NOW + POLICY.max_pause_seconds


def test_an_advertised_limit_sets_the_pace() -> None:
    signal = RateLimitSignal(at=NOW, retry_after=0.01, advertised_per_minute=600)
    state = after_rate_limited(FleetPacing(), [signal], POLICY)
    assert state is not None and state.interval == pytest.approx(60 / (600 * 0.95))


def test_unpaced_calls_in_flight_raise_the_estimate_to_their_longest_wait() -> None:
    # When the vendor's bucket runs dry, every call already sent comes back 429 with the wait for
    # its next token: the longest of them is about one interval.
    signals = [RateLimitSignal(at=NOW + i * 0.001, retry_after=wait) for i, wait in enumerate((0.02, 0.24, 0.1))]
    state = after_rate_limited(FleetPacing(), signals, POLICY)
    assert state is not None and state.interval == 0.24


def test_a_429_at_the_current_pace_slows_the_fleet() -> None:
    state = after_rate_limited(paced(0.2), [RateLimitSignal(at=NOW, retry_after=0.1, sent_interval=0.2)], POLICY)
    assert state is not None and state.interval == pytest.approx(0.2 / POLICY.decrease_factor)


def test_one_episode_slows_the_fleet_once() -> None:
    # The calls sent at the old pace keep failing for a moment after the first of them slowed the fleet:
    # they carry the old (faster) interval and change nothing but the pause.
    first = after_rate_limited(paced(0.2), [RateLimitSignal(at=NOW, retry_after=0.1, sent_interval=0.2)], POLICY)
    assert first is not None
    later = after_rate_limited(first, [RateLimitSignal(at=NOW + 0.05, retry_after=0.1, sent_interval=0.2)], POLICY)
    assert later is None or later.interval == first.interval


def test_signals_of_one_round_apply_together() -> None:
    signals = [RateLimitSignal(at=NOW, retry_after=0.1, sent_interval=0.2),
               RateLimitSignal(at=NOW + 0.01, retry_after=0.3, sent_interval=0.2)]
    state = after_rate_limited(paced(0.2), signals, POLICY)
    assert state is not None
    assert state.interval == pytest.approx(0.2 / POLICY.decrease_factor)  # once, not twice
    assert state.blocked_until == NOW + 0.31


def test_nothing_new_is_not_written() -> None:
    state = paced(0.2, blocked_until=NOW + 5, next_slot=NOW + 5)
    # Paused for longer already, and the call was paced faster than the current pace.
    assert after_rate_limited(state, [RateLimitSignal(at=NOW, retry_after=1, sent_interval=0.1)], POLICY) is None
    assert after_rate_limited(state, [], POLICY) is None


def test_a_lapsed_pace_resumes_where_it_was_learned() -> None:
    lapsed = paced(0.4, limited_at=NOW - POLICY.forget_after_seconds - 1)
    state = after_rate_limited(lapsed, [RateLimitSignal(at=NOW, retry_after=0.05)], POLICY)
    assert state is not None and state.interval == 0.4 and state.paced(NOW, POLICY)


def test_advertised_limit_headers() -> None:
    assert advertised_limit({"anthropic-ratelimit-requests-limit": "4000"}) == 4000
    assert advertised_limit({"x-ratelimit-limit-requests": "500"}) == 500
    assert advertised_limit({"x-ratelimit-limit-requests": "many"}) is None
    assert advertised_limit({"x-ratelimit-limit-requests": "0"}) is None
    assert advertised_limit({}) is None
    assert advertised_interval(None, POLICY) is None
    assert advertised_interval(60, POLICY) == pytest.approx(1 / 0.95)


# ------------------------------------------------------------------------------------ the advertised budget

REACTIVE = RateLimitPolicy(use_advertised=False)


def observed(remaining: float, *, at: float = NOW, per_minute: float = 240) -> RateLimitObservation:
    return RateLimitObservation(at=at, per_minute=per_minute, remaining=remaining)


def test_a_budget_with_room_is_not_written_and_the_fleet_stays_unpaced() -> None:
    assert after_observed(FleetPacing(), [observed(232)], POLICY) is None


def test_a_short_budget_paces_the_fleet_before_any_429() -> None:
    state = after_observed(FleetPacing(), [observed(30)], POLICY)
    interval = 60 / (240 * POLICY.advertised_pace_share)
    assert state is not None and state.advertised_interval == pytest.approx(interval)
    assert state.credit(NOW) == pytest.approx(30) and state.paced(NOW, POLICY)
    assert not state.limited(NOW, POLICY) and state.interval is None  # no 429, nothing learned from one
    # The 30 calls of credit go at once; then one every interval.
    stored, slots = reserve(state, now=NOW, count=33, policy=POLICY)
    assert slots[:30] == [NOW] * 30
    assert slots[30:] == pytest.approx([NOW + interval, NOW + 2 * interval, NOW + 3 * interval])
    assert stored is not None and stored.credit(NOW) == 0
    # Without the advertised pacing (the benchmark's reactive baseline) only a 429 paces.
    assert after_observed(FleetPacing(), [observed(30)], REACTIVE) is None


def test_an_answer_that_matches_the_model_is_not_news_and_one_with_less_credit_is() -> None:
    state = after_observed(FleetPacing(), [observed(30)], POLICY)
    assert state is not None
    assert after_observed(state, [observed(28.5)], POLICY) is None  # within the tolerance
    assert after_observed(state, [observed(40)], POLICY) is None  # more credit: the answers lag, keep ours
    moved = after_observed(state, [observed(20)], POLICY)
    assert moved is not None and moved.credit(NOW) == pytest.approx(20)


def test_an_idle_fleet_refills_and_stops_pacing() -> None:
    state = after_observed(FleetPacing(), [observed(0)], POLICY)
    assert state is not None and state.paced(NOW, POLICY)
    assert not state.paced(NOW + 60, POLICY)  # a minute later the vendor's bucket is full again
    assert reserve(state, now=NOW + 60, count=5, policy=POLICY)[0] is None  # and nothing is written


def test_a_429_while_paced_by_the_budget_wins_but_is_never_faster_than_advertised() -> None:
    state = after_observed(FleetPacing(), [observed(10)], POLICY)
    assert state is not None
    limited = after_rate_limited(state, [RateLimitSignal(at=NOW, retry_after=0.01, sent_interval=None)], POLICY)
    assert limited is not None and limited.limited(NOW, POLICY)
    pace = limited.pace(NOW + 1, POLICY)
    assert pace is not None and pace[0] >= state.advertised_interval  # type: ignore[operator]


def test_an_unpaced_429_with_the_budget_spent_pauses_and_paces_by_the_budget_without_learning_a_rate() -> None:
    # A fresh fleet's first fan-out outruns the budget before any answer told it: the 429s show the
    # budget spent, so the vendor's numbers explain them and they are no reason to distrust those numbers.
    signal = RateLimitSignal(at=NOW, retry_after=0.4, advertised_per_minute=240, advertised_remaining=0)
    paused = after_rate_limited(FleetPacing(), [signal], POLICY)
    assert paused is not None and paused.blocked_until == NOW + 0.4
    assert paused.interval is None and not paused.limited(NOW, POLICY)
    state = after_observed(paused, [observed(0)], POLICY)
    assert state is not None and state.paced(NOW + 1, POLICY) and not state.limited(NOW + 1, POLICY)
    interval = 60 / (240 * POLICY.advertised_pace_share)
    # What the vendor refills while the fleet idles is credit again (a learned pace would allow one second).
    assert state.credit(NOW + 30.4) == pytest.approx(30 / interval)  # ~118 calls
    _, slots = reserve(state, now=NOW + 30.4, count=130, policy=POLICY)
    assert slots.count(NOW + 30.4) == 1 + int(30 / interval) and slots[-1] > NOW + 30.4
    # Not explained by the budget: calls were left (a token limit?), the call was paced, or no budget shown.
    for other in (RateLimitSignal(at=NOW, retry_after=0.4, advertised_remaining=12),
                  RateLimitSignal(at=NOW, retry_after=0.4, advertised_remaining=0, sent_interval=0.25),
                  RateLimitSignal(at=NOW, retry_after=0.4)):
        learned = after_rate_limited(FleetPacing(), [other], POLICY)
        assert learned is not None and learned.limited(NOW, POLICY)
    # The reactive baseline ignores budgets: every 429 teaches the rate, as before.
    reactive = after_rate_limited(FleetPacing(), [signal], REACTIVE)
    assert reactive is not None and reactive.limited(NOW, REACTIVE)


def test_unused_slots_are_handed_back_to_the_fleet() -> None:
    state = paced(0.5, next_slot=NOW + 10)
    released = release(state, [NOW + 8, NOW + 8.5, NOW + 9, NOW - 1], now=NOW, policy=POLICY)
    assert released is not None and released.next_slot == pytest.approx(NOW + 8.5)  # 3 future slots
    assert release(state, [NOW - 2], now=NOW, policy=POLICY) is None  # slots already past are spent
    assert release(FleetPacing(), [NOW + 1], now=NOW, policy=POLICY) is None  # unpaced: nothing owed
    assert release(paced(0.5, next_slot=NOW + 1), [NOW + 5] * 10, now=NOW, policy=POLICY).next_slot == NOW  # type: ignore[union-attr]


def test_advertised_budget_headers() -> None:
    assert advertised_budget({"anthropic-ratelimit-requests-limit": "4000",
                              "anthropic-ratelimit-requests-remaining": "3999"}) == (4000, 3999)
    assert advertised_budget({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "12"}) == (500, 12)
    assert advertised_budget({"x-ratelimit-limit-requests": "500"}) is None
    assert advertised_budget({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "nan"}) is None
    assert advertised_budget({"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "0"}) is None
    assert advertised_budget({"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "9"}) == (5, 5)


# ------------------------------------------------------------------------------------ a fleet in virtual time


@dataclass
class Bucket:
    """The fake vendor's limiter: `capacity` calls, refilled at `rate` per second; past it, 429 + the wait."""

    capacity: float
    rate: float
    tokens: float
    at: float

    def take(self, now: float) -> float | None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return max((1 - self.tokens) / self.rate, 0.001)  # retry-after-ms: whole milliseconds, at least 1


def simulate(*, per_minute: float, workers: int, concurrency: int, seconds: float,
             coordinated: bool = True, policy: RateLimitPolicy = REACTIVE, full: bool = False,
             warm_up: bool = False) -> tuple[int, int]:
    """A fleet whose every worker always has `concurrency` calls waiting, sharing one pacing state (each
    worker reserves its waiting calls in one round, as the gate does), against a drained vendor bucket
    (`full`: one that starts full, as a fresh key's). With the advertised budget on (`policy`), every
    answer carries the calls left as of its arrival at the vendor, and the fleet reads it when the answer
    comes back, a call's latency later. `warm_up`: each worker starts with one call and fans out the
    others when it answers, as a run does. Uncoordinated, every call just retries after its own
    retry-after. Returns (successful calls, 429 answers) within `seconds` of virtual time."""
    start = 1000.0  # virtual seconds (epoch values would leave too few float digits for short waits)
    bucket = Bucket(capacity=per_minute, rate=per_minute / 60, tokens=per_minute if full else 0.0, at=start)
    state = FleetPacing()
    ok = limited = 0
    sequence = 0
    warmed: set[int] = set()
    # (time, seq, kind, worker, payload): "want" = a call ready to reserve, "send" = its slot came (payload:
    # the pace it was sent at), "answer" = a success came back (payload: the budget it advertised).
    events: list[tuple[float, int, str, int, Any]] = []
    for worker in range(workers):
        for _ in range(1 if warm_up else concurrency):
            sequence += 1
            events.append((start, sequence, "want", worker, None))
    heapq.heapify(events)
    latency = 1.0
    while events:
        now, _, kind, worker, payload = heapq.heappop(events)
        if now > start + seconds:
            break
        if kind == "want":
            # Every call a worker has waiting at this instant is reserved together (one write).
            batch = 1
            while events and events[0][0] == now and events[0][2] == "want" and events[0][3] == worker:
                heapq.heappop(events)
                batch += 1
            stored, slots = reserve(state, now=now, count=batch, policy=policy)
            pace = state.pace(now, policy)
            interval = pace[0] if pace is not None else None
            state = stored or state
            for slot in slots:
                sequence += 1
                heapq.heappush(events, (slot, sequence, "send", worker, interval))
            continue
        if kind == "answer":
            if coordinated:
                state = after_observed(state, [payload], policy) or state
            more = concurrency if warm_up and worker not in warmed else 1  # the fan-out after the warm-up
            warmed.add(worker)
            for _ in range(more):
                sequence += 1
                heapq.heappush(events, (now, sequence, "want", worker, None))  # the next questions
            continue
        wait = bucket.take(now)
        sequence += 1
        if wait is None:
            ok += 1
            seen = RateLimitObservation(at=now, per_minute=per_minute, remaining=float(int(bucket.tokens)))
            heapq.heappush(events, (now + latency, sequence, "answer", worker, seen))
        else:
            limited += 1
            if coordinated:
                # The 429 advertises the budget too (spent), as the vendors' and the fake's do.
                signal = RateLimitSignal(at=now, retry_after=wait, sent_interval=payload,
                                         advertised_remaining=float(int(bucket.tokens)))
                state = after_rate_limited(state, [signal], policy) or state
                spent = RateLimitObservation(at=now, per_minute=per_minute, remaining=float(int(bucket.tokens)))
                state = after_observed(state, [spent], policy) or state
            heapq.heappush(events, (now + wait, sequence, "want", worker, None))  # the SDK retries after the wait
    return ok, limited


@pytest.mark.parametrize("per_minute", [60, 240, 3000])
def test_a_saturated_fleet_settles_at_the_vendor_limit_with_far_fewer_429s(per_minute: float) -> None:
    seconds = 600 * 60 / per_minute  # long enough for 600 calls
    shape = {"per_minute": per_minute, "workers": 8, "concurrency": 12, "seconds": seconds}
    ok, limited = simulate(**shape)
    alone_ok, alone_limited = simulate(**shape, coordinated=False)
    allowed = per_minute / 60 * seconds
    assert 0.95 * allowed <= ok <= allowed + 1, (ok, allowed)
    # The vendor's answers are the same; the coordinated fleet just stops asking when it would be refused.
    assert limited * 10 <= alone_limited, (limited, alone_limited)
    assert alone_ok <= allowed + 1


@pytest.mark.parametrize("per_minute", [60, 240, 3000])
def test_paced_by_the_advertised_budget_a_fresh_fleet_spends_the_burst_and_then_the_rate_without_429s(
        per_minute: float) -> None:
    seconds = 600 * 60 / per_minute
    shape = {"per_minute": per_minute, "workers": 8, "concurrency": 12, "seconds": seconds, "full": True,
             "warm_up": True}
    ok, limited = simulate(**shape, policy=POLICY)
    _, reactive_limited = simulate(**shape, policy=REACTIVE)
    # The full bucket and its refill, unless the fleet cannot ask that much (12 calls of 1 s per worker).
    allowed = min(per_minute + per_minute / 60 * seconds, 8 * 12 * seconds)
    assert ok >= 0.95 * allowed, (ok, allowed)
    assert limited <= 0.02 * (ok + limited), (limited, ok)
    assert limited <= reactive_limited and (limited < reactive_limited or reactive_limited == 0)


# ------------------------------------------------------------------------------------ the runner waits out 429s


def limited(retry_after: float | None = 0.01) -> Step:
    """What the adapter raises once the SDK's own retries of a 429 are spent."""
    return Step(error=VendorCallError("rate_limited", "Anthropic rate limit reached after retries (HTTP 429).",
                                      retry_after=retry_after, status=429))


def test_a_rate_limited_question_is_asked_again_until_it_answers() -> None:
    model = ScriptedModel(script={"tests_written": [limited(), limited(None), limited(), limited(), Step(0.01)]})
    result, _ = judge(model, tuning=RunnerTuning(**{**FAST.__dict__, "rate_limit_backoff_seconds": 0.01}))
    assert result.stop == "done"
    assert result.outcomes["tests_written"].status == "scored"
    assert model.starts.count("tests_written") == 5
    assert result.vendor_errors == {"rate_limited": 4}


def test_only_the_deadline_ends_a_rate_limited_question() -> None:
    model = ScriptedModel(script={"tests_written": [limited(0.05)]})
    result, _ = judge(model, seconds=0.6)
    assert result.stop == "deadline"
    assert result.unfinished == ["tests_written"]  # the worker stores it timed_out, not failed
    assert "tests_written" not in result.outcomes
    assert model.starts.count("tests_written") >= 3
    assert result.result is not None and len(result.result.verdicts()) == 12


def test_a_cancel_interrupts_the_wait() -> None:
    model = ScriptedModel(script={"tests_written": [limited(retry_after=3600)]})
    result, _ = judge(model, Ports(cancel_when=lambda m: len(m.finished) >= 12), seconds=60)
    assert result.stop == "cancelled"
    assert model.starts.count("tests_written") == 1


def test_without_waiting_a_429_after_the_sdk_retries_fails_the_question() -> None:
    model = ScriptedModel(script={"tests_written": [limited()]})
    result, _ = judge(model, tuning=RunnerTuning(**{**FAST.__dict__, "retry_rate_limited": False}))
    outcome = result.outcomes["tests_written"]
    assert outcome.status == "failed"
    assert outcome.failure_reason is not None and outcome.failure_reason.kind == "rate_limited"
