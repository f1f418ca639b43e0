"""The neutral session trace: one entry model per kind, and the native JSON upload body.

Both session parsers (Claude Code, Codex CLI) and the native `application/json` upload produce
these entries; the eval context serves them to judges. The field set per kind follows the eval
context documented in `shared/reference/kapacitor-evals.md` §2: every entry has `kind` and an
ISO-8601 UTC `timestamp`; text and plan kinds carry `text`; `tool_invocation` carries `tool`,
`call_id`, `arguments`; `tool_result` carries `tool`, `call_id`, `output`, `is_error`,
`truncated`, `output_bytes`; subagent entries also carry `agent_id` / `agent_type` (omitted
from the JSON when absent).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic_core import from_json

EntryKind = Literal[
    "user_message", "assistant_message", "assistant_thinking", "tool_invocation", "tool_result", "plan"
]
TextKind = Literal["user_message", "assistant_message", "assistant_thinking", "plan"]

ENTRY_KINDS: tuple[str, ...] = (
    "user_message",
    "assistant_message",
    "assistant_thinking",
    "tool_invocation",
    "tool_result",
    "plan",
)

# Canonical shape written by both agent CLIs; lets the common case skip datetime parsing.
_CANONICAL_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def normalize_timestamp(value: str) -> str:
    """Return `value` as `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC; naive times are taken as UTC.

    Raises ValueError when `value` is not an ISO-8601 date-time.
    """
    if _CANONICAL_TS.fullmatch(value):
        return value
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"timestamp {value[:40]!r} is not ISO-8601") from exc
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def utf8_len(text: str) -> int:
    """Byte length of `text` as UTF-8; lone surrogates (seen in truncated JS strings) count as 3."""
    return len(text.encode("utf-8", "surrogatepass"))


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("timestamp", mode="before", check_fields=False)
    @classmethod
    def _utc_timestamp(cls, value: Any) -> Any:
        return normalize_timestamp(value) if isinstance(value, str) else value


class TextEntry(_Entry):
    """`user_message`, `assistant_message`, `assistant_thinking` or `plan`."""

    kind: TextKind
    timestamp: str
    text: str
    agent_id: str | None = None
    agent_type: str | None = None


class ToolInvocation(_Entry):
    kind: Literal["tool_invocation"] = "tool_invocation"
    timestamp: str
    tool: str
    call_id: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    agent_id: str | None = None
    agent_type: str | None = None


class ToolResult(_Entry):
    kind: Literal["tool_result"] = "tool_result"
    timestamp: str
    tool: str
    call_id: str
    output: str
    is_error: bool = False
    truncated: bool = False
    output_bytes: int = Field(ge=0)
    agent_id: str | None = None
    agent_type: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_output_bytes(cls, data: Any) -> Any:
        # Uploaded traces may omit the size; it is then the size of the output as given.
        if isinstance(data, dict) and "output_bytes" not in data and isinstance(data.get("output"), str):
            return {**data, "output_bytes": utf8_len(data["output"])}
        return data


TraceEntry = Annotated[TextEntry | ToolInvocation | ToolResult, Field(discriminator="kind")]

TRACE_ADAPTER: TypeAdapter[list[TraceEntry]] = TypeAdapter(list[TraceEntry])


def entry_to_json(entry: TraceEntry) -> dict[str, Any]:
    """The wire form of one entry: every field of its kind, minus absent `agent_id`/`agent_type`."""
    # exclude_none is safe: agent_id/agent_type are the only fields that may be None.
    return entry.model_dump(mode="json", exclude_none=True)


def entry_from_json_line(line: bytes) -> dict[str, Any]:
    """One entry's wire form from its JSON line (a stored trace's, or the worker's spool's)."""
    # pydantic-core's parser is about twice as fast as `json`; it refuses what the trace may hold that is
    # not strict UTF-8 (a surrogate kept from the upload), which `json` then reads.
    try:
        entry: dict[str, Any] = from_json(line)
    except ValueError:
        entry = json.loads(line.decode("utf-8", "surrogatepass"))
    return entry


def trace_to_json(entries: Iterable[TraceEntry]) -> list[dict[str, Any]]:
    return [entry_to_json(entry) for entry in entries]


def parse_trace(data: Any) -> list[TraceEntry]:
    """Validate a JSON array of entries (raises pydantic.ValidationError)."""
    return TRACE_ADAPTER.validate_python(data)


class SessionUpload(BaseModel):
    """Body of `PUT /sessions/{id}` with `Content-Type: application/json`."""

    # Built on first use (`defer_build`): an upload's body, never on dispatch (bench/coldstart).
    model_config = ConfigDict(defer_build=True, extra="forbid")

    trace: list[TraceEntry]
    parent_session_id: str | None = Field(default=None, min_length=1, max_length=512)
    repository: str | None = Field(default=None, max_length=2048)
    title: str | None = Field(default=None, max_length=1024)
