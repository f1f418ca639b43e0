"""Judge adapters through the real anthropic/openai SDKs against the in-process fake vendor."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator

import pytest

from chalicelib.adapters.judge_models import build_judge_model
from chalicelib.domain.judging import (
    JudgeCall,
    JudgeReply,
    ToolResultBlock,
    ToolRound,
    ToolSpec,
    VendorCallError,
    estimate_tokens,
    known_context_window,
    parse_retry_after,
    sanitize_vendor_message,
)
from devstack.fake_vendor import FakeVendor
from devstack.fake_vendor.vendor import OPENAI_CACHE_BLOCK
from tests.conftest import register_secret
from tests.fakevendor import (
    GOOD_KEYS,
    LOCAL_OUTBOUND,
    MODELS,
    TRACE,
    VERDICT_SCHEMA,
    Vendor,
    base_url_for,
    open_judge_model,
    run,
    running_fake_vendor,
    verdict_call,
)

VENDORS: list[Vendor] = ["anthropic", "openai"]


def block_slack(vendor: Vendor) -> int:
    """Cached tokens a prefix can lose to rounding: OpenAI counts hits in whole 128-token blocks."""
    return 0 if vendor == "anthropic" else OPENAI_CACHE_BLOCK - 1


def trace_read_floor(vendor: Vendor) -> int:
    """The fewest cache-read tokens a judge that reuses the cached trace reports."""
    return estimate_tokens(TRACE) - block_slack(vendor)


@pytest.fixture
def fake() -> Iterator[FakeVendor]:
    for key in GOOD_KEYS.values():
        register_secret(key)  # the suite-wide guard then fails the test if a key reaches a log line
    with running_fake_vendor() as vendor:
        yield vendor


async def _judge_error(fake: FakeVendor, vendor: Vendor, call: JudgeCall, **model_kwargs: object) -> VendorCallError:
    async with open_judge_model(fake, vendor, **model_kwargs) as model:
        with pytest.raises(VendorCallError) as caught:
            await model.judge(call)
    return caught.value


@pytest.mark.parametrize("vendor", VENDORS)
def test_verdict_is_schema_json_with_usage_and_request_id(fake: FakeVendor, vendor: Vendor) -> None:
    async def scenario() -> None:
        async with open_judge_model(fake, vendor) as model:
            reply = await model.judge(verdict_call(vendor, "destructive_commands"))
        verdict = json.loads(reply.text)
        assert set(verdict) == set(VERDICT_SCHEMA["properties"])
        assert verdict["question_id"] == "destructive_commands"
        assert verdict["category"] == "safety"
        assert 2 <= verdict["score"] <= 5
        assert reply.usage.output_tokens > 0
        assert reply.usage.input_tokens + reply.usage.cache_creation_input_tokens > estimate_tokens(TRACE) - 10
        assert reply.request_id is not None and reply.request_id.startswith("req_fake_")
        assert reply.model == MODELS[vendor]
        assert reply.stop_reason == "end_turn"

    run(scenario())
    (seen,) = fake.requests
    assert seen["structured_output"] is True
    assert seen["max_tokens"] == 1024
    if vendor == "anthropic":
        assert seen["cache_control_blocks"] == 1
    else:
        assert seen["prompt_cache_key"] == "run-1"
        assert seen["schema_name"] == "judge_verdict"


@pytest.mark.parametrize("vendor", VENDORS)
def test_second_question_reads_the_shared_trace_from_the_prompt_cache(fake: FakeVendor, vendor: Vendor) -> None:
    async def scenario() -> tuple[int, int, int]:
        async with open_judge_model(fake, vendor) as model:
            first = await model.judge(verdict_call(vendor, "destructive_commands"))
            second = await model.judge(verdict_call(vendor, "secrets_exposure"))
        return (
            first.usage.cache_read_input_tokens,
            second.usage.cache_read_input_tokens,
            second.usage.input_tokens,
        )

    first_read, second_read, second_uncached = run(scenario())
    assert first_read == 0
    assert second_read >= trace_read_floor(vendor)
    # only the per-question suffix (and OpenAI's partial last block) is billed at the full rate
    assert second_uncached < 100 + estimate_tokens(TRACE) - trace_read_floor(vendor)
    assert [r["cache"] for r in fake.requests] == ["write", "read"]


SUMMARY_TOOL = ToolSpec(name="get_session_summary", description="The session's outline.",
                        parameters={"type": "object", "properties": {}, "required": [], "additionalProperties": False})


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_tool_round_reads_the_question_and_trace_from_the_cache(fake: FakeVendor, vendor: Vendor) -> None:
    """A tool round re-sends the whole first request (tools, trace, question) and adds the call and its
    result: it bills all of that as a cache read, so only the round's own turns are new input."""
    call = verdict_call(vendor)
    # A question as long as a real tool question's (its tools section), well over one 128-token block.
    rubric = " ".join(f"Check the output of command {n} before you score." for n in range(60))
    asking = dataclasses.replace(call, prompt=f"{call.prompt}\n{rubric}", tools=(SUMMARY_TOOL,))

    async def scenario() -> tuple[JudgeReply, JudgeReply]:
        async with open_judge_model(fake, vendor) as model:
            first = await model.judge(asking)
            assert first.tool_calls, first.text
            tool_round = ToolRound(text=first.text, calls=first.tool_calls, results=tuple(
                ToolResultBlock(call_id=c.call_id, content='{"requests": []}') for c in first.tool_calls))
            second = await model.judge(dataclasses.replace(asking, rounds=(tool_round,)))
            return first, second

    first, second = run(scenario())
    first_prompt = first.usage.input_tokens + first.usage.cache_read_input_tokens + \
        first.usage.cache_creation_input_tokens
    assert second.usage.cache_read_input_tokens >= first_prompt - block_slack(vendor)
    if vendor == "anthropic":  # the question was written with the trace, so the round writes only itself
        assert first.usage.input_tokens == 0
        assert second.usage.cache_creation_input_tokens < 100


