"""Daemon runner domain: registration, presence, jobs offered to a daemon, and the wire messages.

A daemon is a user's own machine running the reference daemon (or a compatible one). It registers,
proves it is alive with heartbeats (presence is a TTL: `expires_at` = last heartbeat +
`PRESENCE_TTL_SECONDS`), and receives jobs either by long poll or pushed over the WebSocket API.
Everything here is pure; `chalicelib.services.daemons` applies it with the stores.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from chalicelib.judges.catalog import Question

JudgeCli = Literal["claude", "codex"]
JobStatus = Literal["offered", "claimed", "finished", "expired", "cancelled"]

# Presence: a daemon is available while its last heartbeat is younger than this. The reference
# daemon heartbeats every HEARTBEAT_INTERVAL_SECONDS, so three missed beats still leave it listed.
PRESENCE_TTL_SECONDS = 90
HEARTBEAT_INTERVAL_SECONDS = 20
# API Gateway closes a WebSocket after 2 h at the latest; the connection item never outlives that.
CONNECTION_TTL_SECONDS = 2 * 3600
# A finished job item is kept a day for support questions, then DynamoDB's TTL removes it.
JOB_RETENTION_SECONDS = 24 * 3600

# Long poll: API Gateway's REST integration times out at 29 s, so a poll never waits longer than 25 s.
MAX_POLL_WAIT_SECONDS = 25
DEFAULT_POLL_WAIT_SECONDS = 20

# Request size limits (413 above them). A 13-verdict result is ~20 KB; 1 MB leaves room for long
# findings without letting a daemon store arbitrary blobs in a 400 KB DynamoDB item.
MAX_EVENT_BYTES = 64 * 1024
MAX_RESULT_BYTES = 1024 * 1024
MAX_WS_MESSAGE_BYTES = 128 * 1024  # the WebSocket API's own frame-assembled message limit

_NAME = Annotated[str, Field(min_length=1, max_length=100)]
_PLATFORM = Annotated[str, Field(min_length=1, max_length=64)]


class DaemonRegistration(BaseModel):
    """POST /daemons body."""

    model_config = ConfigDict(extra="forbid")

    name: _NAME = Field(description="A label the user recognises, e.g. the host name.")
    platform: _PLATFORM = Field(description="e.g. linux-x86_64, darwin-arm64.")
    judges: list[JudgeCli] = Field(min_length=1, max_length=2,
                                   description="Judge CLIs installed on this daemon: 'claude', 'codex'.")
    version: str | None = Field(default=None, max_length=64, description="Daemon software version (extension).")
    concurrency: StrictInt | None = Field(default=None, ge=1, le=64,
                                          description="Judge processes it runs in parallel (extension).")

    @field_validator("judges")
    @classmethod
    def _unique(cls, value: list[JudgeCli]) -> list[JudgeCli]:
        return list(dict.fromkeys(value))

    @field_validator("name", "platform")
    @classmethod
    def _printable(cls, value: str) -> str:
        stripped = value.strip()
        if not stripped or any(ord(c) < 32 for c in stripped):
            raise ValueError("must be non-blank printable text")
        return stripped


class DaemonRecord(BaseModel):
    """The stored daemon (one DynamoDB item per daemon, owned by one user)."""

    model_config = ConfigDict(extra="ignore")

    daemon_id: str
    tenant: str
    user: str
    name: str
    platform: str
    judges: list[JudgeCli]
    version: str | None = None
    concurrency: int | None = None
    registered_at: str
    last_seen_at: str
    expires_at: int  # epoch seconds; the TTL attribute and the presence deadline

    def available(self, now_epoch: float) -> bool:
        return self.expires_at > now_epoch


class DaemonInfo(BaseModel):
    """One of the user's daemons as dispatch and the eval dialog see it."""

    model_config = ConfigDict(frozen=True)

    daemon_id: str
    name: str
    platform: str
    judges: list[JudgeCli]
    last_seen_at: str | None
    connected: bool = False


class DaemonView(BaseModel):
    """Response of POST /daemons and POST /daemons/{id}/heartbeat."""

    daemon_id: str
    name: str
    platform: str
    judges: list[JudgeCli]
    registered_at: str
    last_seen_at: str
    available_until: str
    heartbeat_interval_seconds: int = HEARTBEAT_INTERVAL_SECONDS
    presence_ttl_seconds: int = PRESENCE_TTL_SECONDS
    max_poll_wait_seconds: int = MAX_POLL_WAIT_SECONDS


class DaemonList(BaseModel):
    items: list[DaemonView]


class JobPollQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: Annotated[int, Field(ge=0, le=MAX_POLL_WAIT_SECONDS)] = DEFAULT_POLL_WAIT_SECONDS
    claim: bool = Field(default=True, description="false: only cancel notices (a daemon at capacity).")


class JobRecord(BaseModel):
    """The stored job: one per (daemon, run). A rerun overwrites it with the pending questions."""

    model_config = ConfigDict(extra="ignore")

    eval_run_id: str
    tenant: str
    daemon_id: str
    owner: str
    session_id: str
    questions: list[Question]
    threshold: int
    chain: bool
    model: str | None = None
    deadline_at: str
    created_at: str
    status: JobStatus = "offered"
    claimed_at: str | None = None
    attempt: int = 1
    cancel_requested: bool = False
    cancel_delivered_at: str | None = None
    question_started_at: dict[str, str] = Field(default_factory=dict)
    # The repository's judge facts for the prompts when the tenant gives them to judges (None: it does not).
    known_patterns: list[str] | None = None


class DaemonJob(BaseModel):
    """A job as the daemon receives it (poll response body, or pushed over the WebSocket)."""

    type: Literal["job"] = "job"
    eval_run_id: str
    session_id: str
    questions: list[Question] = Field(description="Catalog entries including the judge prompt.")
    threshold: int
    chain: bool
    model: str | None = Field(description="Model hint; null means the daemon's default judge model.")
    deadline_at: str
    attempt: int
    eval_context_path: str = Field(description="GET this (with the same bearer token) for the trace.")
    events_path: str
    result_path: str
    # Left out when the tenant does not give judges retained facts, so such jobs look as they always did.
    known_patterns: list[str] | None = Field(
        default=None, exclude_if=lambda value: value is None,
        description="The repository's retained judge facts for the shared prompt's known-patterns section.")


class CancelNotice(BaseModel):
    """Tells a daemon to stop a job it holds (poll response body, or pushed)."""

    type: Literal["cancel"] = "cancel"
    eval_run_id: str
    reason: str


class JobOfferNotice(BaseModel):
    """Pushed when a job is offered: the daemon claims it through the poll endpoint (one claim path)."""

    type: Literal["job_offer"] = "job_offer"
    eval_run_id: str
    daemon_id: str
    job: DaemonJob


def job_message(job: JobRecord) -> DaemonJob:
    from urllib.parse import quote

    sid = quote(job.session_id, safe="")
    return DaemonJob(
        eval_run_id=job.eval_run_id, session_id=job.session_id, questions=job.questions,
        threshold=job.threshold, chain=job.chain, model=job.model, deadline_at=job.deadline_at,
        attempt=job.attempt,
        eval_context_path=f"/sessions/{sid}/eval-context?threshold={job.threshold}"
                          f"&chain={'true' if job.chain else 'false'}",
        events_path=f"/eval-runs/{job.eval_run_id}/events",
        result_path=f"/eval-runs/{job.eval_run_id}/result", known_patterns=job.known_patterns)


class ConnectionRecord(BaseModel):
    """A WebSocket connection bound at $connect to one user's daemon."""

    model_config = ConfigDict(extra="ignore")

    connection_id: str
    tenant: str
    user: str
    daemon_id: str
    connected_at: str
    expires_at: int


class WsMessage(BaseModel):
    """A `$default` message from a daemon. `action` picks the handler (API Gateway's route selection
    expression is `$request.body.action`; Chalice routes every action to `$default`)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["heartbeat", "event", "result", "claim"]
    request_id: str | None = Field(default=None, max_length=128)
    eval_run_id: str | None = Field(default=None, max_length=128)
    event: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class EventAccepted(BaseModel):
    eval_run_id: str
    type: str
    status: str
    applied: bool = Field(description="False when the event was a repeat or a marker with no state change.")


class ResultAccepted(BaseModel):
    eval_run_id: str
    status: str
    overall_score: int
    corrections: list[str] = Field(
        description="What the service re-derived because the posted value disagreed with the scores.")


def failure_kind_for_reason(reason: str) -> str:
    """Classify a daemon's free-text question failure into a FailureKind.

    Our reference daemon prefixes reasons with the kind (`timeout: …`); other daemons send the
    original's texts (`null claude result | …`, `verdict JSON could not be parsed; …`).
    """
    from typing import get_args

    from chalicelib.domain.evaluation import FailureKind

    head, sep, _ = reason.partition(":")
    if sep and head.strip() in get_args(FailureKind):
        return head.strip()
    lowered = reason.lower()
    if "could not be parsed" in lowered or "verdict" in lowered or "json" in lowered:
        return "invalid_output"
    if "timed out" in lowered or "timeout" in lowered:
        return "timeout"
    if "cancel" in lowered:
        return "cancelled"
    return "internal"
