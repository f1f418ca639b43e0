"""Claude Code transcript → neutral trace: golden fixture, merging, subagents, plans, chains."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.trace import ToolResult
from chalicelib.ingest import resolve_chain

from .support import golden, jsonl, parse, parse_fixture, wire

BASE = {"sessionId": "s-1", "cwd": "/repo", "gitBranch": "main", "version": "2.0.24", "isSidechain": False}


def user(ts: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {**BASE, "type": "user", "timestamp": ts, "message": {"role": "user", "content": content}, **extra}


def assistant(ts: str, message_id: str, *blocks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    message = {"id": message_id, "role": "assistant", "model": "claude-opus-4-1", "content": list(blocks)}
    return {**BASE, "type": "assistant", "timestamp": ts, "message": message, **extra}


def test_full_transcript_matches_golden() -> None:
    entries, stats = parse_fixture("claude-code", "claude-code-full.jsonl")
    expected = golden("claude-code-full.expected.json")
    assert wire(entries) == expected["entries"]
    assert stats.to_dict() == expected["stats"]


def test_full_transcript_highlights() -> None:
    entries, stats = parse_fixture("claude-code", "claude-code-full.jsonl")
    kinds = [entry.kind for entry in entries]
    assert kinds[0] == "user_message"  # caveat, /model command and its stdout were dropped
    assert stats.skipped_injected == 3
    merged = [e for e in entries if e.kind == "assistant_message" and e.timestamp == "2025-10-21T09:00:20.100Z"]
    assert [e.text for e in merged] == [
        "The router already serves invoices as JSON.\n\nI'll add a reportlab renderer behind a new route. "
        "Here is the plan:"
    ]
    subagent = [e for e in entries if e.agent_id is not None]
    assert {(e.agent_id, e.agent_type) for e in subagent} == {("a91c5e07", "Explore")}
    assert [e.kind for e in subagent] == ["user_message", "tool_invocation", "tool_result", "assistant_message"]
    errors = [e.call_id for e in entries if isinstance(e, ToolResult) and e.is_error]
    assert errors == ["toolu_02Read", "toolu_08Bash", "toolu_10Bash"]
    plans = [e.text for e in entries if e.kind == "plan"]
    assert plans[0].startswith("## PDF export")
    assert plans[1:] == [
        "- [ ] Add render_invoice_pdf (in progress)\n- [ ] Add GET /invoices/{id}/pdf route\n- [ ] Test the PDF route",
        "- [x] Add render_invoice_pdf\n- [x] Add GET /invoices/{id}/pdf route\n- [x] Test the PDF route",
    ]
    assert stats.skipped_unknown == {"pr-link": 1}
    assert stats.metadata.title == "PDF export endpoint for invoices"
    assert stats.metadata.continuation_leaf_uuid is None


def test_text_blocks_of_one_response_merge_but_stop_at_a_tool_use() -> None:
    lines = jsonl(
        user("2025-01-01T00:00:00Z", "go"),
        assistant("2025-01-01T00:00:01Z", "msg_1", {"type": "text", "text": "first"}),
        {"type": "progress", "data": {"type": "hook_progress"}, "timestamp": "2025-01-01T00:00:01.5Z"},
        assistant("2025-01-01T00:00:02Z", "msg_1", {"type": "text", "text": "second"}),
        assistant("2025-01-01T00:00:03Z", "msg_1", {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}),
        assistant("2025-01-01T00:00:04Z", "msg_1", {"type": "text", "text": "after the call"}),
        assistant("2025-01-01T00:00:05Z", "msg_2", {"type": "text", "text": "next response"}),
    )
    entries, _ = parse("claude-code", lines)
    assert [(e.kind, getattr(e, "text", None)) for e in entries] == [
        ("user_message", "go"),
        ("assistant_message", "first\n\nsecond"),
        ("tool_invocation", None),
        ("assistant_message", "after the call"),
        ("assistant_message", "next response"),
    ]


def test_tool_result_content_blocks_are_flattened_and_paired() -> None:
    lines = jsonl(
        assistant("2025-01-01T00:00:01Z", "m", {"type": "tool_use", "id": "t1", "name": "Read", "input": {"p": 1}}),
        user(
            "2025-01-01T00:00:02Z",
            [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image", "source": {}},
                        {"type": "text", "text": "b"},
                    ],
                }
            ],
        ),
        user("2025-01-01T00:00:03Z", [{"type": "tool_result", "tool_use_id": "never-called", "content": "x"}]),
    )
    entries, stats = parse("claude-code", lines)
    results = [e for e in entries if isinstance(e, ToolResult)]
    assert [(r.tool, r.output, r.is_error) for r in results] == [
        ("Read", "a\n[image]\nb", False),
        ("unknown", "x", False),
    ]
    assert stats.tool_results_unpaired == 1


def test_agent_type_comes_from_the_parents_task_prompt_without_progress_lines() -> None:
    lines = jsonl(
        assistant(
            "2025-01-01T00:00:01Z",
            "m1",
            {
                "type": "tool_use",
                "id": "task1",
                "name": "Task",
                "input": {"subagent_type": "Plan", "prompt": "Plan it"},
            },
        ),
        assistant(
            "2025-01-01T00:00:01.1Z",
            "m1",
            {
                "type": "tool_use",
                "id": "task2",
                "name": "Task",
                "input": {"subagent_type": "Explore", "prompt": "Look"},
            },
        ),
        user("2025-01-01T00:00:02Z", "Look", isSidechain=True, agentId="ag2"),
        assistant("2025-01-01T00:00:03Z", "m2", {"type": "text", "text": "found"}, isSidechain=True, agentId="ag2"),
    )
    entries, _ = parse("claude-code", lines)
    assert [(e.agent_id, e.agent_type) for e in entries[2:]] == [("ag2", "Explore"), ("ag2", "Explore")]


def test_inline_warmup_sidechain_without_agent_id_is_tagged_as_sidechain() -> None:
    lines = jsonl(
        user("2025-01-01T00:00:00Z", "Warmup", isSidechain=True),
        assistant("2025-01-01T00:00:01Z", "m", {"type": "text", "text": "ready"}, isSidechain=True),
        user("2025-01-01T00:00:02Z", "real question"),
    )
    entries, _ = parse("claude-code", lines)
    assert [(e.kind, e.agent_id, e.agent_type) for e in entries] == [
        ("user_message", "sidechain", None),
        ("assistant_message", "sidechain", None),
        ("user_message", None, None),
    ]


def test_continuation_chain_links_three_sessions() -> None:
    metas = []
    for index in (1, 2, 3):
        entries, stats = parse_fixture("claude-code", f"claude-code-chain-{index}.jsonl")
        assert [e.kind for e in entries] == ["user_message", "tool_invocation", "tool_result", "assistant_message"]
        metas.append(stats.metadata)
    first, second, third = metas
    assert first.continuation_leaf_uuid is None
    assert second.continuation_leaf_uuid == first.last_uuid
    assert third.continuation_leaf_uuid == second.last_uuid
    assert (first.title, second.title, third.title) == (
        None,
        "Invoice model and JSON endpoint",
        "Invoice list pagination",
    )
    by_last_uuid = {meta.last_uuid: meta.session_id for meta in metas}
    parent = {meta.session_id: by_last_uuid.get(meta.continuation_leaf_uuid) for meta in metas}
    assert resolve_chain(third.session_id or "", lambda sid: parent.get(sid)) == [
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
        "33333333-3333-4333-8333-333333333333",
    ]


def test_title_prefers_custom_then_ai_title() -> None:
    lines = jsonl(
        {"type": "summary", "summary": "From summary", "leafUuid": "elsewhere"},
        user("2025-01-01T00:00:00Z", "hi", uuid="u1"),
        {"type": "ai-title", "aiTitle": "From AI"},
        {"type": "custom-title", "customTitle": "Named by user", "sessionId": "s-1"},
    )
    _, stats = parse("claude-code", lines)
    assert stats.metadata.title == "Named by user"
    assert stats.metadata.continuation_leaf_uuid == "elsewhere"
    assert stats.metadata.last_uuid == "u1"
