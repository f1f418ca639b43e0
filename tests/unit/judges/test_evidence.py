"""Trace positions: every entry a judge sees carries its `pos`, and cited positions are checked."""

from __future__ import annotations

from chalicelib.judges.evidence import check_evidence_entries, number_entries


def test_number_entries_puts_pos_first_in_the_same_trace_list() -> None:
    first = {"kind": "user_message", "text": "a"}
    trace = [first, {"pos": 9, "kind": "plan"}]
    doc = {"session_id": "s", "trace": trace}
    assert number_entries(doc) is doc and doc["trace"] is trace
    assert trace == [{"pos": 0, "kind": "user_message", "text": "a"}, {"pos": 1, "kind": "plan"}]
    assert list(trace[0]) == ["pos", "kind", "text"]
    assert first == {"kind": "user_message", "text": "a"}  # entries are replaced, never changed


def test_check_evidence_entries() -> None:
    assert check_evidence_entries([4, 1, 4], 5) == ([1, 4], [])
    kept, why = check_evidence_entries([1, 5, True, "2", -1], 5)
    assert kept == [1] and why == ["evidence_entries 5, True, '2', -1 are not trace positions "
                                   "(the trace has 5 entries: 0..4); dropped"]
    assert check_evidence_entries(None, 5) == ([], [])
    assert check_evidence_entries("3", 5) == ([], ["evidence_entries is not an array; dropped"])
