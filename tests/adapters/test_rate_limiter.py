"""The fleet-wide rate limiter under moto: two gates (two Lambdas) sharing one item, the pause, disjoint
paced slots, lost races, the cost of an unpaced run, a DynamoDB outage, and the SDK hooks that run it.

Time is a fake wall clock; the gate's sleep records the planned send times and moves the clock, so
nothing here waits or depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib.adapters.judge_models import build_judge_model
from chalicelib.adapters.rate_limiter import DynamoPacingStore, SharedRateGate, rate_limit_sk
from chalicelib.domain.rate_limit import FleetPacing, RateLimitPolicy, reserve
from devstack.fake_vendor import FakeVendor
from tests.fakevendor import GOOD_KEYS, LOCAL_OUTBOUND, base_url_for, run, running_fake_vendor, verdict_call

T0 = 1_800_000_000.0


@dataclass
class FakeTime:
    now: float = T0
    sends: list[float] = field(default_factory=list)

    def wall(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def table(container: Any) -> tuple[Any, str]:
    return container.dynamodb, container.config.table_name


def lambda_gate(table: tuple[Any, str], clock: FakeTime, *, tenant: str = "acme") -> SharedRateGate:
    """What one worker Lambda builds for a run: its own store object over the shared table."""
    client, name = table
    return SharedRateGate(DynamoPacingStore(client, name), tenant, "anthropic", wall=clock.wall, sleep=clock.sleep,
                          gather_seconds=0)


async def send(gate: SharedRateGate, clock: FakeTime) -> float:
    await gate.before_send()
    clock.sends.append(clock.now)
    return clock.now


def stored(table: tuple[Any, str], tenant: str = "acme") -> dict[str, Any] | None:
    client, name = table
    item = client.get_item(TableName=name, Key={"pk": {"S": f"TENANT#{tenant}"},
                                               "sk": {"S": rate_limit_sk("anthropic")}}).get("Item")
    return dict(item) if item else None


def test_an_unpaced_run_reads_the_state_once_and_writes_nothing(table: tuple[Any, str]) -> None:
    clock = FakeTime()

    async def scenario() -> SharedRateGate:
        gate = lambda_gate(table, clock)
        gate.prefetch()
        await send(gate, clock)  # the warm-up judge
        await asyncio.gather(*(send(gate, clock) for _ in range(12)))  # the fan-out
        await gate.aclose()
        return gate

    gate = run(scenario())
    assert clock.sends == [T0] * 13  # nobody waited
    assert (gate.stats.reads, gate.stats.writes, gate.stats.unpaced_sends) == (1, 0, 13)
    assert stored(table) is None


def test_a_429_seen_by_one_lambda_pauses_the_other(table: tuple[Any, str]) -> None:
    clock = FakeTime()

    async def scenario() -> tuple[SharedRateGate, SharedRateGate, float]:
        first, second = lambda_gate(table, clock), lambda_gate(table, clock)
        await first.after_response(429, {"retry-after-ms": "1500", "retry-after": "2"})
        await first.flush()
        sent = await send(second, clock)  # a different Lambda, which never saw a 429 itself
        await first.aclose()
        await second.aclose()
        return first, second, sent

    first, second, sent = run(scenario())
    assert sent == pytest.approx(T0 + 1.5)
    assert first.stats.rate_limited == 1 and first.stats.writes == 1
    assert second.stats.reads == 1 and second.stats.writes == 1  # its paced slot was reserved in one write
    item = stored(table)
    assert item is not None
    assert float(item["blocked_until"]["N"]) == pytest.approx(T0 + 1.5)
    assert item["entity"]["S"] == "vendor_rate_limit"
    assert int(item["expires_at"]["N"]) == int(T0) + 86_400  # TTL: gone a day after the last change


def test_paced_waves_of_two_lambdas_share_one_timeline(table: tuple[Any, str]) -> None:
    clock = FakeTime()
    policy = RateLimitPolicy()

    async def scenario() -> tuple[SharedRateGate, SharedRateGate]:
        a, b = lambda_gate(table, clock), lambda_gate(table, clock)
        await a.after_response(429, {"retry-after-ms": "500"})  # the fleet learns a pace of 0.5 s a call
        await a.flush()
        # Both Lambdas fan out at the same moment, each reserving its wave in one write.
        await asyncio.gather(*(a.before_send() for _ in range(4)), *(b.before_send() for _ in range(4)))
        await a.aclose()
        await b.aclose()
        return a, b

    a, b = run(scenario())
    assert (a.stats.paced_sends, b.stats.paced_sends) == (4, 4)
    # Which Lambda's reservation lands first is a race; either way each wave costs one successful
    # write (a also wrote the pause), and the loser re-applies its change after at most one conflict.
    assert a.stats.writes - a.stats.conflicts == 2 and b.stats.writes - b.stats.conflicts == 1
    assert a.stats.conflicts + b.stats.conflicts <= 1 and b.stats.reads <= 1
    # The eight slots were handed out one after the other on the shared timeline, from the pause on:
    # four at 0.5 s, then four at the slightly faster pace the first reservation probed up to.
    item = stored(table)
    assert item is not None
    faster = 0.5 / (1 + policy.increase_per_call) ** 4
    assert float(item["next_slot"]["N"]) == pytest.approx(T0 + 0.5 + 4 * 0.5 + 4 * faster)
    assert clock.now >= T0 + 0.5 + 3 * 0.5  # and the calls waited for them


def test_a_lost_race_is_retried_on_the_winners_state_without_a_read(table: tuple[Any, str]) -> None:
    client, name = table
    first, second = DynamoPacingStore(client, name), DynamoPacingStore(client, name)
    policy = first.policy
    start = first.update("acme", "openai", FleetPacing(),
                         lambda s, now: (FleetPacing(interval=1.0, limited_at=now, next_slot=now), None),
                         wall=lambda: T0).state

    def take(count: int) -> Any:
        def change(state: FleetPacing, now: float) -> tuple[FleetPacing | None, list[float]]:
            return reserve(state, now=now, count=count, policy=policy)
        return change

    won = first.update("acme", "openai", start, take(2), wall=lambda: T0)
    lost = second.update("acme", "openai", start, take(2), wall=lambda: T0)  # `start` is stale by now
    assert (won.writes, won.conflicts) == (1, 0)
    assert (lost.writes, lost.conflicts, lost.reads) == (2, 1, 0)
    assert won.result == [T0, T0 + 1.0]
    assert lost.result[0] >= won.result[-1] + 0.99  # queued behind the winner's slots
    assert lost.state.version == won.state.version + 1


def test_tenants_and_vendors_are_paced_apart(table: tuple[Any, str]) -> None:
    clock = FakeTime()

    async def scenario() -> float:
        acme = lambda_gate(table, clock)
        await acme.after_response(429, {"retry-after": "30"})
        await acme.flush()
        other = lambda_gate(table, clock, tenant="globex")
        sent = await send(other, clock)
        await acme.aclose()
        await other.aclose()
        return sent

    assert run(scenario()) == T0
    assert stored(table, "globex") is None


def test_a_dynamodb_outage_never_holds_a_judge_back(table: tuple[Any, str]) -> None:
    client, _ = table
    clock = FakeTime()

    async def scenario() -> tuple[SharedRateGate, float, float]:
        gate = SharedRateGate(DynamoPacingStore(client, "no-such-table"), "acme", "anthropic", wall=clock.wall,
                              sleep=clock.sleep, gather_seconds=0)
        first = await send(gate, clock)
        await gate.after_response(429, {"retry-after-ms": "800"})
        second = await send(gate, clock)  # still honours the pause it saw itself
        await gate.aclose()
        return gate, first, second

    gate, first, second = run(scenario())
    assert first == T0
    assert second == pytest.approx(T0 + 0.8)
    assert gate.stats.store_errors >= 2


def budget(remaining: int, limit: int = 240) -> dict[str, str]:
    return {"anthropic-ratelimit-requests-limit": str(limit), "anthropic-ratelimit-requests-remaining": str(remaining)}


def test_a_short_advertised_budget_paces_the_other_lambda_before_any_429(table: tuple[Any, str]) -> None:
    clock = FakeTime()
    interval = 60 / (240 * RateLimitPolicy().advertised_pace_share)

    async def scenario() -> tuple[SharedRateGate, SharedRateGate, list[float]]:
        a, b = lambda_gate(table, clock), lambda_gate(table, clock)
        await send(a, clock)
        await a.after_response(200, budget(230))  # room enough: nothing to tell the fleet
        await a.flush()
        assert stored(table) is None
        await send(a, clock)
        await a.after_response(200, budget(3))  # three calls left: the fleet paces from here
        await a.flush()
        sends = await asyncio.gather(*(send(b, clock) for _ in range(6)))  # another Lambda's wave
        await a.aclose()
        await b.aclose()
        return a, b, sorted(sends)

    a, b, sends = run(scenario())
    assert a.stats.rate_limited == b.stats.rate_limited == 0
    assert a.stats.budget_updates == 1 and a.stats.writes == 1
    assert b.stats.paced_sends == 6
    # The three calls of credit went at once, the rest one interval apart (the vendor's refill).
    assert sends[:3] == [T0] * 3
    assert sends[3:] == pytest.approx([T0 + interval, T0 + 2 * interval, T0 + 3 * interval])


def test_a_cancelled_run_hands_its_reserved_slots_back_at_once(table: tuple[Any, str]) -> None:
    clock = FakeTime()

    async def scenario() -> tuple[SharedRateGate, float, float]:
        blocked = asyncio.Event()

        async def hold(_seconds: float) -> None:
            blocked.set()
            await asyncio.sleep(3600)  # the calls wait for their slots: the run is cancelled meanwhile

        client, name = table
        gate = SharedRateGate(DynamoPacingStore(client, name), "acme", "anthropic", wall=clock.wall, sleep=hold,
                              gather_seconds=0)
        await gate.after_response(429, {"retry-after-ms": "500"})  # paced at 0.5 s a call
        await gate.flush()
        waiting = [asyncio.create_task(gate.before_send()) for _ in range(10)]
        await blocked.wait()
        reserved = float(stored(table)["next_slot"]["N"])  # type: ignore[index]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await gate.aclose()
        return gate, reserved, float(stored(table)["next_slot"]["N"])  # type: ignore[index]

    gate, reserved, after = run(scenario())
    assert gate.stats.released_slots >= 9  # every slot still in the future went back to the fleet
    assert after < reserved and after <= T0 + 0.5 + 0.5 * 1.01


# ------------------------------------------------------------------------------------ the SDK hooks


@dataclass
class RecordingGate:
    sends: int = 0
    answers: list[int] = field(default_factory=list)
    retry_after: list[str | None] = field(default_factory=list)

    async def before_send(self) -> None:
        self.sends += 1

    async def after_response(self, status: int, headers: Any) -> None:
        self.answers.append(status)
        self.retry_after.append(headers.get("retry-after-ms"))


@pytest.fixture
def fake() -> Any:
    with running_fake_vendor() as vendor:
        yield vendor


@pytest.mark.parametrize("vendor", ["anthropic", "openai"])
def test_every_attempt_of_a_generate_call_passes_the_gate(fake: FakeVendor, vendor: Any) -> None:
    fake.script("destructive_commands", times=2, status=429, retry_after=0.02)
    gate = RecordingGate()

    async def scenario() -> None:
        model = build_judge_model(vendor, api_key=GOOD_KEYS[vendor], base_url=base_url_for(fake, vendor),
                                  max_retries=3, timeout_seconds=10, gate=gate, outbound=LOCAL_OUTBOUND)
        try:
            await model.judge(verdict_call(vendor))
            await model.count_tokens("claude-sonnet-4-6", "trace", "question")  # not a generate call
        finally:
            await model.aclose()

    run(scenario())
    assert gate.sends == 3  # the SDK's two retries went through the gate too
    assert gate.answers == [429, 429, 200]
    assert gate.retry_after[:2] == ["20", "20"]


# ------------------------------------------------------------------------------------ the worker, end to end

WORKER_QUESTIONS = ["sensitive_files", "followed_plan", "tests_written", "redundant_calls"]


def drain(fake: FakeVendor) -> int:
    """Spend the vendor bucket's burst, as earlier traffic on the same key would have."""
    body = {"model": "claude-sonnet-4-6", "max_tokens": 16, "messages": [{"role": "user", "content": "drain"}]}
    for spent in range(10_000):
        outcome = fake.handle_generate("anthropic", "generate", body, {":path": "/v1/messages"}, GOOD_KEYS["anthropic"])
        if outcome.status == 429:
            return spent
    raise AssertionError("the fake vendor is not rate limited")


