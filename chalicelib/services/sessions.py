"""Session use cases: store an uploaded session, presigned uploads, metadata, and the eval context.

Upload pipeline (PUT body or presigned S3 object, same code): the raw bytes are read as a stream
(gzip is detected by its magic bytes and inflated on the fly), split into bounded lines, parsed
by `chalicelib.ingest`, and each normalised entry is written as one JSON line into a gzip stream
spooled to a temporary file (RAM up to 8 MiB, then /tmp). Only after the whole input parsed
cleanly is the spooled object sent to S3 in one PUT, then the metadata item written; so a parse
failure stores nothing, and memory stays bounded by one input line plus the spool buffer
whatever the session size.

Size limits (why these numbers):
- `PUT /sessions/{id}` body: 4 MiB as sent (gzip allowed). API Gateway accepts 10 MB, but the
  REST API hands the body to Lambda inside a JSON event that a synchronous invoke caps at 6 MB;
  an NDJSON body travels base64-encoded (it is a binary media type, so non-UTF-8 bytes arrive
  intact and are rejected with a line number instead of being mangled), i.e. 4/3 larger, and
  4 MiB * 4/3 = 5.6 MB leaves room for headers and request context. Larger files use the
  presigned flow.
- A session (inflated JSONL, PUT or presigned): 512 MiB; one line: 10 MiB (ingest). The worker holds
  only the compacted trace (bench/memory), and files over 8 MiB complete in the background.

Continuation chains: `parent_session_id` is given by the uploader or, for a Claude Code
transcript, found from its `summary.leafUuid` (the uuid of the last line of the session it
continues). `load_eval_context(..., chain=True)` walks parents oldest first, at most 50 sessions,
and stops (reporting `chain_incomplete`) at a missing parent, a cycle or the depth limit.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any, Literal, cast

from chalicelib.domain.clock import Clock, iso
from chalicelib.domain.errors import (
    Conflict,
    DependencyUnavailable,
    DomainError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from chalicelib.domain.principal import Principal
from chalicelib.domain.retention import retention_stamp
from chalicelib.domain.session_uploads import SessionUploadJob, UploadError, UploadState
from chalicelib.domain.trace import SessionUpload, TraceEntry
from chalicelib.ingest import (
    SESSION_FORMATS,
    ParseStats,
    iter_jsonl_lines,
    parse_session,
)
from chalicelib.ingest.compaction import DEFAULT_THRESHOLD_BYTES
from chalicelib.ingest.jsonl import ByteReader
from chalicelib.ingest.redaction_version import REDACTION_VERSION
from chalicelib.observability import logger
from chalicelib.services.eval_context import (
    MAX_CHAIN_DEPTH,
    ContextLoadStopped,
    EvalContextReader,
    EvalContextTooLarge,
    read_session_record,
    stream_eval_context,
    validate_session_id,
)
from chalicelib.services.session_input import (
    GZIP_MAGIC,
    SURROGATE_ESCAPE,
    Caps,
    InMemoryInput,
    InputFacts,
    MeteredInput,
    capped_lines,
    direct_too_large,
    inflates_past,
    scrub_surrogates,
    session_too_large,
    spool_trace,
)
from chalicelib.services.session_models import (
    EvalContext,
    EvalContextDoc,
    JsonlFormat,
    SessionDetails,
    SessionFormat,
    SessionPage,
    SessionRecord,
    SessionSource,
    SessionStorage,
    SessionStored,
    SkippedRecords,
    UploadAccepted,
    UploadCompletion,
    UploadRequest,
    UploadStatus,
    UploadTicket,
)
from chalicelib.services.session_ports import SessionIndex, SessionObjects, SizedStream

# Models live in session_models, ports in session_ports, eval-context reading in eval_context; they are
# re-exported here, where routes and callers look for them.
__all__ = ["ContextLoadStopped", "EvalContext", "EvalContextDoc", "EvalContextTooLarge", "JsonlFormat",
           "SessionDetails", "SessionIndex", "SessionObjects", "SessionPage", "SessionRecord", "SessionService",
           "SessionStored", "UploadAccepted", "UploadCompletion", "UploadRequest", "UploadStatus", "UploadTicket",
           "stream_eval_context", "validate_session_id"]

# -- limits and identifiers -----------------------------------------------------------------------

MAX_PUT_BODY_BYTES = 4 * 1024 * 1024
MAX_SESSION_BYTES = 512 * 1024 * 1024
# Direct PUT bodies are parsed inside the API's 29 s: caps on what a small (gzip) body may expand to,
# each checked as the body is read so a bomb is refused after a fraction of a second, never parsed
# to the end (a 300 KB gzip of 300 MB of blank lines once held the API for 160 s).
MAX_DIRECT_INFLATED_BYTES = 32 * 1024 * 1024
MAX_DIRECT_LINES = 200_000
MAX_DIRECT_PARSE_SECONDS = 5.0
# Any session, presigned too: 512 MiB of one-byte lines would be 537 million Python iterations.
MAX_SESSION_LINES = 4_000_000
UPLOAD_URL_TTL_SECONDS = 15 * 60
# Matches the bucket's lifecycle rule that expires abandoned `uploads/` objects after a day.
UPLOAD_TICKET_TTL_SECONDS = 24 * 3600
# Uploaded files up to this size (as stored, gzip or not) are parsed inside the completion request;
# larger ones in the worker, so a completion never runs into API Gateway's 29 s.
SYNC_COMPLETE_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 200
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
READ_CHUNK_BYTES = 1 << 20
NDJSON = "application/x-ndjson"

UPLOAD_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def _validate_upload_id(value: str) -> str:
    if not UPLOAD_ID_PATTERN.fullmatch(value or ""):
        raise NotFound("No such upload; start one with POST /sessions/{session_id}/uploads.",
                       code="upload_not_found")
    return value


def unsupported_format(fmt: str | None) -> InvalidRequest:
    allowed = ", ".join(f"format={f}" for f in SESSION_FORMATS)
    if fmt is None:
        message = f"An application/x-ndjson session needs ?{allowed.replace(', ', ' or ?')}."
    else:
        message = f"Unknown session format {fmt[:40]!r}; use one of: {allowed}."
    return InvalidRequest(message, code="unsupported_format", details={"allowed_formats": list(SESSION_FORMATS)})


def too_large_for_put(size: int, session_id: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is {size} bytes; PUT /sessions accepts up to {MAX_PUT_BODY_BYTES} bytes. "
        f"Gzip the file, or use the presigned upload: POST /sessions/{session_id}/uploads.",
        code="payload_too_large",
        details={"limit_bytes": MAX_PUT_BODY_BYTES, "upload_path": f"/sessions/{session_id}/uploads"})


# -- the service -----------------------------------------------------------------------------------

class SessionService:
    def __init__(self, objects: SessionObjects, index: SessionIndex, clock: Clock, *,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
                 spool_memory_bytes: int = SPOOL_MEMORY_BYTES, max_session_bytes: int = MAX_SESSION_BYTES,
                 upload_rate: Callable[[Principal], None] | None = None,
                 enqueue_upload: Callable[[SessionUploadJob], None] | None = None,
                 sync_complete_max_bytes: int = SYNC_COMPLETE_MAX_BYTES,
                 on_stored: Callable[[str, SessionRecord], None] | None = None,
                 retention_days: Callable[[str], int | None] | None = None) -> None:
        self._objects = objects
        # The tenant's retention (history): the trace gets its lifecycle tag, the record its TTL.
        self._retention_days = retention_days
        # Told about every stored revision (one job message: online evaluation rules match it in the
        # worker, never inside the upload request); best effort, the upload has succeeded by then.
        self._on_stored = on_stored
        # Hands a large uploaded file to the worker; without it every completion is synchronous.
        self._enqueue_upload = enqueue_upload
        self._sync_complete_max = sync_complete_max_bytes
        # Counts one upload for the caller or raises (429): every direct upload and presigned start.
        self._upload_rate = upload_rate or (lambda _principal: None)
        self._index = index
        self._clock = clock
        self._new_id = new_id
        self._spool_memory = spool_memory_bytes
        self._max_session = max_session_bytes
        self._contexts = EvalContextReader(objects, index, self.get_session)

    # -- uploads ---------------------------------------------------------------------------

    def store_native(self, principal: Principal, session_id: str, body: bytes,
                     details: SessionDetails | None = None) -> SessionStored:
        """`PUT` with `application/json`: `{"trace": [...], "parent_session_id"?, "repository"?, "title"?}`."""
        validate_session_id(session_id)
        if len(body) > MAX_PUT_BODY_BYTES:
            raise too_large_for_put(len(body), session_id)
        if not body.strip():
            raise InvalidRequest("The request body is empty; send {\"trace\": [...]} as JSON.", code="empty_body")
        self._upload_rate(principal)  # before parsing: invalid bodies count too
        try:
            data = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"The body is not valid UTF-8 (byte {exc.start + 1}).", code="invalid_encoding",
                                 details={"byte": exc.start + 1}) from None
        except (ValueError, RecursionError):
            raise InvalidRequest("The request body is not valid JSON.", code="malformed_json") from None
        if not isinstance(data, dict):
            raise InvalidRequest("The request body must be a JSON object with a trace array.", code="malformed_json")
        upload = SessionUpload.model_validate(scrub_surrogates(data) if SURROGATE_ESCAPE.search(body) else data)
        if not upload.trace:
            raise InvalidRequest("The trace is empty: upload at least one entry.", code="empty_session")
        fallback = details or SessionDetails()
        merged = SessionDetails(repository=upload.repository or fallback.repository,
                                title=upload.title or fallback.title,
                                parent_session_id=upload.parent_session_id or fallback.parent_session_id)
        self._check_owner(principal, session_id)
        self._check_parent(principal.tenant, session_id, merged.parent_session_id)
        facts = InMemoryInput(bytes=len(body), received_bytes=len(body), sha256=hashlib.sha256(body).hexdigest())
        return self._store(principal, session_id, "native", upload.trace, None, facts, merged)

    def store_jsonl(self, principal: Principal, session_id: str, fmt: str | None, body: ByteReader,
                    details: SessionDetails | None = None) -> SessionStored:
        """`PUT` with `application/x-ndjson` (a Claude Code transcript or a Codex rollout), raw or gzip.

        `body` is read as a stream; pass the request bytes wrapped in `io.BytesIO`.
        """
        validate_session_id(session_id)
        if fmt not in SESSION_FORMATS:
            raise unsupported_format(fmt)
        details = details or SessionDetails()
        self._check_owner(principal, session_id)
        self._check_parent(principal.tenant, session_id, details.parent_session_id)
        self._upload_rate(principal)
        return self._store_stream(principal, session_id, fmt, body, details, self._direct_caps(session_id))

    def _direct_caps(self, session_id: str) -> Caps:
        direct = direct_too_large(session_id)
        if self._max_session > MAX_DIRECT_INFLATED_BYTES:
            return Caps(inflated_bytes=MAX_DIRECT_INFLATED_BYTES, lines=MAX_DIRECT_LINES,
                         parse_seconds=MAX_DIRECT_PARSE_SECONDS, too_large=direct)

        def too_large(kind: str, limit: float) -> DomainError:
            # Over the session limit itself: the presigned path would refuse it too.
            return session_too_large(kind, limit) if kind == "inflated_bytes" else direct(kind, limit)

        return Caps(inflated_bytes=self._max_session, lines=MAX_DIRECT_LINES, parse_seconds=MAX_DIRECT_PARSE_SECONDS,
                     too_large=too_large)

    def store_jsonl_bytes(self, principal: Principal, session_id: str, fmt: str | None, body: bytes,
                          details: SessionDetails | None = None) -> SessionStored:
        validate_session_id(session_id)
        if len(body) > MAX_PUT_BODY_BYTES:
            raise too_large_for_put(len(body), session_id)
        if not body.strip():
            raise InvalidRequest("The request body is empty; send the session's JSONL lines.", code="empty_body")
        # Inflating in C and discarding the output takes ~0.1 s for the whole cap, so a gzip bomb is
        # refused before a single line is parsed; the caps checked while parsing remain the guarantee.
        caps = self._direct_caps(session_id)
        if body[:2] == GZIP_MAGIC and inflates_past(body, caps.inflated_bytes):
            raise caps.too_large("inflated_bytes", caps.inflated_bytes)
        return self.store_jsonl(principal, session_id, fmt, io.BytesIO(body), details)

    def create_upload(self, principal: Principal, session_id: str, request: UploadRequest) -> UploadTicket:
        """Start a presigned upload for a file too large for `PUT /sessions/{id}`."""
        validate_session_id(session_id)
        self._check_owner(principal, session_id)
        self._check_parent(principal.tenant, session_id, request.parent_session_id)
        if request.content_length > self._max_session:
            raise PayloadTooLarge(f"content_length {request.content_length} is over the {self._max_session}-byte "
                                  "session limit.", code="session_too_large",
                                  details={"limit_bytes": self._max_session})
        self._upload_rate(principal)
        upload_id = self._new_id()
        now = self._clock.now()
        presigned = self._objects.presign_put(self._objects.upload_key(principal.tenant, upload_id),
                                              expires_in=UPLOAD_URL_TTL_SECONDS, content_type=NDJSON,
                                              content_length=request.content_length)
        ticket = {"session_id": session_id, "format": request.format, "repository": request.repository,
                  "title": request.title, "parent_session_id": request.parent_session_id,
                  "content_length": request.content_length, "created_at": iso(now),
                  "created_by": principal.user}
        self._index.put_upload(principal.tenant, upload_id, ticket,
                               expires_at=int((now + timedelta(seconds=UPLOAD_TICKET_TTL_SECONDS)).timestamp()))
        return UploadTicket(upload_id=upload_id, session_id=session_id, url=presigned.url,
                            headers=dict(presigned.headers),
                            expires_at=iso(now + timedelta(seconds=UPLOAD_URL_TTL_SECONDS)),
                            max_bytes=self._max_session,
                            complete_path=f"/sessions/{session_id}/uploads/{upload_id}/complete")

    def complete_upload(self, principal: Principal, session_id: str, upload_id: str
                        ) -> SessionStored | UploadAccepted:
        """Parse the uploaded object exactly like a PUT body and store it, then drop the upload.

        A file over `SYNC_COMPLETE_MAX_BYTES` is handed to the worker instead: the answer is
        `UploadAccepted` (202) and `upload_status` tells when it is stored or why it failed.
        """
        validate_session_id(session_id)
        _validate_upload_id(upload_id)
        tenant = principal.tenant
        ticket = self._ticket(principal, session_id, upload_id)
        if ticket.get("status") in ("processing", "succeeded", "failed"):
            return self._accepted(session_id, upload_id, ticket["status"])
        self._check_owner(principal, session_id)
        key = self._objects.upload_key(tenant, upload_id)
        stream = self._objects.open(key)
        if stream is None:
            raise Conflict("Nothing has been uploaded yet: PUT the file to the upload url with the returned "
                           "headers, then complete the upload.", code="upload_not_received")
        if self._enqueue_upload is not None and stream.size > self._sync_complete_max:
            stream.close()
            if self._index.claim_upload(tenant, upload_id):
                self._enqueue_upload(SessionUploadJob(tenant=tenant, user=principal.user, roles=principal.roles,
                                                      session_id=session_id, upload_id=upload_id))
            return self._accepted(session_id, upload_id, "processing")
        stored = self._complete_stream(principal, session_id, upload_id, ticket, stream, keep_ticket=False)
        self._discard_upload(tenant, upload_id, key)
        return stored

    def complete_upload_job(self, job: SessionUploadJob) -> UploadState:
        """The worker's half of a large completion: store the file, then record the outcome on the upload.

        Retryable storage failures raise (SQS redelivers the job); a bad file is recorded as failed.
        """
        principal = Principal(tenant=job.tenant, user=job.user, roles=job.roles)
        ticket = self._index.get_upload(job.tenant, job.upload_id, now_epoch=int(self._clock.now().timestamp()))
        if ticket is None or ticket.get("status") in ("succeeded", "failed"):
            return "failed" if ticket is None else ticket["status"]  # expired, or a redelivered job
        key = self._objects.upload_key(job.tenant, job.upload_id)
        try:
            self._check_owner(principal, job.session_id)
            stream = self._objects.open(key)
            if stream is None:
                raise Conflict("The uploaded file is gone; start a new upload.", code="upload_not_received")
            stored = self._complete_stream(principal, job.session_id, job.upload_id, ticket, stream,
                                           keep_ticket=True)
        except DependencyUnavailable:
            raise
        except DomainError as exc:
            self._best_effort(lambda: self._objects.delete(key), "delete upload object")
            error = UploadError(code=exc.code, message=exc.message, details=exc.details)
            self._index.finish_upload(job.tenant, job.upload_id, {"status": "failed",
                                                                   "error": error.model_dump(mode="json")})
            return "failed"
        self._best_effort(lambda: self._objects.delete(key), "delete upload object")
        self._index.finish_upload(job.tenant, job.upload_id, {"status": "succeeded",
                                                               "session": stored.model_dump(mode="json")})
        return "succeeded"

    def upload_status(self, principal: Principal, session_id: str, upload_id: str) -> UploadStatus:
        validate_session_id(session_id)
        _validate_upload_id(upload_id)
        ticket = self._ticket(principal, session_id, upload_id)
        state: UploadState = ticket.get("status") or "pending"
        session = SessionStored.model_validate(ticket["session"]) if ticket.get("session") else None
        error = UploadError.model_validate(ticket["error"]) if ticket.get("error") else None
        return UploadStatus(upload_id=upload_id, session_id=session_id, status=state, session=session, error=error)

    def _ticket(self, principal: Principal, session_id: str, upload_id: str) -> dict[str, Any]:
        ticket = self._index.get_upload(principal.tenant, upload_id, now_epoch=int(self._clock.now().timestamp()))
        if (ticket is None or ticket.get("session_id") != session_id
                or (ticket.get("created_by") != principal.user and not principal.is_admin)):
            raise NotFound("No such upload for this session (it may have expired); start a new one with "
                           f"POST /sessions/{session_id}/uploads.", code="upload_not_found")
        return ticket

    @staticmethod
    def _accepted(session_id: str, upload_id: str, state: UploadState) -> UploadAccepted:
        return UploadAccepted(upload_id=upload_id, session_id=session_id, status=state,
                              status_path=f"/sessions/{session_id}/uploads/{upload_id}")

    def _complete_stream(self, principal: Principal, session_id: str, upload_id: str, ticket: dict[str, Any],
                         stream: SizedStream, *, keep_ticket: bool) -> SessionStored:
        tenant = principal.tenant
        key = self._objects.upload_key(tenant, upload_id)
        details = SessionDetails(repository=ticket.get("repository"), title=ticket.get("title"),
                                 parent_session_id=ticket.get("parent_session_id"))
        try:
            expected = ticket.get("content_length")
            if expected is not None and stream.size != int(expected):
                raise InvalidRequest(f"The uploaded file is {stream.size} bytes, not the {expected} bytes the upload "
                                     "was started with; start a new upload with the file's exact size.",
                                     code="upload_size_mismatch",
                                     details={"content_length": int(expected), "received_bytes": stream.size})
            if stream.size > self._max_session:
                raise PayloadTooLarge(f"The uploaded file is {stream.size} bytes; the limit is "
                                      f"{self._max_session} bytes.", code="session_too_large",
                                      details={"limit_bytes": self._max_session})
            return self._store_stream(principal, session_id, str(ticket["format"]), stream, details)
        except DependencyUnavailable:
            raise  # retryable: keep the upload so completing again can succeed
        except DomainError:
            # The file itself is unusable: drop it so nothing of it stays stored (a background
            # completion keeps the ticket, which records why, for the client polling it).
            if keep_ticket:
                self._best_effort(lambda: self._objects.delete(key), "delete upload object")
            else:
                self._discard_upload(tenant, upload_id, key)
            raise
        finally:
            stream.close()

    # -- reads -----------------------------------------------------------------------------

    def get_session(self, tenant: str, session_id: str) -> SessionRecord:
        return read_session_record(self._index, tenant, session_id)

    def list_sessions(self, tenant: str, *, limit: int = DEFAULT_LIST_LIMIT,
                      cursor: str | None = None) -> SessionPage:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}.", code="invalid_limit",
                                 details={"min": 1, "max": MAX_LIST_LIMIT})
        items, next_cursor = self._index.list_sessions(tenant, limit=limit, cursor=cursor)
        return SessionPage(items=[SessionRecord.model_validate(i) for i in items], next_cursor=next_cursor)

    def load_eval_context(self, tenant: str, session_id: str, threshold: int | str | None = DEFAULT_THRESHOLD_BYTES,
                          chain: bool = False, *, stop: Callable[[], bool] | None = None) -> EvalContext:
        """The redacted, compacted trace judges read (`EvalContextReader.load`)."""
        return self._contexts.load(tenant, session_id, threshold, chain, stop=stop)

    def load_eval_context_doc(self, tenant: str, session_id: str,
                              threshold: int | str | None = DEFAULT_THRESHOLD_BYTES, chain: bool = False, *,
                              stop: Callable[[], bool] | None = None) -> EvalContextDoc:
        """The same for the worker, as wire dicts (`EvalContextReader.load_doc`)."""
        return self._contexts.load_doc(tenant, session_id, threshold, chain, stop=stop)

    def session_chain(self, tenant: str, session_id: str, chain: bool) -> list[str]:
        """The session ids an eval context of `session_id` covers (`EvalContextReader.session_chain`)."""
        return self._contexts.session_chain(tenant, session_id, chain)

    def trace_length(self, tenant: str, session_id: str, chain: bool) -> int:
        """How many entries an eval context of `session_id` has (the chain's, with `chain`): the positions
        judges may cite are 0 to this minus one."""
        records, _, _ = self._contexts.chain_records(tenant, session_id, chain)
        return sum(r.entries for r in records)

    def stored_entries(self, tenant: str, session_chain: Sequence[str], *,
                       stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
        """The stored entries of an eval context's sessions, by position (`EvalContextReader.stored_entries`)."""
        return self._contexts.stored_entries(tenant, session_chain, stop=stop)

    # -- internals -------------------------------------------------------------------------

    def _check_owner(self, principal: Principal, session_id: str,
                     previous: dict[str, Any] | bool | None = True) -> None:
        """Only the member who uploaded a session (or an admin) may replace it.

        Checked before anything is read (`previous=True`: look it up) and again with the record read
        right before the write, so two members racing on one id cannot slip past it.
        """
        record = self._index.get_session(principal.tenant, session_id) if previous is True else previous
        if isinstance(record, dict) and not principal.is_admin and record.get("uploaded_by") != principal.user:
            raise Forbidden(f"Session {session_id} was uploaded by another member; only they or an admin may "
                            "replace it. Upload yours under another session id.", code="not_session_owner",
                            details={"session_id": session_id})

    def _check_parent(self, tenant: str, session_id: str, parent_id: str | None) -> None:
        """An explicit parent must be a valid id, not the session itself, and not close a cycle."""
        if parent_id is None:
            return
        validate_session_id(parent_id, field="parent_session_id")
        current: str | None = parent_id
        for _ in range(MAX_CHAIN_DEPTH):
            if current is None:
                return
            if current == session_id:
                raise InvalidRequest(f"parent_session_id {parent_id} would make session {session_id} its own "
                                     "ancestor; a continuation chain cannot loop.",
                                     code="session_chain_cycle", details={"parent_session_id": parent_id})
            data = self._index.get_session(tenant, current)
            current = data.get("parent_session_id") if data else None

    def _store_stream(self, principal: Principal, session_id: str, fmt: str, raw: ByteReader,
                      details: SessionDetails, caps: Caps | None = None) -> SessionStored:
        caps = caps or Caps(inflated_bytes=self._max_session, lines=MAX_SESSION_LINES, parse_seconds=None,
                             too_large=session_too_large)
        source = MeteredInput(raw, limit=caps.inflated_bytes, too_large=caps.too_large)
        lines = capped_lines(iter_jsonl_lines(source, chunk_size=READ_CHUNK_BYTES), caps, self._clock.monotonic)
        parsed = parse_session(fmt, lines)
        return self._store(principal, session_id, fmt, parsed, parsed.stats, source, details)

    def _store(self, principal: Principal, session_id: str, fmt: str, entries: Iterable[TraceEntry],
               stats: ParseStats | None, facts: InputFacts, details: SessionDetails) -> SessionStored:
        """Spool, then (input fully parsed) PUT the trace object, then write the record."""
        tenant = principal.tenant
        key = self._objects.trace_key(tenant, session_id)
        from chalicelib.ingest.redaction import Redactor  # the detectors: an upload's, not a reader's

        redactor = Redactor()
        with tempfile.SpooledTemporaryFile(max_size=self._spool_memory) as spool:
            # Redacted once, here: the stored trace never holds the secrets, and reads do not redact.
            spooled = spool_trace(redactor.redact_all(entries), spool)
            # The input is fully parsed from here on: every later failure is about storage.
            if spooled.entries == 0:
                raise InvalidRequest("The session has no conversation entries (only metadata records); "
                                     "nothing to evaluate.", code="empty_session",
                                     details={"lines": stats.lines if stats else 0})
            parent_id, parent_source = self._resolve_parent(tenant, session_id, details, stats)
            previous = self._index.get_session(tenant, session_id)
            self._check_owner(principal, session_id, previous)
            stamp = (retention_stamp(self._retention_days(tenant), self._clock.now())
                     if self._retention_days is not None else None)
            stored = self._objects.put_trace(key, spool, spooled.size, tags=stamp.object_tags if stamp else None)
        now = iso(self._clock.now())
        meta = stats.metadata if stats else None
        record = SessionStored(
            session_id=session_id, format=cast(SessionFormat, fmt),
            repository=details.repository or (meta.repository_url if meta else None),
            title=details.title or (meta.title if meta else None),
            parent_session_id=parent_id, parent_source=parent_source,
            entries=spooled.entries, entries_by_kind=spooled.by_kind,
            bytes=facts.bytes, received_bytes=facts.received_bytes, sha256=facts.sha256,
            lines=stats.lines if stats else spooled.entries,
            skipped=SkippedRecords(metadata=stats.skipped_metadata, injected=stats.skipped_injected,
                                   blank=stats.blank_lines, unknown=stats.skipped_unknown) if stats
            else SkippedRecords(),
            tool_results_unpaired=stats.tool_results_unpaired if stats else 0,
            source=SessionSource(
                session_id=meta.session_id, cwd=meta.cwd, git_branch=meta.git_branch, git_commit=meta.git_commit,
                repository_url=meta.repository_url, model=meta.model, agent_version=meta.agent_version,
                started_at=meta.started_at, ended_at=meta.ended_at,
                continuation_leaf_uuid=meta.continuation_leaf_uuid, last_uuid=meta.last_uuid,
            ) if meta else SessionSource(),
            storage=SessionStorage(key=stored.key, etag=stored.etag, version_id=stored.version_id, bytes=stored.size),
            revision=int(previous.get("revision", 0)) + 1 if previous else 1,
            created_at=str(previous.get("created_at", now)) if previous else now,
            uploaded_at=now, uploaded_by=principal.user, created=previous is None,
            redaction_version=REDACTION_VERSION, redactions=redactor.counts,
        )
        try:
            self._index.put_session(tenant, session_id, {**record.model_dump(mode="json", exclude={"created"}),
                                                         "expires_at": stamp.expires_at if stamp else None})
        except DependencyUnavailable:
            if previous is None:
                self._best_effort(lambda: self._objects.delete(key), "delete orphaned trace")
            raise
        if meta and meta.last_uuid:
            last_uuid = meta.last_uuid
            self._best_effort(lambda: self._index.put_leaf(tenant, last_uuid, session_id), "record continuation leaf")
        if self._on_stored is not None:
            on_stored = self._on_stored
            self._best_effort(lambda: on_stored(tenant, record), "announce stored session")
        logger.info("session stored", extra={"session_id": session_id, "format": fmt, "entries": record.entries,
                                             "bytes": record.bytes, "replaced": not record.created})
        return record

    def _resolve_parent(self, tenant: str, session_id: str, details: SessionDetails, stats: ParseStats | None
                        ) -> tuple[str | None, Literal["uploader", "continuation"] | None]:
        if details.parent_session_id:
            return details.parent_session_id, "uploader"
        leaf = stats.metadata.continuation_leaf_uuid if stats else None
        if leaf:
            parent = self._index.get_leaf(tenant, leaf)
            if parent and parent != session_id:
                return parent, "continuation"
        return None, None

    def _discard_upload(self, tenant: str, upload_id: str, key: str) -> None:
        self._best_effort(lambda: self._objects.delete(key), "delete upload object")
        self._best_effort(lambda: self._index.delete_upload(tenant, upload_id), "delete upload ticket")

    @staticmethod
    def _best_effort(action: Callable[[], None], what: str) -> None:
        try:
            action()
        except DependencyUnavailable:
            logger.warning("best-effort cleanup failed", extra={"action": what})
