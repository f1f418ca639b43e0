"""Reading a stored session entry by entry, by the positions judges cite: the trace viewer's pages and one
entry in full, and the whole (capped) outputs a daemon's judge tools need.

Positions are the eval context's (`chalicelib.judges.evidence`): entry i of the session (or of its
continuation chain, oldest session first, with `chain=true`). What is shown is the stored trace, which is
redacted when it is uploaded; large content is cut: a page shows at most `PREVIEW_BYTES` of each entry, one
entry at most `ENTRY_CONTENT_MAX_BYTES` (its beginning and end, like a judge's `get_tool_result`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.judges.tools import OUTPUT_HEAD_BYTES, TOOL_RESULT_MAX_BYTES, cap_output, omitted_bytes

PREVIEW_BYTES = 2_000
ENTRY_CONTENT_MAX_BYTES = 256 * 1024
DEFAULT_PAGE = 100
MAX_PAGE = 200
# A page stops early rather than grow past this (entries are cut to PREVIEW_BYTES, so ~200 of them fit).
PAGE_MAX_BYTES = 1024 * 1024
TOOL_OUTPUTS_PAGE_MAX_BYTES = 2 * 1024 * 1024
MAX_POSITION = 10_000_000


class EntryView(BaseModel):
    """One trace entry as the viewer shows it. `content` is the entry's text, tool output, or tool arguments
    (JSON), cut when `truncated`; `content_bytes` is its whole size."""

    pos: int
    kind: str
    timestamp: str | None = None
    tool: str | None = None
    call_id: str | None = None
    is_error: bool | None = None
    agent_id: str | None = None
    content: str
    content_bytes: int
    truncated: bool
    omitted_bytes: int = Field(default=0, description="bytes left out of the middle of `content`")


class EntryPage(BaseModel):
    """`GET /sessions/{id}/entries`: entries from `offset` in position order; `next_offset` null at the end."""

    session_id: str
    session_chain: list[str]
    offset: int
    items: list[EntryView]
    next_offset: int | None


class EntryPageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset: int = Field(default=0, ge=0, le=MAX_POSITION)
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    chain: bool = False


class EntryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain: bool = False


class ToolOutput(BaseModel):
    pos: int
    call_id: str | None
    output: str = Field(description=f"redacted, at most {TOOL_RESULT_MAX_BYTES} bytes (its beginning and end)")
    output_bytes: int


class ToolOutputPage(BaseModel):
    """`GET /sessions/{id}/tool-outputs`: the (capped) outputs of the tool results over `threshold` bytes, what
    the eval context at that threshold shows as `<truncated: …>` markers; `next_offset` null at the end."""

    session_id: str
    session_chain: list[str]
    threshold: int
    items: list[ToolOutput]
    next_offset: int | None


class ToolOutputQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: int = Field(default=2000, ge=0, le=200_000)
    offset: int = Field(default=0, ge=0, le=MAX_POSITION)
    chain: bool = False


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _content(entry: Mapping[str, Any]) -> str:
    kind = entry.get("kind")
    if kind == "tool_result":
        output = entry.get("output")
        return output if isinstance(output, str) else ""
    if kind == "tool_invocation":
        return json.dumps(entry.get("arguments") or {}, ensure_ascii=False, indent=1)
    text = entry.get("text")
    return text if isinstance(text, str) else ""


def entry_view(pos: int, entry: Mapping[str, Any], *, max_bytes: int, head_only: bool) -> EntryView:
    """`entry` (wire form) at `pos`, its content cut to `max_bytes`: the beginning only (a page's preview) or
    the beginning and end (one entry opened)."""
    content = _content(entry)
    size = _utf8_len(content)
    shown, omitted = content, 0
    if size > max_bytes:
        if head_only:
            shown = content.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")
            omitted = size - _utf8_len(shown)
        else:
            head = max_bytes * OUTPUT_HEAD_BYTES // TOOL_RESULT_MAX_BYTES
            shown = cap_output(content, head_bytes=head, tail_bytes=max_bytes - head)
            omitted = omitted_bytes(content, head_bytes=head, tail_bytes=max_bytes - head)
    is_error = entry.get("is_error")
    return EntryView(pos=pos, kind=str(entry.get("kind")), timestamp=_str(entry.get("timestamp")),
                     tool=_str(entry.get("tool")), call_id=_str(entry.get("call_id")),
                     is_error=is_error if isinstance(is_error, bool) else None, agent_id=_str(entry.get("agent_id")),
                     content=shown, content_bytes=size, truncated=size > max_bytes, omitted_bytes=omitted)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def over_threshold(entry: Mapping[str, Any], threshold: int) -> bool:
    """A tool result the eval context at `threshold` shows as a marker (compaction's rule)."""
    if entry.get("kind") != "tool_result":
        return False
    output = entry.get("output")
    return bool(entry.get("truncated")) or (isinstance(output, str) and _utf8_len(output) > threshold)