def test_two_workers_on_a_rate_limited_key_lose_no_question_to_429s(client: Any, container: Any) -> None:
    from tests.api.worker_kit import (
        TEST_TUNING,
        configure,
        dispatch,
        queued_event,
        trace,
        upload,
        view,
        work,
    )

    container.judge_tuning = TEST_TUNING
    with running_fake_vendor() as fake:
        configure(client, fake, "anthropic")
        upload(client, trace())
        runs = [dispatch(client, questions=WORKER_QUESTIONS) for _ in range(2)]
        event = queued_event(container)
        fake.configure(rate_limit_per_minute=240)  # 4 calls a second, 240 of burst...
        assert drain(fake) >= 239  # ...already spent
        # Two Lambdas, one record each, judging at the same time with the same key.
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda record: work({"Records": [record]}), event["Records"]))
        judged = [r for r in fake.requests if r.get("question_id") or r["endpoint"] == "generate"]

    assert results == [{"batchItemFailures": []}] * 2
    for run_id in runs:
        v = view(client, run_id)
        assert v["status"] == "succeeded", v["error"]
        assert [q["status"] for q in v["progress"]["questions"]] == ["scored"] * len(WORKER_QUESTIONS)
        assert v["retrospective_status"] == "succeeded"
    assert any(r["status"] == 429 for r in judged if r.get("question_id"))  # the limit was really hit
    # The fleet paces by the vendor's budget, stored where every worker of the tenant finds it: the 429s
    # showed that budget spent (calls sent before the fleet knew it), so no slower rate was learned from them.
    item = stored(table=(container.dynamodb, container.config.table_name))
    assert item is not None and float(item["advertised_interval"]["N"]) == pytest.approx(60 / (240 * 0.98))
    assert "interval" not in item or item["interval"].get("NULL")
