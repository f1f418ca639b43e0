"""Reading a stored session by trace position: the console's trace viewer (a page of entries, one entry in
full) and the whole outputs a daemon's judge tools answer from (`chalicelib.domain.trace_view`).

Every read streams the stored (redacted) trace from its beginning and stops as soon as the page is full, so a
page near the start of a large session costs little and memory stays bounded by what is answered. Members of
the tenant may read any of its sessions (like the eval context).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from chalicelib.domain.errors import NotFound
from chalicelib.domain.principal import Principal
from chalicelib.domain.trace_view import (
    ENTRY_CONTENT_MAX_BYTES,
    PAGE_MAX_BYTES,
    PREVIEW_BYTES,
    TOOL_OUTPUTS_PAGE_MAX_BYTES,
    EntryPage,
    EntryView,
    ToolOutput,
    ToolOutputPage,
    entry_view,
    over_threshold,
)
from chalicelib.judges.tools import cap_output


class StoredSessions(Protocol):
    """`chalicelib.services.sessions.SessionService`."""

    def session_chain(self, tenant: str, session_id: str, chain: bool) -> list[str]: ...

    def stored_entries(self, tenant: str, session_chain: Sequence[str], *,
                       stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]: ...


def _size(view: EntryView | ToolOutput) -> int:
    return len(view.model_dump_json())


class SessionEntryService:
    def __init__(self, sessions: StoredSessions) -> None:
        self._sessions = sessions

    def page(self, principal: Principal, session_id: str, *, offset: int, limit: int, chain: bool) -> EntryPage:
        sessions = self._sessions.session_chain(principal.tenant, session_id, chain)
        items: list[EntryView] = []
        size = 0
        next_offset: int | None = None
        entries = self._sessions.stored_entries(principal.tenant, sessions)
        for pos, entry in enumerate(entries):
            if pos < offset:
                continue
            if len(items) >= limit or (items and size >= PAGE_MAX_BYTES):
                next_offset = pos
                break
            view = entry_view(pos, entry, max_bytes=PREVIEW_BYTES, head_only=True)
            items.append(view)
            size += _size(view)
        return EntryPage(session_id=session_id, session_chain=sessions, offset=offset, items=items,
                         next_offset=next_offset)

    def entry(self, principal: Principal, session_id: str, pos: int, *, chain: bool) -> EntryView:
        sessions = self._sessions.session_chain(principal.tenant, session_id, chain)
        for index, entry in enumerate(self._sessions.stored_entries(principal.tenant, sessions)):
            if index == pos:
                return entry_view(pos, entry, max_bytes=ENTRY_CONTENT_MAX_BYTES, head_only=False)
        raise NotFound(f"Session {session_id} has no entry at position {pos}.", code="entry_not_found",
                       details={"session_id": session_id, "pos": pos})

    def tool_outputs(self, principal: Principal, session_id: str, *, threshold: int, offset: int,
                     chain: bool) -> ToolOutputPage:
        sessions = self._sessions.session_chain(principal.tenant, session_id, chain)
        items: list[ToolOutput] = []
        size = 0
        next_offset: int | None = None
        for pos, entry in enumerate(self._sessions.stored_entries(principal.tenant, sessions)):
            if pos < offset or not over_threshold(entry, threshold):
                continue
            if items and size >= TOOL_OUTPUTS_PAGE_MAX_BYTES:
                next_offset = pos
                break
            output = entry.get("output")
            text = output if isinstance(output, str) else ""
            call_id = entry.get("call_id")
            item = ToolOutput(pos=pos, call_id=call_id if isinstance(call_id, str) else None,
                              output=cap_output(text), output_bytes=len(text.encode("utf-8", "surrogatepass")))
            items.append(item)
            size += _size(item)
        return ToolOutputPage(session_id=session_id, session_chain=sessions, threshold=threshold, items=items,
                              next_offset=next_offset)
