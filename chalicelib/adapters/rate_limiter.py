"""The fleet-wide vendor rate limiter: its DynamoDB item per (tenant, vendor) and the per-run gate.

Item `pk=TENANT#<t>, sk=RATELIMIT#<vendor>` holds `chalicelib.domain.rate_limit.FleetPacing`; every
change is a conditional put on its `version` (a lost race returns the winner's item with the
failure, `ReturnValuesOnConditionCheckFailure`, so a retry costs no extra read). The item expires
(TTL) a day after its last change.

`SharedRateGate` is built per run, inside the run's event loop, and wraps every HTTP attempt of the
run's judge calls (`VendorCallGate`, installed as the SDK client's httpx event hooks):
- unpaced (no 429 lately, the vendor's advertised budget not short): the state is read once when the
  run starts (prefetched alongside the context fit) and again at most every `refresh_seconds` while
  calls go out; no writes;
- every answer's advertised budget (`anthropic-ratelimit-requests-*`, `x-ratelimit-*-requests`) is
  compared with the fleet's model of it; an answer showing less credit than modelled (or a budget
  that is getting short) is written with the next round, so the fleet paces before any 429;
- paced: the calls waiting at one moment (a fan-out wave) reserve their send slots in one write,
  whose answer is also the fresh state;
- a 429 is applied to the shared item at once (coalesced with the run's other 429s and its next
  reservation into one write), so every worker sending after it waits for the pause;
- slots a run reserved and did not use (it was cancelled, or ended) are handed back when it closes.
DynamoDB trouble never fails a judge: the gate logs it and falls back to what it last knew.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.adapters.dynamo import from_item, tenant_pk, to_item
from chalicelib.domain.judging import parse_retry_after
from chalicelib.domain.rate_limit import (
    FleetPacing,
    RateLimitObservation,
    RateLimitPolicy,
    RateLimitSignal,
    advertised_budget,
    advertised_limit,
    after_observed,
    after_rate_limited,
    release,
    reserve,
)
from chalicelib.observability import logger

T = TypeVar("T")
RATE_LIMIT_PREFIX = "RATELIMIT#"
# How the current attempt was released: the pace it was sent at (None: unpaced). Set by
# `before_send` and read by `after_response` of the same attempt, which run in the same task.
_SENT_INTERVAL: contextvars.ContextVar[float | None] = contextvars.ContextVar("sent_interval", default=None)
# When the current attempt went out: the vendor counted it on arrival, so its answer's remaining budget
# is as of then, not of when the (possibly long) answer came back.
_SENT_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("sent_at", default=None)


def rate_limit_sk(vendor: str) -> str:
    return f"{RATE_LIMIT_PREFIX}{vendor}"


class PacingStoreUnavailable(Exception):
    """DynamoDB could not be read or written (or the item stayed contended); the gate falls back."""


@dataclass
class Exchange(Generic[T]):
    """What one store operation did: the state now stored, the caller's result and its DynamoDB cost."""

    state: FleetPacing
    result: T
    reads: int = 0
    writes: int = 0
    conflicts: int = 0