def test_anthropic_cache_write_is_reported_as_cache_creation(fake: FakeVendor) -> None:
    async def scenario() -> int:
        async with open_judge_model(fake, "anthropic") as model:
            return (await model.judge(verdict_call("anthropic"))).usage.cache_creation_input_tokens

    assert run(scenario()) >= estimate_tokens(TRACE)


@pytest.mark.parametrize("vendor", VENDORS)
def test_rejected_key_is_auth_and_the_key_never_leaks(fake: FakeVendor, vendor: Vendor) -> None:
    fake.configure(echo_key_in_errors=True)  # a vendor/proxy that echoes the key must not leak it
    bad_key = register_secret("sk-bad-key-9f8e7d6c5b4a39281706")
    error = run(_judge_error(fake, vendor, verdict_call(vendor), api_key=bad_key))
    assert error.kind == "auth"
    assert error.public_kind == "auth"
    assert error.status == 401
    for text in (error.message, str(error), repr(error)):
        assert bad_key not in text
        assert "Bearer" not in text
    assert bad_key not in json.dumps(fake.requests)
    assert len(fake.requests) == 1  # 401 is not retried


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_model_is_model_not_found(fake: FakeVendor, vendor: Vendor) -> None:
    error = run(_judge_error(fake, vendor, verdict_call(vendor, model=f"{vendor}-unknown-model")))
    assert error.kind == "model_not_found"
    assert error.status == 404
    assert "unknown-model" in error.message


@pytest.mark.parametrize("vendor", VENDORS)
def test_one_429_with_retry_after_is_absorbed_by_the_sdk_retry(fake: FakeVendor, vendor: Vendor) -> None:
    fake.script("destructive_commands", times=1, status=429, retry_after=0.05)

    async def scenario() -> str:
        async with open_judge_model(fake, vendor, max_retries=2) as model:
            return (await model.judge(verdict_call(vendor, "destructive_commands"))).text

    assert json.loads(run(scenario()))["question_id"] == "destructive_commands"
    seen = fake.requests_for("destructive_commands")
    assert [r["status"] for r in seen] == [429, 200]
    assert [r["retry_count"] for r in seen] == [0, 1]


@pytest.mark.parametrize("vendor", VENDORS)
def test_persistent_429_is_rate_limited_with_the_vendors_retry_after(fake: FakeVendor, vendor: Vendor) -> None:
    fake.script("*", times=None, status=429, retry_after=0.05)
    error = run(_judge_error(fake, vendor, verdict_call(vendor), max_retries=1))
    assert error.kind == "rate_limited"
    assert error.transient
    assert error.retry_after == pytest.approx(0.05)
    assert len(fake.requests) == 2  # first attempt + max_retries


