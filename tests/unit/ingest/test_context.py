"""The eval context: redaction before compaction, the payload shape, continuation chains."""

from __future__ import annotations

import pytest

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.trace import TextEntry, ToolResult, TraceEntry, utf8_len
from chalicelib.ingest import build_eval_context, resolve_chain

from .support import parse_fixture

TS = "2025-01-01T00:00:00.000Z"
KEY = "ghp_R7tY2uI9oP4aS1dF6gH3jK8lZ5xC0vB2nM7q"


def test_secrets_are_redacted_before_outputs_are_measured() -> None:
    # 40 bytes of token + padding: over the threshold before redaction, under it afterwards.
    output = f"token {KEY} ok"
    entries: list[TraceEntry] = [
        TextEntry(kind="user_message", timestamp=TS, text="go"),
        ToolResult(timestamp=TS, tool="Bash", call_id="c1", output=output, output_bytes=utf8_len(output)),
    ]
    context = build_eval_context(entries, threshold=40)
    result = context.trace[1]
    assert isinstance(result, ToolResult)
    assert result.output == "token <redacted:github_token> ok" and not result.truncated
    assert context.compaction == {
        "threshold_bytes": 40,
        "entries": 2,
        "tool_results_total": 1,
        "tool_results_truncated": 0,
        "bytes_saved": 0,
        "per_tool": {},
        "redactions": {"github_token": 1},
    }


def test_payload_shape_for_a_real_session() -> None:
    entries, stats = parse_fixture("claude-code", "claude-code-full.jsonl")
    context = build_eval_context(entries)
    payload = context.to_payload(stats.metadata.session_id or "", [stats.metadata.session_id or ""])
    assert set(payload) == {"session_id", "session_chain", "trace", "compaction"}
    assert payload["compaction"]["threshold_bytes"] == 2000
    assert payload["compaction"]["tool_results_total"] == 13
    assert payload["compaction"]["redactions"] == {}
    assert len(payload["trace"]) == payload["compaction"]["entries"] == len(entries)


def test_threshold_above_the_cap_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as caught:
        build_eval_context([], threshold=200_001)
    assert caught.value.code == "threshold_out_of_range"


def test_resolve_chain_detects_cycles() -> None:
    parents = {"c": "b", "b": "a", "a": "c"}
    with pytest.raises(InvalidRequest) as caught:
        resolve_chain("c", parents.get)
    assert caught.value.code == "session_chain_cycle"
    assert resolve_chain("solo", lambda _: None) == ["solo"]
