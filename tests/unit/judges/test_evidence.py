"""Trace positions: every entry a judge sees carries its `pos`, and cited positions are checked."""

from __future__ import annotations

from chalicelib.judges.evidence import check_evidence_entries, number_entries


def test_number_entries_puts_pos_first_without_touching_the_input() -> None:
    doc = {"session_id": "s", "trace": [{"kind": "user_message", "text": "a"}, {"pos": 9, "kind": "plan"}]}
    numbered = number_entries(doc)
    assert numbered["trace"] == [{"pos": 0, "kind": "user_message", "text": "a"}, {"pos": 1, "kind": "plan"}]
    assert list(numbered["trace"][0]) == ["pos", "kind", "text"]
    assert doc["trace"][0] == {"kind": "user_message", "text": "a"} and numbered["session_id"] == "s"


def test_check_evidence_entries() -> None:
    assert check_evidence_entries([4, 1, 4], 5) == ([1, 4], [])
    kept, why = check_evidence_entries([1, 5, True, "2", -1], 5)
    assert kept == [1] and why == ["evidence_entries 5, True, '2', -1 are not trace positions "
                                   "(the trace has 5 entries: 0..4); dropped"]
    assert check_evidence_entries(None, 5) == ([], [])
    assert check_evidence_entries("3", 5) == ([], ["evidence_entries is not an array; dropped"])
