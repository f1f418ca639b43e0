"""Trace routes: a stored session entry by entry, by the positions judges cite (the trace viewer), and the whole
(capped) outputs of its truncated tool results (what a daemon's judge tools answer from)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.api.http import RequestContext, endpoint
from chalicelib.api.params import SESSION_ID_PARAM
from chalicelib.domain.errors import NotFound
from chalicelib.domain.trace_view import (
    EntryPage,
    EntryPageQuery,
    EntryQuery,
    EntryView,
    ToolOutputPage,
    ToolOutputQuery,
)

if TYPE_CHECKING:
    from chalicelib.services.session_entries import SessionEntryService

_TAGS = ("sessions",)
_POS_PARAM = {**SESSION_ID_PARAM, "pos": {"type": "string", "pattern": "^[0-9]{1,8}$"}}


def _service() -> SessionEntryService:
    from chalicelib.wiring import container

    return container().session_entries


@endpoint("/sessions/{session_id}/entries", "GET", path_params=SESSION_ID_PARAM, query_model=EntryPageQuery,
          response_model=EntryPage, tags=_TAGS, extra_responses={400: "Bad offset, limit or chain",
                                                                 404: "No such session in this tenant"})
def list_session_entries(ctx: RequestContext, session_id: str) -> EntryPage:
    """A page of the session's entries by position (redacted; each cut to 2,000 bytes), for the trace viewer."""
    query = ctx.query(EntryPageQuery)
    return _service().page(ctx.principal, session_id, offset=query.offset, limit=query.limit, chain=query.chain)


@endpoint("/sessions/{session_id}/entries/{pos}", "GET", path_params=_POS_PARAM, query_model=EntryQuery,
          response_model=EntryView, tags=_TAGS, extra_responses={404: "No such session, or no entry at pos"})
def get_session_entry(ctx: RequestContext, session_id: str, pos: str) -> EntryView:
    """One entry in full (redacted; content over 256 KB shows its beginning and end)."""
    query = ctx.query(EntryQuery)
    if not (pos.isascii() and pos.isdigit() and len(pos) <= 8):
        raise NotFound(f"No entry at position {pos[:16]!r}; positions are whole numbers from 0.",
                       code="entry_not_found")
    return _service().entry(ctx.principal, session_id, int(pos), chain=query.chain)


@endpoint("/sessions/{session_id}/tool-outputs", "GET", path_params=SESSION_ID_PARAM, query_model=ToolOutputQuery,
          response_model=ToolOutputPage, tags=_TAGS, extra_responses={400: "Bad threshold, offset or chain",
                                                                      404: "No such session in this tenant"})
def list_tool_outputs(ctx: RequestContext, session_id: str) -> ToolOutputPage:
    """The outputs of the tool results over `threshold` bytes (redacted, each capped at 16,000 bytes), by position."""
    query = ctx.query(ToolOutputQuery)
    return _service().tool_outputs(ctx.principal, session_id, threshold=query.threshold, offset=query.offset,
                                   chain=query.chain)
