"""The vendor batch adapters with the real anthropic/openai SDKs against the dev fake vendor's batch APIs:
submit, status, results (succeeded with usage and prompt-cache reads, errored, expired, canceled),
cancel, and a refused key as the judge adapters translate it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.adapters.vendor_batches import BatchRequest, build_batch_client
from chalicelib.domain.judging import JudgeCall, VendorCallError
from chalicelib.domain.vendor_batches import RequestOutcome, custom_id
from devstack.fake_vendor import FakeVendor
from devstack.fake_vendor import batches as fake_vendor_batches
from tests.fakevendor import GOOD_KEYS, LOCAL_OUTBOUND, MODELS, TRACE, VERDICT_SCHEMA, base_url_for, running_fake_vendor

VENDORS = ["anthropic", "openai"]
QUESTIONS = ["sensitive_files", "destructive_commands", "test_coverage"]


@pytest.fixture
def fake() -> Iterator[FakeVendor]:
    with running_fake_vendor() as vendor:
        yield vendor


def calls(vendor: str) -> list[BatchRequest]:
    return [BatchRequest(custom_id=custom_id(i), call=JudgeCall(
        model=MODELS[vendor], shared_context=TRACE, prompt=f"Category: safety\nID: {q}\nAnswer as JSON.",
        response_schema=VERDICT_SCHEMA, schema_name="verdict", max_output_tokens=512, cache_key="evr_test",
        timeout_seconds=30)) for i, q in enumerate(QUESTIONS)]


def client_for(fake: FakeVendor, vendor: str, key: str | None = None) -> Any:
    return build_batch_client(vendor, api_key=key or GOOD_KEYS[vendor],  # type: ignore[arg-type]
                              base_url=base_url_for(fake, vendor), outbound=LOCAL_OUTBOUND)


async def run_batch(fake: FakeVendor, vendor: str, *, cancel: bool = False) -> list[RequestOutcome]:
    client = client_for(fake, vendor)
    model = MODELS[vendor]
    try:
        submitted = await client.submit(calls(vendor), metadata={"eval_run_id": "evr_test"})
        if cancel:
            await client.cancel(submitted.vendor_batch_id, model=model)
        deadline = time.monotonic() + 20
        while not (await client.status(submitted.vendor_batch_id, model=model)).ended:
            assert time.monotonic() < deadline, "the fake batch never ended"
            await asyncio.sleep(0.05)
        return sorted(await client.results(submitted.vendor_batch_id, model=model), key=lambda o: o.custom_id)
    finally:
        await client.aclose()


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_batch_answers_every_request_reading_the_cached_trace(fake: FakeVendor, vendor: str) -> None:
    outcomes = asyncio.run(run_batch(fake, vendor))
    assert [(o.custom_id, o.result) for o in outcomes] == [("q0", "succeeded"), ("q1", "succeeded"),
                                                            ("q2", "succeeded")]
    assert all('"question_id"' in o.text and o.usage.output_tokens > 0 for o in outcomes)
    # The first request wrote the trace prefix; the others read it (both vendors cache in batches).
    assert sum(1 for o in outcomes if o.usage.cache_read_input_tokens > 0) == 2
    batch_requests = [r for r in fake.requests if r.get("batch_id")]
    assert [r["question_id"] for r in batch_requests] == QUESTIONS
    assert all(r["key_fingerprint"] and r["structured_output"] for r in batch_requests)


@pytest.mark.parametrize("vendor", VENDORS)
def test_errored_and_expired_requests_come_back_as_such(fake: FakeVendor, vendor: str) -> None:
    fake.script("destructive_commands", status=400, message="prompt is too long: 300000 tokens > 200000 maximum")
    fake_vendor_batches.configure(fake, expire=["test_coverage"])
    outcomes = {o.custom_id: o for o in asyncio.run(run_batch(fake, vendor))}
    assert outcomes["q0"].result == "succeeded"
    assert (outcomes["q1"].result, outcomes["q1"].error_kind) == ("errored", "context_overflow")
    assert "prompt is too long" in outcomes["q1"].error_message
    assert outcomes["q2"].result == "expired"


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_cancelled_batch_processes_nothing_more(fake: FakeVendor, vendor: str) -> None:
    fake_vendor_batches.configure(fake, hold=True)
    outcomes = asyncio.run(run_batch(fake, vendor, cancel=True))
    assert {o.result for o in outcomes} == {"canceled"}
    assert not [r for r in fake.requests if r.get("batch_id")]


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_refused_key_is_an_auth_error_without_the_key(fake: FakeVendor, vendor: str) -> None:
    key = f"sk-bad-{vendor}-0123456789abcdef"

    async def submit() -> None:
        client = client_for(fake, vendor, key)
        try:
            await client.submit(calls(vendor), metadata={})
        finally:
            await client.aclose()

    with pytest.raises(VendorCallError) as err:
        asyncio.run(submit())
    assert err.value.kind == "auth" and key not in str(err.value)