class DynamoPacingStore:
    """The shared pacing item. Thread-safe (a boto3 client and no mutable state)."""

    def __init__(self, client: Any, table_name: str, *, policy: RateLimitPolicy | None = None,
                 max_attempts: int = 8) -> None:
        self._ddb = client
        self._table = table_name
        self.policy = policy or RateLimitPolicy()
        self._max_attempts = max_attempts

    def _key(self, tenant: str, vendor: str) -> dict[str, Any]:
        return {"pk": {"S": tenant_pk(tenant)}, "sk": {"S": rate_limit_sk(vendor)}}

    def load(self, tenant: str, vendor: str) -> FleetPacing:
        try:
            # Eventually consistent (half the price): a state a second old only delays the pause by as
            # much, and every write checks the version anyway.
            resp = self._ddb.get_item(TableName=self._table, Key=self._key(tenant, vendor))
        except (ClientError, BotoCoreError) as exc:
            raise PacingStoreUnavailable("rate limit state unreadable") from exc
        item = resp.get("Item")
        return _state_of(item) if item else FleetPacing()

    def update(self, tenant: str, vendor: str, known: FleetPacing,
               change: Callable[[FleetPacing, float], tuple[FleetPacing | None, T]], *,
               wall: Callable[[], float] = time.time) -> Exchange[T]:
        """Apply `change(state, now)` to the stored state, assuming it is `known` (no read); on a lost race
        re-apply it to the winner's state. `change` returns (state to store or None, result)."""
        state = known
        conflicts = writes = 0
        for _ in range(self._max_attempts):
            now = wall()
            new, result = change(state, now)
            if new is None:
                return Exchange(state, result, writes=writes, conflicts=conflicts)
            stored = replace(new, version=state.version + 1)
            if state.version == 0:
                condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
            else:
                condition = {"ConditionExpression": "#v = :v", "ExpressionAttributeNames": {"#v": "version"},
                             "ExpressionAttributeValues": {":v": {"N": str(state.version)}}}
            writes += 1
            try:
                self._ddb.put_item(TableName=self._table, Item=self._item(tenant, vendor, stored, now),
                                   ReturnValuesOnConditionCheckFailure="ALL_OLD", **condition)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise PacingStoreUnavailable("rate limit state unwritable") from exc
                conflicts += 1
                if conflicts > 1:  # several workers at once: spread the next attempts out a little
                    time.sleep(random.uniform(0, 0.005 * conflicts))
                item: Any = exc.response.get("Item")  # the winner's item (ReturnValuesOnConditionCheckFailure)
                state = _state_of(item) if item else FleetPacing()
                continue
            except BotoCoreError as exc:
                raise PacingStoreUnavailable("rate limit state unwritable") from exc
            return Exchange(stored, result, writes=writes, conflicts=conflicts)
        raise PacingStoreUnavailable(f"rate limit state still contended after {self._max_attempts} writes")

    def _item(self, tenant: str, vendor: str, state: FleetPacing, now: float) -> dict[str, Any]:
        return to_item({
            "pk": tenant_pk(tenant), "sk": rate_limit_sk(vendor), "entity": "vendor_rate_limit", "tenant": tenant,
            "vendor": vendor, "interval": state.interval, "next_slot": state.next_slot,
            "blocked_until": state.blocked_until, "limited_at": state.limited_at, "version": state.version,
            "advertised_interval": state.advertised_interval, "advertised_depth": state.advertised_depth,
            "updated_at": now, "expires_at": int(now) + self.policy.ttl_seconds})


def _state_of(item: Mapping[str, Any]) -> FleetPacing:
    data = from_item(dict(item))
    interval = data.get("interval")
    advertised = data.get("advertised_interval")
    return FleetPacing(interval=float(interval) if interval is not None else None,
                       next_slot=float(data.get("next_slot", 0.0)), blocked_until=float(data.get("blocked_until", 0.0)),
                       limited_at=float(data.get("limited_at", 0.0)), version=int(data.get("version", 0)),
                       advertised_interval=float(advertised) if advertised is not None else None,
                       advertised_depth=float(data.get("advertised_depth", 0.0)))


# ------------------------------------------------------------------------------------ the per-run gate


@dataclass
class GateStats:
    """Per run, logged when the run ends (and read by the rate-limit benchmark)."""

    reads: int = 0
    writes: int = 0
    conflicts: int = 0
    store_errors: int = 0
    rate_limited: int = 0  # 429 answers seen (the SDK's retries included)
    paced_sends: int = 0
    unpaced_sends: int = 0
    waited_seconds: float = 0.0
    max_wait_seconds: float = 0.0
    budget_updates: int = 0  # answers whose advertised budget was news for the fleet
    released_slots: int = 0  # reserved slots handed back unused

    def as_log(self) -> dict[str, Any]:
        return {"limiter_reads": self.reads, "limiter_writes": self.writes, "limiter_conflicts": self.conflicts,
                "limiter_store_errors": self.store_errors, "rate_limited_answers": self.rate_limited,
                "paced_sends": self.paced_sends, "unpaced_sends": self.unpaced_sends,
                "budget_updates": self.budget_updates, "released_slots": self.released_slots,
                "rate_wait_seconds": round(self.waited_seconds, 3),
                "rate_max_wait_seconds": round(self.max_wait_seconds, 3)}


# (send time, interval it was paced at or None, paid from the budget model's credit: sent at once)
Slot = tuple[float, float | None, bool]


