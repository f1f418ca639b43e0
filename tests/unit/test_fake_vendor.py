"""The dev/test fake LLM vendor itself: wire shapes, scripting over HTTP, rate limit, cache timing, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.fake_vendor import FakeVendor, FakeVendorOptions, FakeVendorProcess, key_fingerprint, minimal_instance

ROOT = Path(__file__).resolve().parents[2]
ANTHROPIC_KEY = "sk-ant-unit-test-key-000111222333"
OPENAI_KEY = "sk-proj-unit-test-key-444555666777"


@pytest.fixture
def fake() -> Iterator[FakeVendor]:
    with FakeVendor() as vendor:
        yield vendor


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def _chat(fake: FakeVendor, question_id: str, *, key: str = OPENAI_KEY) -> tuple[int, Any, Any]:
    return _http(
        "POST",
        f"{fake.openai_base_url}/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": f"Category: quality\nID: {question_id}"}]},
        {"authorization": f"Bearer {key}"},
    )


def _message(fake: FakeVendor, system: str, question_id: str) -> tuple[int, Any, Any]:
    return _http(
        "POST",
        f"{fake.base_url}/v1/messages",
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 256,
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": f"Category: safety\nID: {question_id}"}],
        },
        {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
    )


def test_rules_scripted_over_http_apply_per_question_and_then_expire(fake: FakeVendor) -> None:
    status, body, _ = _http(
        "POST", f"{fake.base_url}/_fake/script", {"rules": [{"match": "q1", "status": 500, "times": 1}]}
    )
    assert status == 200 and len(body["rule_ids"]) == 1

    assert _chat(fake, "q2")[0] == 200
    status, body, _ = _chat(fake, "q1")
    assert status == 500
    assert body["error"]["type"] == "server_error"
    assert _chat(fake, "q1")[0] == 200

    _, listed, _ = _http("GET", f"{fake.base_url}/_fake/requests?since=1")
    assert [(r["question_id"], r["status"]) for r in listed["requests"]] == [("q1", 500), ("q1", 200)]
    _, stats, _ = _http("GET", f"{fake.base_url}/_fake/stats")
    assert stats["by_status"] == {"200": 2, "500": 1}

    assert _http("POST", f"{fake.base_url}/_fake/reset", {})[0] == 200
    assert fake.requests == []


def test_unknown_rule_fields_and_options_are_rejected(fake: FakeVendor) -> None:
    assert _http("POST", f"{fake.base_url}/_fake/script", {"match": "q", "sttus": 500})[0] == 400
    assert _http("POST", f"{fake.base_url}/_fake/options", {"latenc": 1})[0] == 400
    status, options, _ = _http("POST", f"{fake.base_url}/_fake/options", {"min_cacheable_tokens": 7})
    assert status == 200 and options["min_cacheable_tokens"] == 7


def test_verdicts_are_deterministic_and_scriptable(fake: FakeVendor) -> None:
    first = json.loads(_chat(fake, "q9")[1]["choices"][0]["message"]["content"])
    again = json.loads(_chat(fake, "q9")[1]["choices"][0]["message"]["content"])
    assert first == again
    assert 2 <= first["score"] <= 5

    fake.script("q9", score=7, wrong_ids=True)
    odd = json.loads(_chat(fake, "q9")[1]["choices"][0]["message"]["content"])
    assert odd["score"] == 7
    assert odd["question_id"] != "q9"


def test_rate_limit_answers_429_with_retry_after(fake: FakeVendor) -> None:
    fake.configure(rate_limit_per_minute=2)
    assert [_chat(fake, "q")[0] for _ in range(2)] == [200, 200]
    status, body, headers = _chat(fake, "q")
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert int(headers["retry-after-ms"]) > 0
    assert int(headers["retry-after"]) >= 1


def test_concurrent_requests_cannot_read_a_prefix_still_being_written(fake: FakeVendor) -> None:
    fake.configure(latency=0.2)
    system = "shared trace " * 200
    results: list[Any] = []
    threads = [threading.Thread(target=lambda q=q: results.append(_message(fake, system, q))) for q in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(status == 200 for status, _, _ in results)
    assert [r["cache"] for r in fake.requests] == ["write", "write"]

    _, later, _ = _message(fake, system, "c")
    assert later["usage"]["cache_read_input_tokens"] > 0
    assert fake.stats()["max_inflight"] == 2


def test_api_keys_are_fingerprinted_never_recorded(fake: FakeVendor) -> None:
    _message(fake, "trace", "q")
    _chat(fake, "q", key="sk-revoked-000000000000")
    dumped = json.dumps(fake.requests)
    assert ANTHROPIC_KEY not in dumped and "sk-revoked-000000000000" not in dumped
    assert fake.requests[0]["key_fingerprint"] == key_fingerprint(ANTHROPIC_KEY)
    assert fake.requests[1]["status"] == 401
    assert "authorization" not in fake.requests[1]["headers"]


def test_models_endpoint_answers_in_each_vendors_shape(fake: FakeVendor) -> None:
    status, body, _ = _http(
        "GET",
        f"{fake.base_url}/v1/models/claude-sonnet-4-6",
        headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
    )
    assert status == 200 and body["type"] == "model"
    status, body, _ = _http(
        "GET", f"{fake.openai_base_url}/models/gpt-unknown", headers={"authorization": f"Bearer {OPENAI_KEY}"}
    )
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_minimal_instance_follows_refs_unions_and_bounds() -> None:
    schema = {
        "type": "object",
        "required": ["items", "kind", "n", "maybe"],
        "properties": {
            "items": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/item"}},
            "kind": {"enum": ["a", "b"]},
            "n": {"type": "integer", "minimum": 3, "maximum": 9},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 4}]},
            "optional": {"type": "boolean"},
        },
        "$defs": {"item": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}}},
    }
    assert minimal_instance(schema) == {"items": [{"ok": True}, {"ok": True}], "kind": "a", "n": 3, "maybe": "xxxx"}


def test_cli_serves_on_loopback_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.fake_vendor", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        assert _http("GET", f"{url}/_fake/health")[1] == {"ok": True}
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_options_survive_reset_as_constructed() -> None:
    with FakeVendor(options=FakeVendorOptions(latency=0.0, min_cacheable_tokens=5)) as vendor:
        vendor.configure(min_cacheable_tokens=50)
        vendor.reset()
        assert vendor.options.min_cacheable_tokens == 5


def test_the_fake_in_its_own_process_keeps_its_options_across_resets_and_stops_on_exit() -> None:
    with FakeVendorProcess(FakeVendorOptions(latency=0.0, ttft=0.0, context_windows={"gpt-4.1": 1_000})) as fake:
        fake.configure(context_windows={})
        fake.reset()
        options = _http("GET", f"{fake.base_url}/_fake/options")[1]
        assert options["context_windows"] == {"gpt-4.1": 1_000} and options["ttft"] == 0.0
        assert fake.openai_base_url == fake.base_url + "/v1"
        assert fake.requests == [] and fake.stats()["requests"] == 0
        url = fake.base_url
    with pytest.raises(OSError):
        _http("GET", f"{url}/_fake/health")
