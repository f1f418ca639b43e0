"""Pairing tool results with their invocations by call id, in bounded memory.

A result names only its call id; its `tool` comes from the invocation. Codex can record an
output before its call (parallel tool calls), so a result whose call is not known yet is held
back, for a few records, and released right after its invocation. A result whose invocation
never shows up (e.g. the call was in the previous session of a continuation chain) is released
with tool "unknown" once it has waited `max_wait_lines` records or the stream ends; it is not
moved to the end of the trace.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from chalicelib.domain.trace import ToolResult

UNKNOWN_TOOL = "unknown"


@dataclass
class _Held:
    result: ToolResult
    line_no: int


class ToolPairer:
    def __init__(self, *, max_known_calls: int = 10_000, max_held: int = 64, max_wait_lines: int = 50) -> None:
        self._tools: OrderedDict[str, str] = OrderedDict()
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._max_known = max_known_calls
        self._max_held = max_held
        self._max_wait = max_wait_lines
        self.unpaired = 0

    def tool_for(self, call_id: str) -> str | None:
        return self._tools.get(call_id)

    def invocation(self, call_id: str, tool: str) -> list[ToolResult]:
        """Record an invocation; returns results that were waiting for it (tool filled in)."""
        self._tools[call_id] = tool
        self._tools.move_to_end(call_id)
        if len(self._tools) > self._max_known:
            self._tools.popitem(last=False)
        held = self._held.pop(call_id, None)
        return [held.result.model_copy(update={"tool": tool})] if held else []

    def result(self, result: ToolResult, line_no: int) -> list[ToolResult]:
        """Offer a result built with any `tool`; returns what can be emitted now, in order."""
        tool = self._tools.get(result.call_id)
        if tool is not None:
            return [result if result.tool == tool else result.model_copy(update={"tool": tool})]
        released = []
        if result.call_id in self._held:  # a second result for the same pending call id
            released.append(self._release(self._held.pop(result.call_id).result))
        self._held[result.call_id] = _Held(result, line_no)
        if len(self._held) > self._max_held:
            released.append(self._release(self._held.popitem(last=False)[1].result))
        return released

    def expire(self, line_no: int) -> list[ToolResult]:
        """Release results that waited more than `max_wait_lines` records for their invocation."""
        released = []
        while self._held:
            call_id, held = next(iter(self._held.items()))
            if line_no - held.line_no <= self._max_wait:
                break
            del self._held[call_id]
            released.append(self._release(held.result))
        return released

    def finish(self) -> list[ToolResult]:
        released = [self._release(held.result) for held in self._held.values()]
        self._held.clear()
        return released

    def _release(self, result: ToolResult) -> ToolResult:
        self.unpaired += 1
        return result.model_copy(update={"tool": UNKNOWN_TOOL})
