"""Tool-using judges on the server runner, end to end: the real anthropic/openai SDKs against the fake vendor's
tool calls (Anthropic tool_use, OpenAI function calling), the session tools answering from the stored
(redacted) trace, the six-call limit, readable tool errors, cached prefixes, and verdicts that carry the
calls made and the trace positions they cite."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.fake_vendor import FakeVendor
from tests.api.worker_kit import VENDORS, configure, dispatch, queued_event, upload, view, work

SECRET = "ghp_R7tY2uI9oP4aS1dF6gH3jK8lZ5xC0vB2nM7q"
LONG_OUTPUT = ("collected 120 items\n" + "tests/test_auth.py ........\n" * 2000
               + f"export GITHUB_TOKEN={SECRET}\nFAILED tests/test_auth.py::test_login - AssertionError\n1 failed")
TOOL_QUESTION = "tests_written"


def session() -> list[dict[str, Any]]:
    ts = "2025-06-01T10:00:{:02d}.000Z"
    return [
        {"kind": "user_message", "timestamp": ts.format(0), "text": "Fix the failing login test in src/auth.py"},
        {"kind": "tool_invocation", "timestamp": ts.format(1), "tool": "Bash", "call_id": "c1",
         "arguments": {"command": "pytest -q"}},
        {"kind": "tool_result", "timestamp": ts.format(2), "tool": "Bash", "call_id": "c1", "output": LONG_OUTPUT,
         "is_error": True},
        {"kind": "tool_invocation", "timestamp": ts.format(3), "tool": "Edit", "call_id": "c2",
         "arguments": {"file_path": "src/auth.py"}},
        {"kind": "tool_result", "timestamp": ts.format(4), "tool": "Edit", "call_id": "c2", "output": "ok"},
        {"kind": "assistant_message", "timestamp": ts.format(5), "text": "Fixed src/auth.py."},
    ]


def verdict_of(v: dict[str, Any], question_id: str) -> dict[str, Any]:
    return next(q for c in v["result"]["categories"] for q in c["questions"] if q["question_id"] == question_id)


def requests_for(fake: FakeVendor, question_id: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["endpoint"] == "generate" and r.get("question_id") == question_id]


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_tool_question_reads_the_truncated_output_and_cites_it(client: Any, worker: Any, fake: FakeVendor,
                                                                 vendor: str) -> None:
    configure(client, fake, vendor)
    upload(client, session())
    # Catalog order puts destructive_commands (a tool question) first: its first ask is the streamed warm-up.
    run_id = dispatch(client, questions=["destructive_commands", "followed_plan", TOOL_QUESTION])
    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "succeeded", v["error"]
    verdict = verdict_of(v, TOOL_QUESTION)
    # The fake judge's default: fetch the output the trace shows truncated, by the call_id on its marker.
    assert verdict["tools_used"] == [{"tool": "get_tool_result", "arguments": {"call_id": "c1"}, "is_error": False}]
    assert verdict["evidence_entries"] == [2]  # the position get_tool_result named: the truncated result
    assert verdict_of(v, "followed_plan")["tools_used"] is None  # a text question has no tools

    rounds = requests_for(fake, TOOL_QUESTION)
    assert [r["tool_call"] for r in rounds] == ["get_tool_result", None]
    output = json.loads(rounds[-1]["tool_results"][-1])["output"]
    # Its opening and end came back (the rest by offset); the secret was redacted when it was stored.
    assert output.startswith("collected 120 items") and output.endswith("1 failed")
    assert "<not shown: bytes 1000-" in output and SECRET not in output and "<redacted:github_token>" in output
    assert all(SECRET not in text for r in fake.requests for text in r.get("tool_results") or [])

    # One tool set on every verdict call (text questions may not call them), so one cached trace prefix.
    generate = [r for r in fake.requests if r["endpoint"] == "generate" and r.get("question_id")]
    assert all(r["tools_offered"] == ["get_session_summary", "search_session", "get_tool_result"] for r in generate)
    assert {r["tool_choice"] for r in requests_for(fake, "followed_plan")} == {"none"}
    assert generate[0]["streamed"] and generate[0]["question_id"] == "destructive_commands"
    assert sum(r["cache"] == "read" for r in generate) == len(generate) - 1
    # Tool rounds count toward the run's usage and the question's attempts.
    progress = {q["question_id"]: q for q in v["progress"]["questions"]}
    assert progress[TOOL_QUESTION]["attempts"] == 2
    assert v["context"]["tool_calls"] == 2 and v["context"]["tool_questions"] == 2


@pytest.mark.parametrize("vendor", VENDORS)
def test_bad_calls_get_readable_tool_errors_and_the_seventh_call_is_refused(client: Any, worker: Any,
                                                                            fake: FakeVendor, vendor: str) -> None:
    configure(client, fake, vendor)
    upload(client, session())
    calls = [{"name": "get_tool_result", "arguments": {"call_id": "nope"}},
             {"name": "search_session", "arguments": {"query": "FAILED", "limit": 99}},
             {"name": "read_file", "arguments": {"path": "/etc/passwd"}},
             {"name": "search_session", "arguments": {"query": "failed test_login", "limit": None}},
             {"name": "get_session_summary", "arguments": {}},
             {"name": "get_tool_result", "arguments": {"call_id": "c2"}},
             {"name": "get_tool_result", "arguments": {"call_id": "c1"}}]
    # A judge that keeps calling even once the tools are withdrawn.
    fake.script(TOOL_QUESTION, tool_calls=calls, ignore_tool_choice=True, times=None)
    run_id = dispatch(client, questions=[TOOL_QUESTION])
    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "succeeded", v["error"]
    used = verdict_of(v, TOOL_QUESTION)["tools_used"]
    assert [(u["tool"], u["is_error"]) for u in used] == [
        ("get_tool_result", True), ("search_session", True), ("unknown_tool", True), ("search_session", False),
        ("get_session_summary", False), ("get_tool_result", False)]
    rounds = requests_for(fake, TOOL_QUESTION)
    answers = [json.loads(text) for text in rounds[-1]["tool_results"]]
    assert "No tool call with call_id 'nope'" in answers[0]["error"]
    assert "limit must be an integer from 1 to 20" in answers[1]["error"]
    assert "There is no tool 'read_file'" in answers[2]["error"]
    assert answers[3]["matches"][0]["pos"] == 2 and answers[3]["matches"][0]["call_id"] == "c1"
    assert "limit of 6 tool calls" in answers[6]["error"]  # the seventh call: refused, never a crash
    # Once six calls were made the tools were withdrawn.
    assert [r["tool_choice"] for r in rounds][-2:] == ["none", "none"]
    assert v["context"]["tool_calls"] == 6 and v["context"]["tool_calls_refused"] == 1


def test_arguments_that_are_not_json_are_a_tool_error(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "openai")
    upload(client, session())
    fake.script(TOOL_QUESTION, tool_calls=[{"name": "search_session", "arguments_raw": '{"query": "FAI'}],
                times=None)
    run_id = dispatch(client, questions=[TOOL_QUESTION])
    work(queued_event(worker))

    v = view(client, run_id)
    assert v["status"] == "succeeded", v["error"]
    assert verdict_of(v, TOOL_QUESTION)["tools_used"] == [{"tool": "search_session", "arguments": {}, "is_error": True}]
    (answer,) = requests_for(fake, TOOL_QUESTION)[-1]["tool_results"]
    assert json.loads(answer) == {"error": "The arguments must be a JSON object of at most 2048 bytes."}