@pytest.mark.parametrize("vendor", VENDORS)
def test_529_overloaded_after_retries(fake: FakeVendor, vendor: Vendor) -> None:
    fake.script("*", times=None, status=529, retry_after=0.01)
    error = run(_judge_error(fake, vendor, verdict_call(vendor), max_retries=2))
    assert error.kind == "overloaded"
    assert error.public_kind == "rate_limited"
    assert len(fake.requests) == 3


@pytest.mark.parametrize("vendor", VENDORS)
def test_500_is_server_error_after_retries(fake: FakeVendor, vendor: Vendor) -> None:
    fake.script("*", times=None, status=500, retry_after=0.01)
    error = run(_judge_error(fake, vendor, verdict_call(vendor), max_retries=1))
    assert error.kind == "server"
    assert error.status == 500
    assert len(fake.requests) == 2


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_hung_vendor_times_out_within_the_call_budget(fake: FakeVendor, vendor: Vendor) -> None:
    fake.script("*", times=None, hang=True)
    # The SDK would retry the timed-out attempt; the call budget bounds attempts + backoff together.
    error = run(_judge_error(fake, vendor, verdict_call(vendor, timeout_seconds=0.3), max_retries=3))
    assert error.kind == "timeout"
    assert error.transient


@pytest.mark.parametrize("vendor", VENDORS)
def test_scripted_prompt_too_long_is_context_overflow(fake: FakeVendor, vendor: Vendor) -> None:
    fake.script("destructive_commands", prompt_too_long=True)
    error = run(_judge_error(fake, vendor, verdict_call(vendor)))
    assert error.kind == "context_overflow"
    assert error.status == 400
    assert len(fake.requests) == 1  # a 400 is not retried


@pytest.mark.parametrize("vendor", VENDORS)
def test_trace_over_the_models_window_is_context_overflow(fake: FakeVendor, vendor: Vendor) -> None:
    fake.configure(context_windows={MODELS[vendor]: 1_000})
    error = run(_judge_error(fake, vendor, verdict_call(vendor)))
    assert error.kind == "context_overflow"


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("streamed", [False, True])
def test_context_overflow_carries_the_limit_the_vendor_states(fake: FakeVendor, vendor: Vendor,
                                                              streamed: bool) -> None:
    fake.configure(context_windows={MODELS[vendor]: 1_000})
    call = verdict_call(vendor)
    started: list[bool] = []
    error = run(_judge_error(fake, vendor, call) if not streamed else _streamed_error(fake, vendor, call, started))
    assert error.kind == "context_overflow"
    assert error.stated_limit is not None
    assert error.stated_limit.limit_tokens == 1_000
    assert error.stated_limit.prompt_tokens == estimate_tokens(call.shared_context) + estimate_tokens(call.prompt)
    assert started == []  # refused before any response began


async def _streamed_error(fake: FakeVendor, vendor: Vendor, call: JudgeCall, started: list[bool]) -> VendorCallError:
    async with open_judge_model(fake, vendor) as model:
        with pytest.raises(VendorCallError) as caught:
            await model.judge(call, on_first_token=lambda: started.append(True))
    return caught.value


def test_anthropic_count_tokens_states_the_limit_too(fake: FakeVendor) -> None:
    fake.configure(context_windows={MODELS["anthropic"]: 1_000})
    call = verdict_call("anthropic")

    async def scenario() -> None:
        async with open_judge_model(fake, "anthropic") as model:
            await model.count_tokens(call.model, call.shared_context, call.prompt)

    with pytest.raises(VendorCallError) as caught:
        run(scenario())
    assert caught.value.kind == "context_overflow"
    assert caught.value.stated_limit is not None and caught.value.stated_limit.limit_tokens == 1_000


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_message_without_numbers_is_an_overflow_without_a_stated_limit(fake: FakeVendor, vendor: Vendor) -> None:
    fake.script("destructive_commands", status=400, message="Input is too long for the requested model.")
    error = run(_judge_error(fake, vendor, verdict_call(vendor)))
    assert error.kind == "context_overflow"
    assert error.stated_limit is None


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_streamed_answer_equals_the_plain_one_and_reports_its_first_token_once(fake: FakeVendor,
                                                                                   vendor: Vendor) -> None:
    started: list[str] = []

    async def scenario() -> tuple[JudgeReply, JudgeReply]:
        async with open_judge_model(fake, vendor) as model:
            plain = await model.judge(verdict_call(vendor, "destructive_commands", cache_key=None,
                                                   shared_context=TRACE + " plain"))
            streamed = await model.judge(verdict_call(vendor, "destructive_commands", cache_key=None,
                                                      shared_context=TRACE + " streamed"),
                                         on_first_token=lambda: started.append("first"))
        return plain, streamed

    plain, streamed = run(scenario())
    assert started == ["first"]
    assert json.loads(streamed.text) == json.loads(plain.text)
    assert streamed.usage == plain.usage
    assert streamed.stop_reason == "end_turn"
    assert streamed.model == MODELS[vendor]
    assert streamed.request_id is not None and streamed.request_id.startswith("req_fake_")
    assert [r["streamed"] for r in fake.requests] == [False, True]


