"""The server run's session tools: whole outputs read in the background into a spool, and what a tool call
gets while (and after) the read runs, fails or is stopped."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from chalicelib.judges.tools import VIEW_HEAD_BYTES, cap_output
from chalicelib.services.session_tools import FullOutputs, RunTools, answer_budget_for, truncated_positions

BIG = "x" * 50_000 + "THE END"


def stored() -> list[dict[str, Any]]:
    return [{"kind": "user_message", "text": "hi"},
            {"kind": "tool_result", "call_id": "c1", "output": BIG},
            {"kind": "tool_result", "call_id": "c2", "output": "small"}]


def test_truncated_outputs_are_kept_capped_and_others_not() -> None:
    trace = [stored()[0], {**stored()[1], "output": "<truncated>", "truncated": True}, stored()[2]]
    assert truncated_positions(trace) == [1]
    outputs = FullOutputs([1])
    outputs.wait_with(lambda: 5.0)
    outputs.load(stored())
    assert outputs.get(1) == cap_output(BIG) and outputs.get(2) is None and not outputs.failed
    tools = RunTools(trace, session_id="s", session_chain=["s"], outputs=outputs)
    answer = tools.tools.get_tool_result({"call_id": "c1"})[0]
    assert "THE END" in answer and "x" * VIEW_HEAD_BYTES in answer
    opening = json.loads(tools.tools.get_tool_result({"call_id": "c1", "offset": 0, "max_bytes": 8_000})[0])
    assert opening["output"] == cap_output(BIG).encode()[:8_000].decode()  # the stored output, read by part
    outputs.close()
    assert outputs.get(1) is None  # after the run: nothing is read from a closed spool


def test_a_lookup_waits_for_the_read_within_the_time_left() -> None:
    outputs = FullOutputs([1])
    outputs.wait_with(lambda: 5.0)
    release = threading.Event()

    def slow() -> Iterator[dict[str, Any]]:
        release.wait(5)
        yield from stored()

    reader = threading.Thread(target=outputs.load, args=(slow(),))
    reader.start()
    release.set()
    assert outputs.get(1) == cap_output(BIG)
    reader.join()


def test_no_time_left_or_a_failed_read_leaves_the_markers() -> None:
    waiting = FullOutputs([1])
    waiting.wait_with(lambda: 0.0)
    assert waiting.get(1) is None  # the read never started and the run has no time left

    def broken() -> Iterator[dict[str, Any]]:
        yield stored()[0]
        raise OSError("S3 went away")

    failing = FullOutputs([1])
    failing.wait_with(lambda: 5.0)
    failing.load(broken())
    assert failing.failed and failing.get(1) is None


def test_a_stopped_read_ends_early_without_failing() -> None:
    outputs = FullOutputs([1])
    outputs.stop()
    outputs.load(stored())
    assert not outputs.failed and outputs.get(1) is None


def test_answer_budget_shrinks_with_the_window() -> None:
    assert answer_budget_for(200_000) == 40_000
    assert answer_budget_for(12_000) == 7_200
    assert answer_budget_for(1_000) == 2_000
