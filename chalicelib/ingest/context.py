"""The judge-facing eval context: a trace redacted, then compacted, with its `compaction` stats.

Redaction runs first so that a secret cannot survive in an output that is short enough to stay
unmarked, and so that sizes and `bytes_saved` describe the trace actually served. The payload
shape is the eval context of shared/reference/kapacitor-evals.md §2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.trace import TraceEntry, trace_to_json
from chalicelib.ingest.compaction import compact as compact_trace
from chalicelib.ingest.compaction import validate_threshold
from chalicelib.ingest.redaction import redact_trace

MAX_CHAIN_LENGTH = 100


@dataclass(frozen=True)
class EvalContext:
    trace: list[TraceEntry]
    # threshold_bytes, entries, tool_results_total, tool_results_truncated, bytes_saved,
    # per_tool {tool: {truncated, bytes_saved}}, redactions {kind: n}
    compaction: dict[str, Any]

    def to_payload(self, session_id: str, session_chain: Sequence[str]) -> dict[str, Any]:
        """The `GET /sessions/{id}/eval-context` body."""
        return {
            "session_id": session_id,
            "session_chain": list(session_chain),
            "trace": trace_to_json(self.trace),
            "compaction": self.compaction,
        }


def build_eval_context(entries: Iterable[TraceEntry], threshold: int | str | None = None) -> EvalContext:
    """Redact then compact `entries` (one session, or a whole chain oldest first)."""
    threshold_bytes = validate_threshold(threshold)
    redacted, redactions = redact_trace(entries)
    trace, stats = compact_trace(redacted, threshold_bytes)
    compaction: dict[str, Any] = {**stats, "redactions": redactions}
    return EvalContext(trace=trace, compaction=compaction)


def resolve_chain(session_id: str, parent_of: Callable[[str], str | None]) -> list[str]:
    """The continuation chain ending at `session_id`, oldest first.

    `parent_of` returns the session a session continues (e.g. its `parent_session_id`, or the
    session whose `last_uuid` is its `continuation_leaf_uuid`), or None at the chain's start.
    """
    chain = [session_id]
    seen = {session_id}
    current = session_id
    while (parent := parent_of(current)) is not None:
        if parent in seen:
            raise InvalidRequest(
                f"Session {session_id} has a continuation cycle through {parent}; fix the "
                "parent_session_id of one of the sessions in it.",
                code="session_chain_cycle",
                details={"session_id": session_id, "cycle_at": parent},
            )
        if len(chain) >= MAX_CHAIN_LENGTH:
            raise InvalidRequest(
                f"Session {session_id} continues a chain longer than {MAX_CHAIN_LENGTH} sessions; "
                "evaluate it without chain=true.",
                code="session_chain_too_long",
                details={"session_id": session_id, "max_chain_length": MAX_CHAIN_LENGTH},
            )
        chain.append(parent)
        seen.add(parent)
        current = parent
    chain.reverse()
    return chain