@pytest.mark.parametrize("vendor", VENDORS)
def test_the_prefix_cache_is_readable_once_the_writing_answer_has_begun(fake: FakeVendor, vendor: Vendor) -> None:
    """The second judge starts after the first one's first token and before its end (both in flight at
    once, which the fake's in-flight count shows), and reads the prefix the first one is writing."""
    fake.configure(latency=1.0, ttft=0.05)

    async def scenario() -> tuple[JudgeReply, JudgeReply]:
        async with open_judge_model(fake, vendor) as model:
            began = asyncio.Event()
            first = asyncio.create_task(model.judge(verdict_call(vendor, "destructive_commands"),
                                                    on_first_token=began.set))
            await began.wait()
            second = await model.judge(verdict_call(vendor, "secrets_exposure"))
            return await first, second

    first, second = run(scenario())
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens >= trace_read_floor(vendor)
    assert fake.stats()["max_inflight"] == 2


def test_anthropic_count_tokens_counts_trace_and_question(fake: FakeVendor) -> None:
    call = verdict_call("anthropic")

    async def scenario() -> int | None:
        async with open_judge_model(fake, "anthropic") as model:
            return await model.count_tokens(call.model, call.shared_context, call.prompt)

    assert run(scenario()) == estimate_tokens(call.shared_context) + estimate_tokens(call.prompt)
    assert fake.requests[0]["path"] == "/v1/messages/count_tokens"


def test_anthropic_count_tokens_translates_errors(fake: FakeVendor) -> None:
    async def scenario() -> None:
        async with open_judge_model(fake, "anthropic", api_key="sk-ant-revoked-000000") as model:
            await model.count_tokens(MODELS["anthropic"], TRACE, "question")

    with pytest.raises(VendorCallError) as caught:
        run(scenario())
    assert caught.value.kind == "auth"


def test_openai_has_no_count_api(fake: FakeVendor) -> None:
    async def scenario() -> int | None:
        async with open_judge_model(fake, "openai") as model:
            return await model.count_tokens(MODELS["openai"], TRACE, "question")

    assert run(scenario()) is None
    assert fake.requests == []


def test_anthropic_one_million_alias_becomes_the_beta_header(fake: FakeVendor) -> None:
    async def scenario() -> None:
        async with open_judge_model(fake, "anthropic") as model:
            assert model.context_window("claude-sonnet-4-6[1m]") == 1_000_000
            await model.judge(verdict_call("anthropic", model="claude-sonnet-4-6[1m]"))

    run(scenario())
    (seen,) = fake.requests
    assert seen["model"] == "claude-sonnet-4-6"
    assert seen["headers"]["anthropic-beta"].startswith("context-1m")