class SharedRateGate:
    """`VendorCallGate` for one run, coordinated with every other worker through `DynamoPacingStore`.

    Bound to the event loop it is first used in (build it inside the run's loop). Waiting callers queue
    here; a single pump task serves them, so one DynamoDB call answers a whole fan-out wave.
    """

    def __init__(self, store: DynamoPacingStore, tenant: str, vendor: str, *, refresh_seconds: float = 2.0,
                 gather_seconds: float = 0.005, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 log_fields: Mapping[str, Any] | None = None) -> None:
        self._store = store
        self._policy = store.policy
        self._tenant = tenant
        self._vendor = vendor
        self._refresh = refresh_seconds
        self._gather = gather_seconds
        self._wall = wall
        self._sleep = sleep
        self._log_fields = dict(log_fields or {})
        self._state: FleetPacing | None = None
        self._fetched_at = -math.inf
        self._local_block = 0.0  # pauses this run knows of that the stored state may not show yet
        self._waiters: list[asyncio.Future[Slot]] = []
        self._serving: list[asyncio.Future[Slot]] = []  # the waiters of the round in progress
        self._signals: list[RateLimitSignal] = []
        self._observations: list[RateLimitObservation] = []
        self._unused: list[float] = []  # paced slots handed out but never sent (given back on close)
        self._want_state = False
        self._pump_task: asyncio.Task[None] | None = None
        self.stats = GateStats()

    # -- VendorCallGate ------------------------------------------------------------------------
    async def before_send(self) -> None:
        future: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._kick()
        send_at, interval, from_credit = await future
        waited = 0.0
        try:
            while True:
                # A 429 seen meanwhile (by this run, or in the state a later write returned) holds it back.
                delay = max(send_at, self._blocked_until()) - self._wall()
                if delay <= 0:
                    break
                waited += delay
                await self._sleep(delay)
        except asyncio.CancelledError:
            if interval is not None:
                self._unused.append(send_at)  # the run stopped before this call went out
            raise
        self.stats.waited_seconds += waited
        self.stats.max_wait_seconds = max(self.stats.max_wait_seconds, waited)
        if interval is None:
            self.stats.unpaced_sends += 1
        else:
            self.stats.paced_sends += 1
        # A call the modelled credit paid for went out as if unpaced (see `explained_by_budget`).
        _SENT_INTERVAL.set(None if from_credit else interval)
        _SENT_AT.set(self._wall())

    async def after_response(self, status: int, headers: Mapping[str, str]) -> None:
        if status != 429:
            self._observe(headers)
            return
        self.stats.rate_limited += 1
        budget = advertised_budget(headers)
        signal = RateLimitSignal(at=self._wall(), retry_after=parse_retry_after(headers),
                                 advertised_per_minute=advertised_limit(headers), sent_interval=_SENT_INTERVAL.get(),
                                 advertised_remaining=budget[1] if budget is not None else None)
        # A 429 advertises the budget too: an exhausted one is what the fleet's model must start from.
        self._observe(headers)
        pause = signal.retry_after if signal.retry_after is not None else self._policy.default_pause_seconds
        self._local_block = max(self._local_block, signal.at + min(pause, self._policy.max_pause_seconds))
        self._signals.append(signal)
        self._kick()

    def _observe(self, headers: Mapping[str, str]) -> None:
        """An answer's advertised budget: queued for the next round only when it is news for the fleet."""
        budget = advertised_budget(headers)
        if budget is None or not self._policy.use_advertised:
            return
        observation = RateLimitObservation(at=_SENT_AT.get() or self._wall(), per_minute=budget[0],
                                           remaining=budget[1])
        known = self._state or FleetPacing()
        if after_observed(known, [*self._observations, observation], self._policy) is None:
            return
        self._observations.append(observation)
        self._kick()

    # -- lifecycle ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return self.stats.as_log()

    def prefetch(self) -> None:
        """Read the shared state now (call at run start), so the first judge does not wait for it."""
        self._want_state = True
        self._kick()

    async def flush(self) -> None:
        """Wait until every 429 reported so far is stored (and every waiting call has its slot)."""
        while self._pump_task is not None and not self._pump_task.done():
            await asyncio.shield(self._pump_task)

    async def aclose(self, flush_seconds: float = 2.0) -> None:
        """Stop the gate; a 429 the run saw last is still stored (briefly waited for), so the fleet learns,
        and the slots the run reserved but did not use are handed back to the fleet at once."""
        if self._signals or self._observations or (self._pump_task is not None and not self._pump_task.done()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flush(), flush_seconds)
        for waiter in self._serving:
            # Waiters served a slot in the instant before the run stopped: theirs are unused too.
            if waiter.done() and not waiter.cancelled() and waiter.result()[1] is not None:
                self._unused.append(waiter.result()[0])
        if self._unused:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(self._release), flush_seconds)
        task, self._pump_task = self._pump_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiter in [*self._serving, *self._waiters]:
            waiter.cancel()
        self._serving, self._waiters = [], []

    # -- internals ------------------------------------------------------------------------------
    def _blocked_until(self) -> float:
        state = self._state
        return max(self._local_block, state.blocked_until if state is not None else 0.0)

    def _kick(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name="rate-limit-gate")

    async def _pump(self) -> None:
        while self._waiters or self._signals or self._observations or self._want_state:
            state = self._state
            if self._gather > 0 and self._waiters and state is not None and state.paced(self._wall(), self._policy):
                await asyncio.sleep(self._gather)  # let the rest of a fan-out wave join this write
            signals, self._signals = self._signals, []
            observations, self._observations = self._observations, []
            self._serving, self._waiters = [w for w in self._waiters if not w.done()], []
            self._want_state = False
            try:
                slots = await asyncio.to_thread(self._exchange, signals, len(self._serving), observations)
            except PacingStoreUnavailable as exc:
                self.stats.store_errors += 1
                logger.warning("vendor rate limit state unavailable; pacing on what this run knows",
                               extra={**self._log_fields, "vendor": self._vendor, "reason": str(exc)})
                slots = self._fallback(signals, len(self._serving), observations)
            except Exception as exc:  # a bug here must not hold judges back: let them go unpaced
                self.stats.store_errors += 1
                logger.error("vendor rate limiter failed; calls go out unpaced",
                             extra={**self._log_fields, "vendor": self._vendor, "error_type": type(exc).__name__})
                slots = [(self._wall(), None, False)] * len(self._serving)
            for waiter, slot in zip(self._serving, slots, strict=True):
                if not waiter.done():
                    waiter.set_result(slot)
                elif slot[1] is not None:
                    self._unused.append(slot[0])  # its call was cancelled while the round ran
            self._serving = []

    def _exchange(self, signals: list[RateLimitSignal], count: int,
                  observations: list[RateLimitObservation] | None = None) -> list[Slot]:
        """One round with the store (in a worker thread): at most one read and one write, plus conflicts."""
        observations = observations or []
        now = self._wall()
        state = self._state
        stale = state is None or (not state.paced(now, self._policy) and now - self._fetched_at >= self._refresh)
        if stale and not signals and not observations:
            state = self._store.load(self._tenant, self._vendor)
            self.stats.reads += 1
            self._state, self._fetched_at = state, now
        base = state or FleetPacing()
        if not signals and not observations and not base.paced(now, self._policy):
            _, times = reserve(base, now=now, count=count, policy=self._policy)
            return [(t, None, False) for t in times]
        policy = self._policy

        def change(current: FleetPacing, at: float) -> tuple[FleetPacing | None, list[Slot]]:
            return _apply(current, at, signals, observations, count, policy)

        done = self._store.update(self._tenant, self._vendor, base, change, wall=self._wall)
        self.stats.writes += done.writes
        self.stats.conflicts += done.conflicts
        self.stats.budget_updates += len(observations)
        self._state, self._fetched_at = done.state, self._wall()
        return done.result

    def _fallback(self, signals: list[RateLimitSignal], count: int,
                  observations: list[RateLimitObservation] | None = None) -> list[Slot]:
        """Without the store: pace locally on the last known state (the next write's version check resyncs)."""
        now = self._wall()
        state = self._state or FleetPacing()
        stored, slots = _apply(state, now, signals, observations or [], count, self._policy)
        self._state = stored or state
        self._fetched_at = now
        return slots

    def _release(self) -> None:
        """Give the run's unused slots back to the fleet (one conditional write; best effort)."""
        unused, self._unused = self._unused, []
        policy = self._policy

        def change(current: FleetPacing, at: float) -> tuple[FleetPacing | None, int]:
            released = release(current, unused, now=at, policy=policy)
            return released, len([slot for slot in unused if slot > at]) if released is not None else 0

        try:
            done = self._store.update(self._tenant, self._vendor, self._state or FleetPacing(), change,
                                      wall=self._wall)
        except PacingStoreUnavailable as exc:
            self.stats.store_errors += 1
            logger.warning("unused rate-limit slots not handed back", extra={
                **self._log_fields, "vendor": self._vendor, "reason": str(exc)})
            return
        self.stats.writes += done.writes
        self.stats.conflicts += done.conflicts
        self.stats.released_slots += done.result
        self._state = done.state


def _apply(current: FleetPacing, at: float, signals: list[RateLimitSignal],
           observations: list[RateLimitObservation], count: int,
           policy: RateLimitPolicy) -> tuple[FleetPacing | None, list[Slot]]:
    """One round's change: the 429s, then the advertised budgets, then the waiting calls' reservations.
    Returns the state to store (None: nothing new) and each call's (send time, pace or None)."""
    limited = after_rate_limited(current, signals, policy) if signals else None
    observed = after_observed(limited or current, observations, policy) if observations else None
    after = observed or limited or current
    reserved, times = reserve(after, now=at, count=count, policy=policy)
    pace = after.pace(at, policy)
    interval = pace[0] if pace is not None else None
    # Paced by the budget, the calls its modelled credit pays for go out at once: like unpaced calls, a 429
    # on one with the budget spent only shows the model ran ahead of the calls still in flight
    # (`explained_by_budget`); a 429 on a slot of the refill timeline says the advertised rate is wrong.
    credit = interval is not None and not after.limited(at, policy)
    return reserved or observed or limited, [(t, interval, credit and t <= at) for t in times]
