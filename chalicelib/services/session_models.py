"""The sessions API's models: stored records, upload requests, tickets and statuses, the eval context."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_serializer

from chalicelib.domain.session_uploads import UploadError, UploadState
from chalicelib.domain.trace import TraceEntry, trace_to_json

SessionFormat = Literal["native", "claude-code", "codex"]
JsonlFormat = Literal["claude-code", "codex"]
ChainStop = Literal["missing_parent", "cycle", "max_depth"]


# The upload side's models (details, requests, tickets, statuses, pages) are built on first use
# (`defer_build`): dispatch reads a session's record and eval context only (bench/coldstart).


class _Out(BaseModel):
    # Stored records are read back with these models; unknown attributes from newer writers are
    # ignored rather than failing old readers.
    model_config = ConfigDict(extra="ignore")


class SkippedRecords(_Out):
    """Input records that produced no entry (never fatal)."""

    metadata: int = 0
    injected: int = 0
    blank: int = 0
    unknown: dict[str, int] = Field(default_factory=dict)


class SessionSource(_Out):
    """What the transcript itself says about the recorded session (absent for native uploads)."""

    session_id: str | None = None
    cwd: str | None = None
    git_branch: str | None = None
    git_commit: str | None = None
    repository_url: str | None = None
    model: str | None = None
    agent_version: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    continuation_leaf_uuid: str | None = None
    last_uuid: str | None = None


class SessionStorage(_Out):
    key: str
    etag: str
    version_id: str | None = None
    bytes: int
    content_encoding: Literal["gzip"] = "gzip"


class SessionRecord(_Out):
    """`GET /sessions/{id}`: one stored session's metadata."""

    session_id: str
    format: SessionFormat
    repository: str | None = None
    title: str | None = None
    parent_session_id: str | None = None
    parent_source: Literal["uploader", "continuation"] | None = None
    entries: int
    entries_by_kind: dict[str, int]
    bytes: int = Field(description="size of the session as uploaded (after gzip inflation)")
    received_bytes: int = Field(description="bytes received on the wire (the gzip size if gzipped)")
    sha256: str
    lines: int
    skipped: SkippedRecords
    tool_results_unpaired: int = 0
    source: SessionSource
    storage: SessionStorage
    revision: int
    created_at: str
    uploaded_at: str
    uploaded_by: str
    # Traces are redacted once, when stored. A record without this (stored before) or with an
    # older version has its trace redacted again each time it is read.
    redaction_version: int | None = Field(
        default=None, description="version of the redaction rules the stored trace was redacted with at upload")
    redactions: dict[str, int] = Field(default_factory=dict,
                                       description="secrets replaced by <redacted:kind> at upload, per kind")


class SessionStored(SessionRecord):
    """`PUT /sessions/{id}` and upload completion: the stored record, and whether it was new."""

    model_config = ConfigDict(defer_build=True)

    created: bool


class SessionPage(_Out):
    model_config = ConfigDict(defer_build=True)

    items: list[SessionRecord]
    next_cursor: str | None = None


class SessionDetails(BaseModel):
    """Uploader-supplied metadata (native body, query string, or the upload request)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    repository: str | None = Field(default=None, max_length=2048)
    title: str | None = Field(default=None, max_length=1024)
    parent_session_id: str | None = Field(default=None, max_length=200)


class UploadRequest(SessionDetails):
    """`POST /sessions/{id}/uploads`."""

    model_config = ConfigDict(defer_build=True)

    format: JsonlFormat
    # Required: it is signed into the URL, so S3 refuses a body of any other size (an unsized URL
    # would accept up to 5 GB into the bucket), and completion checks the stored size against it.
    content_length: int = Field(ge=1, description="exact size in bytes of the file you will PUT")


class UploadTicket(_Out):
    model_config = ConfigDict(defer_build=True)

    upload_id: str
    session_id: str
    url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str]
    expires_at: str
    max_bytes: int
    complete_path: str


class UploadAccepted(_Out):
    """`POST …/complete` for a large file: 202, parsed in the background; poll `status_path`."""

    model_config = ConfigDict(defer_build=True)

    upload_id: str
    session_id: str
    status: UploadState
    status_path: str


@dataclass(frozen=True)
class EvalContextDoc:
    """The worker's eval context: `doc` is `EvalContext.model_dump(mode="json")` except that its `trace` is a
    `SpooledTrace` (read entry by entry, `list()` it for the dicts); `reload(threshold)` the same compacted at
    a lower threshold (what the context fit asks for)."""

    doc: dict[str, Any]
    reload: Callable[[int], dict[str, Any]]


class UploadCompletion(RootModel[SessionStored | UploadAccepted]):
    """`POST …/complete`: the stored session (201/200), or `UploadAccepted` (202) for a large file."""

    model_config = ConfigDict(defer_build=True)


class UploadStatus(_Out):
    """`GET /sessions/{id}/uploads/{upload_id}`: where a presigned upload is."""

    model_config = ConfigDict(defer_build=True)

    upload_id: str
    session_id: str
    status: UploadState
    session: SessionStored | None = None
    error: UploadError | None = None


class EvalContext(_Out):
    """What every runner judges: `GET /sessions/{id}/eval-context` and `load_eval_context`.

    `trace` is redacted and compacted; dumping the model gives the wire form (absent agent
    fields omitted per entry). `chain_incomplete` says the parent walk stopped early, and why.
    """

    session_id: str
    session_chain: list[str]
    trace: list[TraceEntry]
    compaction: dict[str, Any]
    chain_incomplete: bool = False
    chain_stop_reason: ChainStop | None = None
    missing_parent_session_id: str | None = None

    @field_serializer("trace")
    def _trace_wire(self, trace: list[TraceEntry]) -> list[dict[str, Any]]:
        return trace_to_json(trace)

    def to_json(self) -> str:
        """The exact response body (the judges embed this whole object as TRACE_JSON)."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))