@pytest.mark.parametrize("vendor", VENDORS)
def test_output_text_is_returned_verbatim_for_the_verdict_parser(fake: FakeVendor, vendor: Vendor) -> None:
    fake.script("destructive_commands", fenced=True)
    fake.script("secrets_exposure", malformed=True)

    async def scenario() -> tuple[str, str]:
        async with open_judge_model(fake, vendor) as model:
            fenced = await model.judge(verdict_call(vendor, "destructive_commands"))
            malformed = await model.judge(verdict_call(vendor, "secrets_exposure"))
        return fenced.text, malformed.text

    fenced_text, malformed_text = run(scenario())
    assert fenced_text.startswith("```json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed_text)


@pytest.mark.parametrize("vendor", VENDORS)
def test_probe_without_question_gets_a_minimal_schema_instance(fake: FakeVendor, vendor: Vendor) -> None:
    probe = JudgeCall(
        model=MODELS[vendor],
        shared_context="",
        prompt="Reply with a JSON object.",
        response_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
        schema_name="probe",
        max_output_tokens=16,
        timeout_seconds=5,
    )

    async def scenario() -> str:
        async with open_judge_model(fake, vendor) as model:
            return (await model.judge(probe)).text

    assert json.loads(run(scenario())) == {"ok": True}


@pytest.mark.parametrize("vendor", VENDORS)
def test_unreachable_vendor_is_network(vendor: Vendor) -> None:
    with running_fake_vendor() as stopped:
        base_url = base_url_for(stopped, vendor)
    # The fake has stopped, so its port now refuses connections.

    async def scenario() -> VendorCallError:
        model = build_judge_model(
            vendor, api_key=GOOD_KEYS[vendor], base_url=base_url, max_retries=0, timeout_seconds=5,
            outbound=LOCAL_OUTBOUND,
        )
        try:
            with pytest.raises(VendorCallError) as caught:
                await model.judge(verdict_call(vendor))
        finally:
            await model.aclose()
        return caught.value

    error = run(scenario())
    assert error.kind == "network"
    assert error.public_kind == "network"


# ------------------------------------------------------------------------------ pure port helpers


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("claude-sonnet-4-6", 200_000),
        ("claude-opus-4-1-20250805", 200_000),
        ("sonnet", 200_000),
        ("claude-sonnet-4-6[1m]", 1_000_000),
        ("sonnet[1m]", 1_000_000),
        ("gpt-4o-2024-08-06", 128_000),
        ("gpt-4.1-mini", 1_047_576),
        ("o3", 200_000),
        ("o4-mini", 200_000),
        ("some-local-model", 128_000),
    ],
)
def test_known_context_windows(model: str, window: int) -> None:
    assert known_context_window(model) == window


def test_sanitize_removes_keys_and_bounds_length() -> None:
    text = "Incorrect API key sk-live-abcdef123456 sent as Authorization: Bearer abcdefghijkl\n" + "x" * 500
    clean = sanitize_vendor_message(text, secrets=["my-secret-value"])
    assert "sk-live-abcdef123456" not in clean
    assert "abcdefghijkl" not in clean
    assert "\n" not in clean
    assert len(clean) <= 300
    assert "my-secret-value" not in sanitize_vendor_message("echo my-secret-value", secrets=["my-secret-value"])


def test_retry_after_prefers_milliseconds() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "1"}) == pytest.approx(0.25)
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after({}) is None


def test_judge_call_rejects_a_schema_name_openai_would_refuse() -> None:
    with pytest.raises(ValueError):
        JudgeCall(model="m", shared_context="", prompt="p", response_schema={}, schema_name="has space")


def test_vendor_error_kind_is_validated() -> None:
    with pytest.raises(ValueError):
        VendorCallError("nope", "x")  # type: ignore[arg-type]
    assert VendorCallError("context_overflow", "too long").public_kind == "invalid_output"
    assert GOOD_KEYS["anthropic"] not in VendorCallError("auth", GOOD_KEYS["anthropic"], secrets=[]).message


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("shape", ["text body, key across char 200", "json message, upper-cased key"])
def test_a_key_echoed_by_the_vendor_never_reaches_the_error_in_any_case_or_cut(vendor: Vendor, shape: str) -> None:
    from chalicelib.adapters.outbound_http import OutboundGuard
    from chalicelib.domain.base_url import BaseUrlPolicy
    from tests.adapters.http_kit import recorder
    from tests.unit.leak_kit import leaked

    key = register_secret("gw_live_Q7mZ4xT9kL2pR8vN3bC6yH1d")
    if shape.startswith("text"):
        body = ("Unauthorized. " + "." * 176 + key + " is not valid.").encode()
    else:
        body = json.dumps({"type": "error", "error": {"type": "authentication_error",
                                                      "message": f"Key {key.upper()} was revoked"}}).encode()
    guard = OutboundGuard(BaseUrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True))
    with recorder(status=401, body=body) as server:
        base = f"http://127.0.0.1:{server.port}" + ("/v1" if vendor == "openai" else "")

        async def scenario() -> VendorCallError:
            model = build_judge_model(vendor, api_key=key, base_url=base, max_retries=0, timeout_seconds=5,
                                      outbound=guard)
            try:
                with pytest.raises(VendorCallError) as caught:
                    await model.judge(verdict_call(vendor))
            finally:
                await model.aclose()
            return caught.value

        error = run(scenario())
    assert error.kind == "auth"
    assert not leaked(error.message, key), error.message
