"""The session tools of one server run: `chalicelib.judges.tools` over the run's eval context, with the whole
(redacted, capped) outputs of the truncated tool results read from the stored trace in the background.

The worker holds the run's compacted trace already; a truncated result's whole output is only in the stored
trace. `FullOutputs` reads it once, in a thread, while the judges start (a tool question asks for outputs
only after its first answer), keeping each truncated output capped with `cap_output` in a spooled temporary
file (memory stays bounded: the outputs of a large session go to disk, not the worker's heap). A tool call
that needs an output waits for the read (within the run's deadline); a failed read leaves the tools working
with the trace's markers, which say so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from chalicelib.domain.evaluation import ToolUse
from chalicelib.domain.judging import JudgeReply, ToolCallRequest, ToolResultBlock, ToolSpec
from chalicelib.domain.runs import EvalRun
from chalicelib.judges.tools import (
    ANSWER_BUDGET_CHARS,
    CALL_ARGUMENTS_MAX_BYTES,
    CALL_ID_MAX_CHARS,
    CALL_NAME_MAX_CHARS,
    CALLS_PER_ROUND_ECHOED,
    ROUND_TEXT_MAX_CHARS,
    TOOL_SPECS,
    SessionTools,
    ToolConversation,
    cap_output,
)
from chalicelib.observability import logger

# Capped outputs kept in memory before the spool moves to disk. Small: the spool fills while the judges' request
# bodies are in flight (the run's peak), and a lookup reads one output back, so disk costs a tool call little
# (8 MiB held up to 8 MB at that peak; bench/RESULTS.md "Worker memory").
SPOOL_MEMORY_BYTES = 1024 * 1024
# Share of a model's context window one question's tool answers may take.
WINDOW_SHARE = 0.15

TOOL_SPEC_TUPLE: tuple[ToolSpec, ...] = tuple(
    ToolSpec(name=s["name"], description=s["description"], parameters=s["parameters"]) for s in TOOL_SPECS)


class FullOutputs:
    """Capped whole outputs of the truncated tool results, by trace position, read from the stored trace."""

    def __init__(self, truncated: Iterable[int]) -> None:
        self._wanted = frozenset(truncated)
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES, mode="w+b")  # noqa: SIM115
        self._where: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.failed = False
        self._wait: Callable[[], float] = lambda: 0.0

    @property
    def wanted(self) -> int:
        return len(self._wanted)

    def load(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Read the stored entries (position = index) and keep the outputs of the truncated ones. Runs in a
        thread; ends early when `stop()` is called."""
        try:
            for pos, entry in enumerate(entries):
                if self._stop.is_set():
                    break
                if pos in self._wanted and entry.get("kind") == "tool_result":
                    output = entry.get("output")
                    data = cap_output(output if isinstance(output, str) else "").encode("utf-8", "surrogatepass")
                    with self._lock:
                        if self._stop.is_set():
                            break  # the run ended (the spool may be closed)
                        offset = self._spool.seek(0, 2)
                        self._spool.write(data)
                        self._where[pos] = (offset, len(data))
        except Exception as exc:  # the tools keep working with the markers
            if not self._stop.is_set():
                self.failed = True
                logger.warning("full tool outputs could not be read; tools answer with the trace's markers",
                               extra={"error_type": type(exc).__name__})
        finally:
            self._ready.set()

    def wait_with(self, seconds_left: Callable[[], float]) -> None:
        """How long a lookup may wait for the read: the run's time left."""
        self._wait = seconds_left

    def get(self, pos: int) -> str | None:
        if pos not in self._wanted:
            return None
        if not self._ready.wait(max(self._wait(), 0.0)):
            return None
        with self._lock:
            where = self._where.get(pos)
            if where is None or self._spool.closed:
                return None
            self._spool.seek(where[0])
            return self._spool.read(where[1]).decode("utf-8", "surrogatepass")

    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._ready.set()

    def close(self) -> None:
        self.stop()
        with self._lock:
            self._spool.close()


