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

import gzip
import hashlib
import io
import itertools
import json
import re
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from typing import IO, Any, Literal, Protocol, TypeVar, cast

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
from chalicelib.domain.session_uploads import SessionUploadJob, UploadError, UploadState
from chalicelib.domain.trace import SessionUpload, TraceEntry, entry_to_json
from chalicelib.ingest import (
    SESSION_FORMATS,
    ParseStats,
    compact,
    iter_jsonl_lines,
    parse_session,
    redact_trace,
    validate_threshold,
)
from chalicelib.ingest.compaction import DEFAULT_THRESHOLD_BYTES, compact_wire
from chalicelib.ingest.jsonl import ByteReader
from chalicelib.ingest.redaction import REDACTION_VERSION, Redactor
from chalicelib.observability import logger
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
    read_trace,
    scrub_surrogates,
    session_too_large,
    spool_trace,
)
from chalicelib.services.session_models import (
    ChainStop,
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

# Models live in session_models; they are re-exported here, where routes and callers look for them.
__all__ = ["EvalContext", "EvalContextDoc", "JsonlFormat", "SessionDetails", "SessionPage", "SessionRecord",
           "SessionService", "SessionStored", "UploadAccepted", "UploadCompletion", "UploadRequest",
           "UploadStatus", "UploadTicket"]

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
MAX_CHAIN_DEPTH = 50
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

# Session ids are free-form slugs but must be URL-safe as they are: RFC 3986 unreserved
# characters only (so they never need percent-encoding in a path), starting with a letter or
# digit (no "." / ".." segments), at most 200 characters. UUIDs and rollout ids fit.
SESSION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,199}$")
UPLOAD_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


def validate_session_id(value: str, *, field: str = "session_id") -> str:
    if not SESSION_ID_PATTERN.fullmatch(value or ""):
        raise InvalidRequest(
            f"{field} must be 1-200 characters of letters, digits, '.', '_', '~' or '-', starting with "
            "a letter or digit.",
            code="invalid_session_id", details={"field": field, "pattern": SESSION_ID_PATTERN.pattern})
    return value


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


class ContextLoadStopped(Exception):
    """Reading a session for a run was stopped (the run's deadline passed or it was cancelled)."""


_Item = TypeVar("_Item")


def _stoppable(entries: Iterable[_Item], stop: Callable[[], bool]) -> Iterator[_Item]:
    for entry in entries:
        if stop():
            raise ContextLoadStopped
        yield entry


class EvalContextTooLarge(DomainError):
    status = 422
    code = "eval_context_too_large"


# -- ports -----------------------------------------------------------------------------------------

