"""Codex CLI rollout → neutral trace: golden fixtures (both layouts), outputs, pairing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.trace import ToolInvocation, ToolResult
from chalicelib.ingest.codex import decode_output

from .support import golden, jsonl, parse, parse_fixture, wire


def item(ts: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"timestamp": ts, "type": "response_item", "payload": payload}


@pytest.mark.parametrize("name", ["codex-full", "codex-legacy"])
def test_rollout_matches_golden(name: str) -> None:
    entries, stats = parse_fixture("codex", f"{name}.jsonl")
    expected = golden(f"{name}.expected.json")
    assert wire(entries) == expected["entries"]
    assert stats.to_dict() == expected["stats"]


def test_full_rollout_highlights() -> None:
    entries, stats = parse_fixture("codex", "codex-full.jsonl")
    users = [e for e in entries if e.kind == "user_message"]
    assert len(users) == 1  # developer, AGENTS.md and environment_context messages are injected
    results = {e.call_id: e for e in entries if isinstance(e, ToolResult)}
    assert {cid: r.is_error for cid, r in results.items()} == {
        "call_Read1": False,
        "call_Plan1": False,
        "call_Patch1": True,  # apply_patch output not starting with "Success"
        "call_Patch2": False,
        "call_Test1": True,  # metadata.exit_code 1
        "call_Grep1": False,
        "call_Patch3": False,  # "Exit code: 0" header
        "call_Test2": False,  # "Process exited with code 0" header
        "call_Plan2": False,
        "call_Bad1": False,
    }
    assert results["call_Read1"].output.startswith("def invoice_total")  # JSON wrapper unwrapped
    # The grep output was recorded before its call: it follows the call in the trace.
    calls = [(e.kind, e.call_id) for e in entries if isinstance(e, ToolInvocation | ToolResult)]
    grep_call = calls.index(("tool_invocation", "call_Grep1"))
    assert calls[grep_call + 1] == ("tool_result", "call_Grep1")
    assert results["call_Grep1"].tool == "shell"
    bad = next(e for e in entries if isinstance(e, ToolInvocation) and e.call_id == "call_Bad1")
    assert bad.arguments == {"raw": '{"command": ["bash", "-lc", "git diff --stat"'}
    assert stats.skipped_unknown == {"future_record_kind": 1}
    assert stats.metadata.model == "gpt-5-codex"
    assert stats.metadata.git_branch == "fix/rounding"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (json.dumps({"output": "ok\n", "metadata": {"exit_code": 0}}), ("ok\n", 0, None)),
        (json.dumps({"output": "boom", "metadata": {"exit_code": 2}}), ("boom", 2, None)),
        (
            "Exit code: 1\nWall time: 0.2 seconds\nOutput:\nfail",
            ("Exit code: 1\nWall time: 0.2 seconds\nOutput:\nfail", 1, None),
        ),
        ("plain text, Exit code: 3 in prose", ("plain text, Exit code: 3 in prose", None, None)),
        ([{"type": "input_text", "text": "done"}], ("done", None, None)),
        ({"content": "denied", "success": False}, ("denied", None, False)),
        ('{"output": not json', ('{"output": not json', None, None)),
    ],
)
def test_output_shapes(raw: Any, expected: tuple[str, int | None, bool | None]) -> None:
    assert decode_output(raw) == expected


def test_results_waiting_too_long_are_released_as_unknown_in_place() -> None:
    lines = jsonl(
        item("2025-01-01T00:00:00Z", {"type": "function_call_output", "call_id": "orphan", "output": "x"}),
        *[
            item(
                f"2025-01-01T00:{minute:02d}:00Z",
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": f"m{minute}"}]},
            )
            for minute in range(1, 56)
        ],
    )
    entries, stats = parse("codex", lines)
    orphan = [i for i, e in enumerate(entries) if isinstance(e, ToolResult)]
    assert len(orphan) == 1 and 45 <= orphan[0] <= 55  # released after ~50 records, not at the end
    result = entries[orphan[0]]
    assert isinstance(result, ToolResult) and result.tool == "unknown"
    assert stats.tool_results_unpaired == 1


def test_update_plan_yields_a_checklist_plan() -> None:
    args = {"explanation": "Why", "plan": [{"step": "a", "status": "completed"}, {"step": "b", "status": "pending"}]}
    lines = jsonl(
        item(
            "2025-01-01T00:00:00Z",
            {"type": "function_call", "name": "update_plan", "arguments": json.dumps(args), "call_id": "p"},
        )
    )
    entries, _ = parse("codex", lines)
    assert [e.kind for e in entries] == ["tool_invocation", "plan"]
    assert entries[1].text == "Why\n\n- [x] a\n- [ ] b"  # type: ignore[union-attr]
