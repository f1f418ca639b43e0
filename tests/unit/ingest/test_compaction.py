"""Compaction: markers over the threshold, exact stats, threshold bounds, and a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.trace import TextEntry, ToolInvocation, ToolResult, TraceEntry, utf8_len
from chalicelib.ingest import compact, validate_threshold

TS = "2025-01-01T00:00:00.000Z"


def result(call_id: str, output: str, tool: str = "Bash") -> ToolResult:
    return ToolResult(timestamp=TS, tool=tool, call_id=call_id, output=output, output_bytes=utf8_len(output))


def sample_trace() -> list[TraceEntry]:
    return [
        TextEntry(kind="user_message", timestamp=TS, text="x" * 5000),
        ToolInvocation(timestamp=TS, tool="Bash", call_id="c1", arguments={"command": "y" * 5000}),
        result("c1", "a" * 100),
        result("c2", "é" * 1500),  # 3000 bytes, 1500 characters: the threshold counts bytes
        result("c3", "b" * 2000),
        result("c4", "c" * 2001, tool="Read"),
    ]


@pytest.mark.parametrize(
    ("threshold", "truncated_ids"),
    [
        (200_000, []),
        (2000, ["c2", "c4"]),
        (1999, ["c2", "c3", "c4"]),
        (100, ["c2", "c3", "c4"]),
        (99, ["c1", "c2", "c3", "c4"]),
    ],
)
def test_outputs_over_the_threshold_become_markers(threshold: int, truncated_ids: list[str]) -> None:
    trace, stats = compact(sample_trace(), threshold)
    results = [e for e in trace if isinstance(e, ToolResult)]
    assert [r.call_id for r in results if r.truncated] == truncated_ids
    originals = {r.call_id: r for r in sample_trace() if isinstance(r, ToolResult)}
    for r in results:
        if r.truncated:
            size = utf8_len(originals[r.call_id].output)
            assert r.output == f"<truncated: {size} bytes, kind={r.tool}>"
            assert r.output_bytes == size
        else:
            assert r == originals[r.call_id]
    assert trace[0] == sample_trace()[0] and trace[1] == sample_trace()[1]  # only tool results shrink
    assert stats["threshold_bytes"] == threshold
    assert stats["entries"] == 6 and stats["tool_results_total"] == 4
    assert stats["tool_results_truncated"] == len(truncated_ids)


def test_stats_at_the_default_threshold() -> None:
    _, stats = compact(sample_trace(), 2000)
    assert stats == {
        "threshold_bytes": 2000,
        "entries": 6,
        "tool_results_total": 4,
        "tool_results_truncated": 2,
        "bytes_saved": (3000 - len("<truncated: 3000 bytes, kind=Bash>"))
        + (2001 - len("<truncated: 2001 bytes, kind=Read>")),
        "per_tool": {
            "Bash": {"truncated": 1, "bytes_saved": 3000 - len("<truncated: 3000 bytes, kind=Bash>")},
            "Read": {"truncated": 1, "bytes_saved": 2001 - len("<truncated: 2001 bytes, kind=Read>")},
        },
    }


def test_compacting_twice_equals_compacting_once_at_the_lower_threshold() -> None:
    once, once_stats = compact(sample_trace(), 100)
    first, _ = compact(sample_trace(), 2000)
    twice, twice_stats = compact(first, 100)
    assert twice == once and twice_stats == once_stats


@pytest.mark.parametrize(("value", "expected"), [(None, 2000), (0, 0), (1, 1), (200_000, 200_000), ("5000", 5000)])
def test_threshold_bounds_accept(value: int | str | None, expected: int) -> None:
    assert validate_threshold(value) == expected


@pytest.mark.parametrize(
    ("value", "code"),
    [(200_001, "threshold_out_of_range"), (-1, "threshold_out_of_range"), ("lots", "invalid_threshold")],
)
def test_threshold_bounds_reject(value: int | str, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_threshold(value)
    assert caught.value.code == code
    assert "200000" in caught.value.message


outputs = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
entries_strategy = st.lists(
    st.one_of(
        st.builds(lambda text: TextEntry(kind="assistant_message", timestamp=TS, text=text), outputs),
        st.builds(
            lambda i, tool, out, err: ToolResult(
                timestamp=TS, tool=tool, call_id=f"c{i}", output=out, is_error=err, output_bytes=utf8_len(out)
            ),
            st.integers(0, 50),
            st.sampled_from(["Bash", "Read", "mcp__x__y"]),
            outputs,
            st.booleans(),
        ),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(trace=entries_strategy, threshold=st.integers(0, 400))
def test_stats_always_add_up(trace: list[TraceEntry], threshold: int) -> None:
    compacted, stats = compact(trace, threshold)
    before = [e for e in trace if isinstance(e, ToolResult)]
    after = [e for e in compacted if isinstance(e, ToolResult)]
    assert stats["entries"] == len(trace) == len(compacted)
    assert stats["tool_results_total"] == len(before)
    assert 0 <= stats["tool_results_truncated"] <= stats["tool_results_total"]
    assert stats["tool_results_truncated"] == sum(1 for e in after if e.truncated)
    removed = sum(utf8_len(e.output) for e in before) - sum(utf8_len(e.output) for e in after)
    assert stats["bytes_saved"] == removed
    assert sum(t["truncated"] for t in stats["per_tool"].values()) == stats["tool_results_truncated"]
    assert sum(t["bytes_saved"] for t in stats["per_tool"].values()) == stats["bytes_saved"]
    for old, new in zip(before, after, strict=True):
        assert new.call_id == old.call_id and new.is_error == old.is_error
        assert new.truncated == (utf8_len(old.output) > threshold)
        assert new.output_bytes == utf8_len(old.output)
