"""The judge's session tools over a trace: answers, limits and every bad call as a readable tool error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.judges.tools import (
    ANSWER_BUDGET_CHARS,
    MAX_TOOL_CALLS,
    RESULT_PAGE_MAX_BYTES,
    RESULT_VIEW_BYTES,
    SEARCH_MAX_LIMIT,
    TOOL_SPECS,
    VIEW_HEAD_BYTES,
    VIEW_TAIL_BYTES,
    SessionTools,
    cap_output,
)

LONG_TEST_OUTPUT = ("collected 40 items\n" + "tests/test_x.py ....\n" * 3000
                    + "FAILED tests/test_io.py::test_read\n2 failed")


def trace() -> list[dict[str, Any]]:
    return [
        {"kind": "user_message", "timestamp": "2026-01-01T00:00:00.000Z", "text": "Fix the flaky IO test please"},
        {"kind": "plan", "timestamp": "2026-01-01T00:00:01.000Z", "text": "1. run tests 2. fix test_io"},
        {"kind": "tool_invocation", "timestamp": "2026-01-01T00:00:02.000Z", "tool": "Bash", "call_id": "c1",
         "arguments": {"command": "pytest -q"}},
        {"kind": "tool_result", "timestamp": "2026-01-01T00:00:03.000Z", "tool": "Bash", "call_id": "c1",
         "output": "<truncated: 63060 bytes, kind=Bash>", "is_error": True, "truncated": True,
         "output_bytes": len(LONG_TEST_OUTPUT)},
        {"kind": "tool_invocation", "timestamp": "2026-01-01T00:00:04.000Z", "tool": "Edit", "call_id": "c2",
         "arguments": {"file_path": "src/io.py", "old": "a", "new": "b"}},
        {"kind": "tool_result", "timestamp": "2026-01-01T00:00:05.000Z", "tool": "Edit", "call_id": "c2",
         "output": "Edited SRC/io.py (a.*b)", "is_error": False, "truncated": False, "output_bytes": 23},
        {"kind": "tool_invocation", "timestamp": "2026-01-01T00:00:06.000Z", "tool": "Bash", "call_id": "c3",
         "arguments": {"command": "git push"}},
        {"kind": "assistant_message", "timestamp": "2026-01-01T00:00:07.000Z", "text": "Done: test_io passes."},
    ]


def tools(entries: list[dict[str, Any]] | None = None) -> SessionTools:
    full = {3: cap_output(LONG_TEST_OUTPUT)}
    return SessionTools(trace() if entries is None else entries, session_id="sess-1", full_output=full.get)


def answer(name: str, arguments: Any, box: SessionTools | None = None) -> tuple[dict[str, Any], bool]:
    result = (box or tools()).conversation().call(name, arguments)
    return json.loads(result.content), result.is_error


def test_get_tool_result_shows_the_opening_and_end_of_a_truncated_call_and_names_the_rest() -> None:
    body, is_error = answer("get_tool_result", {"call_id": "c1"})
    assert not is_error
    assert body["pos"] == 3 and body["tool"] == "Bash" and body["is_error"] is True
    assert body["output_bytes"] == len(LONG_TEST_OUTPUT)
    stored = cap_output(LONG_TEST_OUTPUT)  # what was kept of it: its first and last bytes
    assert body["stored_bytes"] == len(stored.encode())
    output = body["output"]
    assert output.startswith("collected 40 items") and output.endswith("FAILED tests/test_io.py::test_read\n2 failed")
    head_end, tail_start = VIEW_HEAD_BYTES, body["stored_bytes"] - VIEW_TAIL_BYTES
    assert body["shown"] == [[0, head_end], [tail_start, body["stored_bytes"]]] and body["next_offset"] == head_end
    assert (f"<not shown: bytes {head_end}-{tail_start} of {body['stored_bytes']}; read them with "
            f"get_tool_result(call_id, offset={head_end})>") in output
    assert len(output.encode()) < RESULT_VIEW_BYTES + 200


def test_a_judge_reads_the_whole_stored_output_page_by_page() -> None:
    stored = cap_output(LONG_TEST_OUTPUT)
    box = tools()
    conversation = box.conversation()
    first = json.loads(conversation.call("get_tool_result", {"call_id": "c1"}).content)
    pages, offset = [stored.encode()[:first["next_offset"]].decode()], first["next_offset"]
    while offset is not None:
        page = json.loads(conversation.call("get_tool_result", {"call_id": "c1", "offset": offset,
                                                                "max_bytes": RESULT_PAGE_MAX_BYTES}).content)
        assert page["shown"] == [[offset, page["next_offset"] or page["stored_bytes"]]]
        pages.append(page["output"])
        offset = page["next_offset"]
    assert "".join(pages) == stored and len(conversation.calls) == 3
    assert conversation.calls[1]["arguments"] == {"call_id": "c1", "offset": first["next_offset"],
                                                  "max_bytes": RESULT_PAGE_MAX_BYTES}


def test_a_page_is_cut_on_character_boundaries() -> None:
    text = "é" * 5_000
    box = SessionTools([{"kind": "tool_result", "timestamp": "t", "tool": "Read", "call_id": "r", "output": text,
                         "is_error": False, "truncated": False}])
    body, is_error = answer("get_tool_result", {"call_id": "r", "offset": 3, "max_bytes": 10}, box)
    assert not is_error and body["output"] == "é" * 4 and body["shown"] == [[4, 12]] and body["next_offset"] == 12
    whole, _ = answer("get_tool_result", {"call_id": "r", "offset": None, "max_bytes": None}, box)
    assert set(whole["output"].replace("\n", "").split("<")[0]) == {"é"} and whole["next_offset"] == 1000


@pytest.mark.parametrize(("arguments", "expected"), [
    ({"call_id": "c1", "offset": -1}, "offset must be null or a whole number from 0 to"),
    ({"call_id": "c1", "offset": 10**9}, "offset must be null or a whole number from 0 to"),
    ({"call_id": "c1", "offset": "12"}, "offset must be null or a whole number"),
    ({"call_id": "c1", "offset": True}, "offset must be null or a whole number"),
    ({"call_id": "c1", "offset": 0, "max_bytes": 0}, "max_bytes must be null or a whole number from 1 to 8000"),
    ({"call_id": "c1", "offset": 0, "max_bytes": 8001}, "max_bytes must be null or a whole number from 1 to 8000"),
])
def test_bad_pages_are_tool_errors_the_judge_can_read(arguments: dict[str, Any], expected: str) -> None:
    body, is_error = answer("get_tool_result", arguments)
    assert is_error and expected in body["error"]


def test_a_short_output_comes_back_whole() -> None:
    body, is_error = answer("get_tool_result", {"call_id": " c2 "})
    assert not is_error and body["output"] == "Edited SRC/io.py (a.*b)" and "note" not in body


def test_cap_output_cuts_on_character_boundaries() -> None:
    text = "é" * 20_000  # 2 bytes each: a cut in the middle of a character must not leave a broken one
    capped = cap_output(text, head_bytes=101, tail_bytes=101)
    head, _, tail = capped.partition("\n<omitted: ")
    assert set(head) == {"é"} and len(head) == 50
    assert tail.endswith("é" * 50) and "(40000 bytes in all)" in tail
    assert cap_output("short") == "short"


@pytest.mark.parametrize(("arguments", "expected"), [
    ({"call_id": "nope"}, "No tool call with call_id 'nope' in this session"),
    ({"call_id": "c3"}, "The call 'c3' (Bash, pos 6) has no recorded result"),
    ({"call_id": ""}, "call_id must be a non-empty string"),
    ({"call_id": 7}, "call_id must be a non-empty string"),
    ({}, "call_id must be a non-empty string"),
    ({"call_id": "x" * 201}, "call_id must be a non-empty string"),
])
def test_bad_call_ids_are_tool_errors_the_judge_can_read(arguments: dict[str, Any], expected: str) -> None:
    body, is_error = answer("get_tool_result", arguments)
    assert is_error and expected in body["error"]


def test_a_truncated_output_without_its_full_text_says_so() -> None:
    box = SessionTools(trace(), session_id="sess-1")
    body, is_error = answer("get_tool_result", {"call_id": "c1"}, box)
    assert not is_error and body["output"] == "<truncated: 63060 bytes, kind=Bash>"
    assert "not available" in body["note"]


def test_search_is_literal_case_insensitive_over_full_outputs_with_positions() -> None:
    body, is_error = answer("search_session", {"query": "FAILED test_io", "limit": None})
    assert not is_error
    assert [m["pos"] for m in body["matches"]] == [3]  # only the truncated output's full text has both words
    match = body["matches"][0]
    assert match["call_id"] == "c1" and match["tool"] == "Bash" and "FAILED" in match["snippet"]
    # Regex metacharacters are plain text: "a.*b" matches only where it literally occurs.
    literal, _ = answer("search_session", {"query": "(a.*b)", "limit": 5})
    assert [m["pos"] for m in literal["matches"]] == [5]
    mixed, _ = answer("search_session", {"query": "src/IO.py", "limit": 5})
    assert [m["pos"] for m in mixed["matches"]] == [4, 5]


def test_search_limit_and_totals() -> None:
    entries = [{"kind": "assistant_message", "timestamp": "t", "text": f"step {i} needle"} for i in range(30)]
    body, _ = answer("search_session", {"query": "needle", "limit": 3}, SessionTools(entries))
    assert [m["pos"] for m in body["matches"]] == [0, 1, 2] and body["total_matches"] == 30 and body["more"]


@pytest.mark.parametrize(("arguments", "expected"), [
    ({"query": ""}, "query must be a non-empty string"),
    ({"query": "   "}, "query must be a non-empty string"),
    ({"query": 3}, "query must be a non-empty string"),
    ({"query": "x" * 201}, "longer than 200 characters"),
    ({"query": "a", "limit": 0}, f"limit must be an integer from 1 to {SEARCH_MAX_LIMIT}"),
    ({"query": "a", "limit": SEARCH_MAX_LIMIT + 1}, "limit must be an integer"),
    ({"query": "a", "limit": "5"}, "limit must be an integer"),
    ({"query": "a", "limit": True}, "limit must be an integer"),
])
def test_bad_searches_are_tool_errors(arguments: dict[str, Any], expected: str) -> None:
    body, is_error = answer("search_session", arguments)
    assert is_error and expected in body["error"]


def test_summary_outlines_the_session() -> None:
    body, is_error = answer("get_session_summary", {})
    assert not is_error
    assert body["session_id"] == "sess-1" and body["entries"] == 8
    assert body["first_user_message"] == {"pos": 0, "text": "Fix the flaky IO test please"}
    assert body["plans"] == [{"pos": 1, "text": "1. run tests 2. fix test_io"}]
    assert body["commands"] == [{"pos": 2, "command": "pytest -q"}, {"pos": 6, "command": "git push"}]
    assert body["files_touched"] == ["src/io.py"]
    assert body["tools_used"] == {"Bash": 2, "Edit": 1}
    assert body["errors"] == [{"pos": 3, "tool": "Bash", "call_id": "c1"}]
    assert body["truncated_results"] == [{"pos": 3, "tool": "Bash", "call_id": "c1",
                                          "output_bytes": len(LONG_TEST_OUTPUT)}]


def test_summary_lists_are_bounded() -> None:
    entries = [{"kind": "tool_invocation", "timestamp": "t", "tool": "Bash", "call_id": f"c{i}",
                "arguments": {"command": f"echo {i}", "path": f"f{i}.py"}} for i in range(100)]
    body, _ = answer("get_session_summary", {}, SessionTools(entries))
    assert len(body["commands"]) == 20 and body["commands_total"] == 100
    assert len(body["files_touched"]) == 40 and body["files_touched_total"] == 100


def test_six_calls_then_a_readable_refusal_and_only_the_calls_made_are_recorded() -> None:
    conversation = tools().conversation()
    for i in range(MAX_TOOL_CALLS):
        assert not conversation.call("search_session", {"query": f"q{i}", "limit": 1}).is_error
    refused = conversation.call("get_tool_result", {"call_id": "c1"})
    assert refused.is_error and refused.record is None
    assert "limit of 6 tool calls" in json.loads(refused.content)["error"]
    assert len(conversation.calls) == MAX_TOOL_CALLS and conversation.refused == 1
    assert conversation.calls[0] == {"tool": "search_session", "arguments": {"query": "q0", "limit": 1},
                                     "is_error": False}


def test_unknown_tools_and_non_object_arguments_are_errors_and_recorded() -> None:
    conversation = tools().conversation()
    unknown = conversation.call("read_file", {"path": "/etc/passwd"})
    assert unknown.is_error and "There is no tool 'read_file'" in json.loads(unknown.content)["error"]
    not_object = conversation.call("get_tool_result", ["c1"])
    assert not_object.is_error
    assert json.loads(not_object.content)["error"] == "The arguments must be a JSON object of at most 2048 bytes."
    assert conversation.calls == [{"tool": "unknown_tool", "arguments": {}, "is_error": True},
                                  {"tool": "get_tool_result", "arguments": {}, "is_error": True}]


def test_answers_of_one_question_share_a_budget() -> None:
    outputs = {i: "x" * 15_000 for i in range(8)}
    entries = [{"kind": "tool_result", "timestamp": "t", "tool": "Bash", "call_id": f"c{i}", "output": "<truncated>",
                "is_error": False, "truncated": True, "output_bytes": 15_000} for i in range(8)]
    conversation = SessionTools(entries, full_output=outputs.get).conversation()
    sizes = [len(conversation.call("get_tool_result", {"call_id": f"c{i}", "offset": 0,
                                                       "max_bytes": RESULT_PAGE_MAX_BYTES}).content) for i in range(5)]
    assert sum(sizes) <= ANSWER_BUDGET_CHARS + 100  # the last one is cut, and says why
    last = conversation.call("get_tool_result", {"call_id": "c5"}).content
    assert last.endswith("answer now from what you have>")


def test_tool_specs_fit_strict_function_calling() -> None:
    for spec in TOOL_SPECS:
        params = spec["parameters"]
        assert params["additionalProperties"] is False and set(params["required"]) == set(params["properties"])


def test_what_tool_rounds_add_to_a_request_is_bounded() -> None:
    from chalicelib.judges.tools import MAX_TOOL_ROUNDS, REQUESTS_PER_TOOL_QUESTION_MAX, tool_rounds_bytes_max

    assert MAX_TOOL_ROUNDS == MAX_TOOL_CALLS + 1 and REQUESTS_PER_TOOL_QUESTION_MAX == MAX_TOOL_CALLS + 3
    # The budget's characters at 4 bytes each at least, plus what is echoed of every round.
    assert 4 * ANSWER_BUDGET_CHARS < tool_rounds_bytes_max() < 1_000_000