class ByteStream(Protocol):
    def read(self, amt: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


class StoredObjectInfo(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def etag(self) -> str: ...

    @property
    def version_id(self) -> str | None: ...

    @property
    def size(self) -> int: ...


class PresignedPutInfo(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def headers(self) -> dict[str, str]: ...


class SizedStream(ByteStream, Protocol):
    @property
    def size(self) -> int: ...


class SessionObjects(Protocol):
    """Where traces and upload objects live (S3 in production)."""

    def trace_key(self, tenant: str, session_id: str) -> str: ...

    def upload_key(self, tenant: str, upload_id: str) -> str: ...

    def put_trace(self, key: str, body: IO[bytes], size: int) -> StoredObjectInfo: ...

    def open(self, key: str) -> SizedStream | None: ...

    def delete(self, key: str) -> None: ...

    def presign_put(self, key: str, *, expires_in: int, content_type: str,
                    content_length: int | None = None) -> PresignedPutInfo: ...


class SessionIndex(Protocol):
    """Session records, pending uploads and continuation links (DynamoDB in production)."""

    def get_session(self, tenant: str, session_id: str) -> dict[str, Any] | None: ...

    def put_session(self, tenant: str, session_id: str, record: dict[str, Any]) -> dict[str, Any] | None: ...

    def delete_session(self, tenant: str, session_id: str) -> None: ...

    def list_sessions(self, tenant: str, *, limit: int, cursor: str | None = None
                      ) -> tuple[list[dict[str, Any]], str | None]: ...

    def put_upload(self, tenant: str, upload_id: str, record: dict[str, Any], *, expires_at: int) -> None: ...

    def get_upload(self, tenant: str, upload_id: str, *, now_epoch: int) -> dict[str, Any] | None: ...

    def delete_upload(self, tenant: str, upload_id: str) -> None: ...

    def claim_upload(self, tenant: str, upload_id: str) -> bool: ...

    def finish_upload(self, tenant: str, upload_id: str, outcome: dict[str, Any]) -> None: ...

    def put_leaf(self, tenant: str, leaf_uuid: str, session_id: str) -> None: ...

    def get_leaf(self, tenant: str, leaf_uuid: str) -> str | None: ...


def stream_eval_context(entries: Iterable[TraceEntry], threshold: int) -> tuple[list[TraceEntry], dict[str, Any]]:
    """`ingest.build_eval_context` in one streaming pass: each entry is redacted and then compacted
    as it is read, so peak memory is the compacted trace, not the raw one. Same result, same stats."""
    redactions: Counter[str] = Counter()

    def redacted() -> Iterator[TraceEntry]:
        for entry in entries:
            (clean,), counts = redact_trace((entry,))
            redactions.update(counts)
            yield clean

    trace, stats = compact(redacted(), threshold)
    return trace, {**stats, "redactions": dict(sorted(redactions.items()))}


# Every entry repeats these keys and a few values: one shared string each instead of one per entry
# (json.loads allocates them afresh per line) takes a third off a large trace held as dicts.
_WIRE_KEYS = {key: key for key in ("kind", "timestamp", "text", "tool", "call_id", "arguments", "output", "is_error",
                                   "output_bytes", "truncated", "agent_id", "agent_type")}
_SHARED_VALUES = frozenset({"kind", "tool", "agent_type"})


def _interned(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        key = _WIRE_KEYS.get(key, key)
        if key in _SHARED_VALUES and isinstance(value, str):
            value = sys.intern(value)
        out[key] = value
    return out


# -- the service -----------------------------------------------------------------------------------

class SessionService:
    def __init__(self, objects: SessionObjects, index: SessionIndex, clock: Clock, *,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
                 spool_memory_bytes: int = SPOOL_MEMORY_BYTES, max_session_bytes: int = MAX_SESSION_BYTES,
                 upload_rate: Callable[[Principal], None] | None = None,
                 enqueue_upload: Callable[[SessionUploadJob], None] | None = None,
                 sync_complete_max_bytes: int = SYNC_COMPLETE_MAX_BYTES,
                 on_stored: Callable[[str, SessionRecord], None] | None = None) -> None:
        self._objects = objects
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
        validate_session_id(session_id)
        data = self._index.get_session(tenant, session_id)
        if data is None:
            raise NotFound(f"Session {session_id} does not exist; upload it with PUT /sessions/{session_id}.",
                           code="session_not_found")
        return SessionRecord.model_validate(data)

    def list_sessions(self, tenant: str, *, limit: int = DEFAULT_LIST_LIMIT,
                      cursor: str | None = None) -> SessionPage:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIST_LIMIT}.", code="invalid_limit",
                                 details={"min": 1, "max": MAX_LIST_LIMIT})
        items, next_cursor = self._index.list_sessions(tenant, limit=limit, cursor=cursor)
        return SessionPage(items=[SessionRecord.model_validate(i) for i in items], next_cursor=next_cursor)

    def load_eval_context(self, tenant: str, session_id: str, threshold: int | str | None = DEFAULT_THRESHOLD_BYTES,
                          chain: bool = False, *, stop: Callable[[], bool] | None = None) -> EvalContext:
        """The redacted, compacted trace judges read; with `chain`, the whole continuation chain.

        `stop` is polled between entries: once it answers True the read ends with `ContextLoadStopped`.
        """
        threshold_bytes = validate_threshold(threshold)
        records, chain_stop, missing = self._chain_records(tenant, session_id, chain)
        redactions: Counter[str] = Counter()
        entries: Iterable[TraceEntry] = itertools.chain.from_iterable(
            self._redacted_trace_of(r, redactions) for r in records)
        if stop is not None:
            entries = _stoppable(entries, stop)
        trace, stats = compact(entries, threshold_bytes)
        compaction = {**stats, "redactions": dict(sorted(redactions.items()))}
        return EvalContext(session_id=session_id, session_chain=[r.session_id for r in records], trace=trace,
                           compaction=compaction, chain_incomplete=chain_stop is not None, chain_stop_reason=chain_stop,
                           missing_parent_session_id=missing)

    def load_eval_context_doc(self, tenant: str, session_id: str,
                              threshold: int | str | None = DEFAULT_THRESHOLD_BYTES, chain: bool = False, *,
                              stop: Callable[[], bool] | None = None) -> EvalContextDoc:
        """`load_eval_context` for the worker: the same object in wire form (`model_dump(mode="json")`),
        built without models. A trace stored under the current redaction rules is read line by line as
        plain JSON, compacted as it streams, and only the compacted dicts are kept (the worker's memory
        per stored byte, bench/memory); `reload(threshold)` recompacts them for the context fit.
        `stop` is polled between entries (the run's deadline and cancel).
        """
        threshold_bytes = validate_threshold(threshold)
        records, chain_stop, missing = self._chain_records(tenant, session_id, chain)
        redactions: Counter[str] = Counter()
        entries: Iterable[dict[str, Any]] = itertools.chain.from_iterable(
            self._wire_trace_of(r, redactions) for r in records)
        if stop is not None:
            entries = _stoppable(entries, stop)
        trace, stats = compact_wire(entries, threshold_bytes)
        base = {**stats, "redactions": dict(sorted(redactions.items()))}
        doc: dict[str, Any] = {"session_id": session_id, "session_chain": [r.session_id for r in records],
                               "trace": trace, "compaction": base, "chain_incomplete": chain_stop is not None,
                               "chain_stop_reason": chain_stop, "missing_parent_session_id": missing}

        def reload(lower: int) -> dict[str, Any]:
            # Compaction is idempotent: recompacting the compacted trace equals loading at `lower`.
            smaller, lower_stats = compact_wire(trace, lower)
            return {**doc, "trace": smaller, "compaction": {**base, **lower_stats}}

        return EvalContextDoc(doc=doc, reload=reload)

    def session_chain(self, tenant: str, session_id: str, chain: bool) -> list[str]:
        """The session ids an eval context of `session_id` covers, oldest first (itself only without `chain`):
        positions count entries across them in this order."""
        records, _, _ = self._chain_records(tenant, session_id, chain)
        return [r.session_id for r in records]

    def stored_entries(self, tenant: str, session_chain: Sequence[str], *,
                       stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
        """The stored (redacted, uncompacted) entries of the sessions of `session_chain` (an eval context's,
        oldest first), in wire form, one at a time: entry i is the eval context's position i. What the
        judges' tools read whole outputs from, and what the trace viewer pages through. `stop` is polled
        between entries."""
        for session_id in session_chain:
            entries: Iterator[dict[str, Any]] = self._wire_trace_of(self.get_session(tenant, session_id), Counter())
            yield from (_stoppable(entries, stop) if stop is not None else entries)

    def _chain_records(self, tenant: str, session_id: str, chain: bool
                       ) -> tuple[list[SessionRecord], ChainStop | None, str | None]:
        """The session and (with `chain`) its ancestors, oldest first; why and where the walk stopped early."""
        record = self.get_session(tenant, session_id)
        records = [record]
        chain_stop: ChainStop | None = None
        missing: str | None = None
        if chain:
            seen = {record.session_id}
            current = record
            while current.parent_session_id:
                parent_id = current.parent_session_id
                if parent_id in seen:
                    chain_stop = "cycle"
                    break
                if len(records) >= MAX_CHAIN_DEPTH:
                    chain_stop = "max_depth"
                    break
                data = self._index.get_session(tenant, parent_id)
                if data is None:
                    chain_stop, missing = "missing_parent", parent_id
                    break
                current = SessionRecord.model_validate(data)
                records.append(current)
                seen.add(parent_id)
            records.reverse()
        return records, chain_stop, missing

    # -- internals -------------------------------------------------------------------------

    def _redacted_trace_of(self, record: SessionRecord, redactions: Counter[str]) -> Iterator[TraceEntry]:
        """The stored trace as judges may see it: already redacted at upload under the current rules,
        or (stored before, or under older rules) redacted now."""
        if record.redaction_version == REDACTION_VERSION:
            yield from self._trace_of(record)
            redactions.update(record.redactions)
            return
        redactor = Redactor()
        for entry in self._trace_of(record):
            yield redactor.redact(entry)
        redactions.update(redactor.counts)

    def _wire_trace_of(self, record: SessionRecord, redactions: Counter[str]) -> Iterator[dict[str, Any]]:
        """`_redacted_trace_of` in wire form; a trace redacted under the current rules is never validated
        into models (it was validated when it was stored, by this service)."""
        if record.redaction_version != REDACTION_VERSION:
            for entry in self._redacted_trace_of(record, redactions):
                yield entry_to_json(entry)
            return
        stream = self._open_trace(record)
        try:
            with gzip.GzipFile(fileobj=cast(Any, stream), mode="rb") as gz:
                for line in gz:
                    if line.strip():
                        yield _interned(json.loads(line.decode("utf-8", "surrogatepass")))
        finally:
            stream.close()
        redactions.update(record.redactions)

    def _open_trace(self, record: SessionRecord) -> SizedStream:
        stream = self._objects.open(record.storage.key)
        if stream is None:
            logger.error("session trace object missing", extra={"session_id": record.session_id})
            raise DependencyUnavailable(f"The stored trace of session {record.session_id} is unavailable; "
                                        "upload the session again.", code="trace_unavailable")
        return stream

    def _trace_of(self, record: SessionRecord) -> Iterator[TraceEntry]:
        stream = self._open_trace(record)
        try:
            yield from read_trace(stream)
        finally:
            stream.close()

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
        redactor = Redactor()
        with tempfile.SpooledTemporaryFile(max_size=self._spool_memory) as spool:
            # Redacted once, here: the stored trace never holds the secrets, and reads do not redact.
            spooled = spool_trace((redactor.redact(entry) for entry in entries), spool)
            # The input is fully parsed from here on: every later failure is about storage.
            if spooled.entries == 0:
                raise InvalidRequest("The session has no conversation entries (only metadata records); "
                                     "nothing to evaluate.", code="empty_session",
                                     details={"lines": stats.lines if stats else 0})
            parent_id, parent_source = self._resolve_parent(tenant, session_id, details, stats)
            previous = self._index.get_session(tenant, session_id)
            self._check_owner(principal, session_id, previous)
            stored = self._objects.put_trace(key, spool, spooled.size)
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
            self._index.put_session(tenant, session_id, record.model_dump(mode="json", exclude={"created"}))
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
