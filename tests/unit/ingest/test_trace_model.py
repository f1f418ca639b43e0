"""The neutral trace entry JSON shape and the native upload body."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chalicelib.domain.trace import (
    SessionUpload,
    TextEntry,
    ToolInvocation,
    ToolResult,
    entry_to_json,
    normalize_timestamp,
    parse_trace,
)


def test_each_kind_serialises_exactly_its_fields() -> None:
    entries = parse_trace(
        [
            {"kind": "user_message", "timestamp": "2025-01-02T03:04:05.678Z", "text": "hi"},
            {"kind": "plan", "timestamp": "2025-01-02T03:04:05Z", "text": "- [ ] a", "agent_id": "a1"},
            {
                "kind": "tool_invocation",
                "timestamp": "2025-01-02T03:04:06Z",
                "tool": "Bash",
                "call_id": "c1",
                "arguments": {"command": "ls"},
            },
            {
                "kind": "tool_result",
                "timestamp": "2025-01-02T03:04:07Z",
                "tool": "Bash",
                "call_id": "c1",
                "output": "é",
                "agent_id": "a1",
                "agent_type": "Explore",
            },
        ]
    )
    assert [entry_to_json(entry) for entry in entries] == [
        {"kind": "user_message", "timestamp": "2025-01-02T03:04:05.678Z", "text": "hi"},
        {"kind": "plan", "timestamp": "2025-01-02T03:04:05.000Z", "text": "- [ ] a", "agent_id": "a1"},
        {
            "kind": "tool_invocation",
            "timestamp": "2025-01-02T03:04:06.000Z",
            "tool": "Bash",
            "call_id": "c1",
            "arguments": {"command": "ls"},
        },
        {
            "kind": "tool_result",
            "timestamp": "2025-01-02T03:04:07.000Z",
            "tool": "Bash",
            "call_id": "c1",
            "output": "é",
            "is_error": False,
            "truncated": False,
            "output_bytes": 2,
            "agent_id": "a1",
            "agent_type": "Explore",
        },
    ]
    assert isinstance(entries[0], TextEntry)
    assert isinstance(entries[2], ToolInvocation)
    assert isinstance(entries[3], ToolResult)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-10-21T20:03:48.809Z", "2025-10-21T20:03:48.809Z"),
        ("2025-10-21T22:03:48+02:00", "2025-10-21T20:03:48.000Z"),
        ("2025-10-21T20:03:48.809123456Z", "2025-10-21T20:03:48.809Z"),
        ("2025-10-21T20:03:48", "2025-10-21T20:03:48.000Z"),
    ],
)
def test_timestamps_are_normalised_to_utc_z(raw: str, expected: str) -> None:
    assert normalize_timestamp(raw) == expected


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "user_message", "timestamp": "yesterday", "text": "x"},
        {"kind": "tool_call", "timestamp": "2025-01-01T00:00:00Z"},
        {"kind": "user_message", "timestamp": "2025-01-01T00:00:00Z", "text": "x", "extra": 1},
        {"kind": "tool_result", "timestamp": "2025-01-01T00:00:00Z", "tool": "t", "output": "x"},
    ],
)
def test_invalid_entries_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_trace([bad])


def test_session_upload_forbids_unknown_fields() -> None:
    upload = SessionUpload.model_validate(
        {"trace": [{"kind": "assistant_message", "timestamp": "2025-01-01T00:00:00Z", "text": "ok"}], "title": "t"}
    )
    assert upload.title == "t" and len(upload.trace) == 1
    with pytest.raises(ValidationError):
        SessionUpload.model_validate({"trace": [], "owner": "me"})
