"""Session routes: upload (direct PUT or presigned), metadata, listing, and the eval context."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from chalice import Response
from pydantic import BaseModel, ConfigDict, Field

from chalicelib.api.http import ApiResponse, RequestContext, endpoint
from chalicelib.api.params import SESSION_ID_PARAM
from chalicelib.domain.errors import PayloadTooLarge, UnsupportedMediaType
from chalicelib.domain.trace import SessionUpload
from chalicelib.services.sessions import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    MAX_PUT_BODY_BYTES,
    NDJSON,
    EvalContext,
    EvalContextTooLarge,
    SessionDetails,
    SessionPage,
    SessionRecord,
    SessionStored,
    UploadAccepted,
    UploadCompletion,
    UploadRequest,
    UploadStatus,
    UploadTicket,
    too_large_for_put,
)

if TYPE_CHECKING:
    from chalicelib.services.sessions import SessionService


# A synchronous Lambda response is capped at 6 MB *after* the runtime JSON-escapes the body into
# its envelope; this is measured on the escaped body, with headroom for status and headers.
MAX_EVAL_CONTEXT_RESPONSE_BYTES = 6_000_000 - 64 * 1024

_TAGS = ("sessions",)


def _sessions() -> SessionService:
    from chalicelib.wiring import container

    return container().sessions


class PutSessionQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A plain string so the service answers an unknown format with its own code (unsupported_format);
    # the document still lists the accepted values.
    format: str | None = Field(default=None, description="claude-code or codex (application/x-ndjson only)",
                               json_schema_extra={"enum": ["claude-code", "codex", "native"]})
    repository: str | None = Field(default=None, max_length=2048)
    title: str | None = Field(default=None, max_length=1024)
    parent_session_id: str | None = Field(default=None, max_length=200)


class ListSessionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)
    cursor: str | None = Field(default=None, max_length=1024)


class EvalContextQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Kept a string so the service's own validation gives the specific codes
    # (invalid_threshold / threshold_out_of_range) that in-process callers get too.
    threshold: str | None = Field(default=None, description="bytes per tool output, 0..200000, default 2000")
    chain: bool = False


@endpoint("/sessions/{session_id}", "PUT", path_params=SESSION_ID_PARAM,
          auth="member", tags=_TAGS,
          summary="Upload (or replace) a recorded session",
          request_model=SessionUpload, query_model=PutSessionQuery, response_model=SessionStored, status=201,
          request_content_types=("application/json", NDJSON),
          extra_responses={200: "replaced an existing session",
                           403: "the session was uploaded by another member (not_session_owner)",
                           413: "body over 4 MiB, or over the direct-upload caps once inflated (32 MiB, "
                                "200,000 lines, 5 s of parsing): use the presigned upload",
                           429: "over the upload rate limit per user (Retry-After says when to retry)",
                           415: "content type is neither application/json nor application/x-ndjson"})
def put_session(ctx: RequestContext, session_id: str) -> ApiResponse:
    query = ctx.query(PutSessionQuery)
    ctype = ctx.content_type
    if ctype == "application/json" and query.format not in (None, "native"):
        raise UnsupportedMediaType(f"A {query.format} transcript is JSONL: send it with "
                                   "Content-Type: application/x-ndjson.")
    if ctype not in ("application/json", NDJSON):
        raise UnsupportedMediaType(
            f"Send the session as application/json (a native trace) or as application/x-ndjson with "
            f"?format=claude-code or ?format=codex, not {ctype or 'a body without Content-Type'}.")
    try:
        body = ctx.raw_body(MAX_PUT_BODY_BYTES)
    except PayloadTooLarge:
        raise too_large_for_put(len(ctx.request.raw_body or b""), session_id) from None
    details = SessionDetails(repository=query.repository, title=query.title,
                             parent_session_id=query.parent_session_id)
    service = _sessions()
    if ctype == "application/json":
        stored = service.store_native(ctx.principal, session_id, body, details)
    else:
        stored = service.store_jsonl_bytes(ctx.principal, session_id, query.format, body, details)
    return ApiResponse(stored, status=201 if stored.created else 200)


@endpoint("/sessions/{session_id}", "GET", path_params=SESSION_ID_PARAM,
          auth="member", tags=_TAGS,
          summary="A stored session's metadata", response_model=SessionRecord, extra_responses={404: "not found"})
def get_session(ctx: RequestContext, session_id: str) -> SessionRecord:
    return _sessions().get_session(ctx.principal.tenant, session_id)


@endpoint("/sessions", "GET", auth="member", tags=_TAGS,
          summary="The tenant's sessions, most recently uploaded first",
          query_model=ListSessionsQuery, response_model=SessionPage)
def list_sessions(ctx: RequestContext) -> SessionPage:
    query = ctx.query(ListSessionsQuery)
    return _sessions().list_sessions(ctx.principal.tenant, limit=query.limit, cursor=query.cursor)


@endpoint("/sessions/{session_id}/uploads", "POST", path_params=SESSION_ID_PARAM,
          auth="member", tags=_TAGS,
          summary="Start a presigned upload for a session file too large for PUT",
          request_model=UploadRequest, response_model=UploadTicket, status=201,
          extra_responses={403: "the session was uploaded by another member (not_session_owner)",
                           429: "over the upload rate limit per user (Retry-After says when to retry)"})
def create_session_upload(ctx: RequestContext, session_id: str) -> ApiResponse:
    ticket = _sessions().create_upload(ctx.principal, session_id, ctx.body(UploadRequest))
    return ApiResponse(ticket, status=201)


@endpoint("/sessions/{session_id}/uploads/{upload_id}/complete", "POST", path_params=SESSION_ID_PARAM,
          auth="member", tags=_TAGS,
          summary="Parse and store a file PUT to a presigned upload url",
          response_model=UploadCompletion, status=201,
          extra_responses={200: "replaced an existing session",
                           202: "a large file: parsed in the background; poll status_path",
                           403: "the session was uploaded by another member (not_session_owner)",
                           404: "unknown or expired upload", 409: "nothing was PUT to the upload url yet"})
def complete_session_upload(ctx: RequestContext, session_id: str, upload_id: str) -> ApiResponse:
    outcome = _sessions().complete_upload(ctx.principal, session_id, upload_id)
    if isinstance(outcome, UploadAccepted):
        return ApiResponse(outcome, status=202)
    return ApiResponse(outcome, status=201 if outcome.created else 200)


@endpoint("/sessions/{session_id}/uploads/{upload_id}", "GET", path_params=SESSION_ID_PARAM,
          auth="member", tags=_TAGS,
          summary="Where a presigned upload is: pending, processing, succeeded (with the session) or failed",
          response_model=UploadStatus, extra_responses={404: "unknown or expired upload"})
def get_session_upload(ctx: RequestContext, session_id: str, upload_id: str) -> UploadStatus:
    return _sessions().upload_status(ctx.principal, session_id, upload_id)


@endpoint("/sessions/{session_id}/eval-context", "GET", path_params=SESSION_ID_PARAM,
          auth="member", tags=_TAGS,
          summary="The redacted, compacted trace judges read", query_model=EvalContextQuery,
          response_model=EvalContext,
          extra_responses={404: "not found", 422: "the context is too large for one response"})
def get_eval_context(ctx: RequestContext, session_id: str) -> Response:
    query = ctx.query(EvalContextQuery)
    result = _sessions().load_eval_context(ctx.principal.tenant, session_id, query.threshold, query.chain)
    body = result.to_json()
    escaped = len(json.dumps(body))
    if escaped > MAX_EVAL_CONTEXT_RESPONSE_BYTES:
        raise EvalContextTooLarge(
            f"The eval context is about {escaped} bytes, over the {MAX_EVAL_CONTEXT_RESPONSE_BYTES}-byte "
            "response limit; lower ?threshold= or request it without chain=true.",
            details={"bytes": escaped, "limit_bytes": MAX_EVAL_CONTEXT_RESPONSE_BYTES,
                     "threshold_bytes": result.compaction.get("threshold_bytes")})
    return Response(body=body, status_code=200,
                    headers={"Content-Type": "application/json", "Cache-Control": "no-store"})