class RunTools:
    """What a tool-using judge of one run may call, and the run's accounting of those calls."""

    specs = TOOL_SPEC_TUPLE

    def __init__(self, entries: Sequence[Mapping[str, Any]], *, session_id: str, session_chain: Sequence[str],
                 outputs: FullOutputs) -> None:
        self._outputs = outputs
        self.tools = SessionTools(entries, session_id=session_id, session_chain=session_chain,
                                  full_output=outputs.get)
        self.calls = 0
        self.refused = 0
        # Set by the runner from the model's context window (`answer_budget_for`).
        self.answer_budget_chars = ANSWER_BUDGET_CHARS

    @property
    def entry_count(self) -> int:
        return self.tools.entry_count

    def conversation(self) -> ToolConversation:
        return self.tools.conversation(self.answer_budget_chars)

    async def answer(self, conversation: ToolConversation, call: ToolCallRequest) -> ToolResultBlock:
        """One call answered off the event loop (a search reads the whole trace; an output may wait for the
        background read), so the other judges' streams are not held up."""
        answered = await asyncio.to_thread(conversation.call, call.name, call.arguments)
        if answered.record is None:
            self.refused += 1
        else:
            self.calls += 1
        return ToolResultBlock(call_id=call.call_id, content=answered.content, is_error=answered.is_error)


def echoed_round(reply: JudgeReply) -> tuple[str, tuple[ToolCallRequest, ...]]:
    """What of a tool-using answer goes back into the conversation, bounded so every request has a size the
    spend estimate can price (`chalicelib.judges.tools.tool_rounds_bytes_max`): the text cut, at most
    CALLS_PER_ROUND_ECHOED calls, and a call whose arguments are too long echoed without them (its answer is
    a tool error)."""
    calls: list[ToolCallRequest] = []
    for call in reply.tool_calls[:CALLS_PER_ROUND_ECHOED]:
        if len(call.call_id) > CALL_ID_MAX_CHARS:
            continue  # no vendor sends such ids; one that did is left out rather than echoed
        name = call.name[:CALL_NAME_MAX_CHARS]
        if len(call.raw_arguments.encode("utf-8", "surrogatepass")) > CALL_ARGUMENTS_MAX_BYTES:
            call = ToolCallRequest(call_id=call.call_id, name=name, arguments=None, raw_arguments="{}")
        elif name != call.name:
            call = dataclasses.replace(call, name=name)
        calls.append(call)
    return reply.text[:ROUND_TEXT_MAX_CHARS], tuple(calls)


def answer_budget_for(window_tokens: int) -> int:
    """One question's tool-answer budget for a model's window: the default, or 15% of a small window (at
    ~4 characters per token), so tools never crowd out the trace."""
    return max(2_000, min(ANSWER_BUDGET_CHARS, int(window_tokens * 4 * WINDOW_SHARE)))


class StoredEntrySource(Protocol):
    """The stored (redacted, uncompacted) entries of an eval context's sessions, by position
    (`SessionService.stored_entries`): where the whole outputs of truncated results are read from."""

    def stored_entries(self, tenant: str, session_chain: Sequence[str], *,
                       stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]: ...


def start_run_tools(stored: StoredEntrySource, run: EvalRun, doc: Mapping[str, Any],
                    seconds_left: Callable[[], float]) -> tuple[FullOutputs, RunTools]:
    """The session tools of a server run over its eval context `doc`, with the whole outputs of the truncated
    results read from the stored trace in a thread while the judges start (close the outputs when the run
    ends: that stops the read)."""
    # Not copied into a list: the worker's trace is spooled, read entry by entry (`trace_spool`).
    trace: Sequence[Mapping[str, Any]] = doc.get("trace") or []
    chain = [str(s) for s in doc.get("session_chain") or [run.session_id]]
    outputs = FullOutputs(truncated_positions(trace))
    outputs.wait_with(seconds_left)
    if outputs.wanted:
        stop = outputs.stopped
        threading.Thread(target=lambda: outputs.load(stored.stored_entries(run.tenant, chain, stop=stop)),
                         name=f"tool-outputs-{run.eval_run_id[-6:]}", daemon=True).start()
    else:
        outputs.load(())
    return outputs, RunTools(trace, session_id=run.session_id, session_chain=chain, outputs=outputs)


def tools_used(conversation: ToolConversation) -> list[ToolUse]:
    """The verdict's `tools_used`: the calls the judge made (refused ones are not calls)."""
    return [ToolUse.model_validate(record) for record in conversation.calls]


def truncated_positions(entries: Sequence[Mapping[str, Any]]) -> list[int]:
    return [pos for pos, entry in enumerate(entries) if entry.get("kind") == "tool_result" and entry.get("truncated")]
