"""Daemon runner use cases: registration and presence, job offers and claims (long poll or WebSocket
push), cancel delivery, lazy deadlines, and the WebSocket `$connect`/`$default`/`$disconnect` handling.

`DaemonService` implements dispatch's `DaemonDirectory` port (`list_available`, `offer_job`,
`notify_cancel`). There is no scheduler: an unclaimed job past its deadline ends its run
`timed_out` lazily, whenever the daemon polls, whenever the user's runners are listed (the eval
dialog, every dispatch), and whenever anything is posted for the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from chalicelib.adapters.daemon_store import DynamoDaemonStore
from chalicelib.adapters.run_store import DynamoRunStore, RunStateConflict
from chalicelib.adapters.ws_push import PushOutcome, WebSocketPush
from chalicelib.domain.clock import Clock, iso, parse_iso
from chalicelib.domain.daemons import (
    CONNECTION_TTL_SECONDS,
    JOB_RETENTION_SECONDS,
    MAX_WS_MESSAGE_BYTES,
    PRESENCE_TTL_SECONDS,
    CancelNotice,
    ConnectionRecord,
    DaemonInfo,
    DaemonJob,
    DaemonList,
    DaemonRecord,
    DaemonRegistration,
    DaemonView,
    JobOfferNotice,
    JobRecord,
    WsMessage,
    job_message,
)
from chalicelib.domain.errors import Conflict, DomainError, InvalidRequest, NotFound
from chalicelib.domain.ids import new_id
from chalicelib.domain.json_depth import JsonTooDeep, json_too_deep_error, loads_bounded
from chalicelib.domain.principal import Principal
from chalicelib.domain.runs import EvalRun
from chalicelib.judges.catalog import Question
from chalicelib.observability import logger
from chalicelib.services.daemon_results import DaemonRunReporter, is_overdue, time_out_run

# Long-poll cadence: first re-check after 0.5 s, then backing off to one DynamoDB query per second.
POLL_FIRST_DELAY_SECONDS = 0.5
POLL_MAX_DELAY_SECONDS = 1.0
POLL_BACKOFF = 1.5
# Time kept back from the Lambda's remaining time so the 204 is written before the function dies.
POLL_SAFETY_MARGIN_SECONDS = 2.0

TokenAuthenticator = Callable[[str], Principal]


class RunQuestionSource(Protocol):
    """The questions a run judges, by id (`chalicelib.services.catalog.CatalogService`)."""

    def questions_for_run(self, run: EvalRun) -> Mapping[str, Question]: ...
RemainingMillis = Callable[[], int | None]


def _epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def _daemon_not_found(daemon_id: str) -> NotFound:
    return NotFound(f"No daemon '{daemon_id[:64]}' of yours is registered, or its presence expired; "
                    "register again with POST /daemons.", code="daemon_not_found")


def _view(d: DaemonRecord) -> DaemonView:
    return DaemonView(daemon_id=d.daemon_id, name=d.name, platform=d.platform, judges=d.judges,
                      registered_at=d.registered_at, last_seen_at=d.last_seen_at,
                      available_until=iso(datetime.fromtimestamp(d.expires_at, tz=UTC)))


class DaemonService:
    def __init__(self, *, store: DynamoDaemonStore, runs: DynamoRunStore, push: WebSocketPush, clock: Clock,
                 reporter: DaemonRunReporter, questions: RunQuestionSource,
                 authenticate_token: TokenAuthenticator | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 known_patterns: Callable[[str, str], list[str] | None] | None = None) -> None:
        self._store = store
        self._known_patterns = known_patterns
        self._runs = runs
        self._push = push
        self._clock = clock
        self._reporter = reporter
        self._authenticate_token = authenticate_token
        self._sleep = sleep
        self._questions = questions

    @property
    def reporter(self) -> DaemonRunReporter:
        return self._reporter

    # -- presence ------------------------------------------------------------------------------
    def register_daemon(self, principal: Principal, registration: DaemonRegistration) -> DaemonView:
        now = self._clock.now()
        record = DaemonRecord(daemon_id=new_id("dmn"), tenant=principal.tenant, user=principal.user,
                              name=registration.name, platform=registration.platform,
                              judges=registration.judges, version=registration.version,
                              concurrency=registration.concurrency, registered_at=iso(now), last_seen_at=iso(now),
                              expires_at=_epoch(now) + PRESENCE_TTL_SECONDS)
        self._store.put_daemon(record)
        logger.info("daemon registered", extra={"daemon_id": record.daemon_id, "judges": record.judges})
        return _view(record)

    def heartbeat(self, principal: Principal, daemon_id: str) -> DaemonView:
        now = self._clock.now()
        record = self._store.touch_daemon(principal.tenant, principal.user, daemon_id, now=iso(now),
                                          now_epoch=_epoch(now), expires_at=_epoch(now) + PRESENCE_TTL_SECONDS)
        if record is None:
            raise _daemon_not_found(daemon_id)
        return _view(record)

    def list_daemons(self, principal: Principal) -> DaemonList:
        """The caller's available daemons, most recent heartbeat first."""
        now = _epoch(self._clock.now())
        records = [r for r in self._store.list_daemons(principal.tenant, principal.user) if r.available(now)]
        records.sort(key=lambda r: r.last_seen_at, reverse=True)
        return DaemonList(items=[_view(r) for r in records])

    def list_available(self, tenant: str, user: str) -> list[DaemonInfo]:
        """DaemonDirectory: the user's daemons with a recent heartbeat, most recent first.

        Also the lazy deadline sweep: every job still offered or held by one of the user's
        daemons whose run is past its deadline ends `timed_out` here.
        """
        now = self._clock.now()
        records = self._store.list_daemons(tenant, user)
        for record in records:
            self._sweep_overdue(tenant, record.daemon_id, now)
        available = sorted((r for r in records if r.available(_epoch(now))), key=lambda r: r.last_seen_at,
                           reverse=True)
        # Without a push endpoint (the local stack) no connection can be used: skip the lookups.
        return [DaemonInfo(daemon_id=r.daemon_id, name=r.name, platform=r.platform, judges=r.judges,
                           last_seen_at=r.last_seen_at,
                           connected=self._push.enabled and bool(
                               self._store.daemon_connections(tenant, r.daemon_id, now_epoch=_epoch(now))))
                for r in available]

    def _sweep_overdue(self, tenant: str, daemon_id: str, now: datetime) -> None:
        for job in self._store.jobs_in_flight(tenant, daemon_id):
            if now >= parse_iso(job.deadline_at):
                self._expire_job(job, now)

    def _expire_job(self, job: JobRecord, now: datetime) -> None:
        run = self._runs.get(job.tenant, job.eval_run_id)
        if run is not None and run.daemon_id == job.daemon_id and is_overdue(run, now):
            message = (f"The daemon did not finish before the run's deadline ({run.deadline_at})."
                       if job.status == "claimed" else
                       f"No daemon picked up the job before the run's deadline ({run.deadline_at}); "
                       "check that your daemon is running and polling.")
            time_out_run(self._runs, self._reporter.lifecycle, run, now=now, message=message)
        self._store.end_job(job.tenant, job.daemon_id, job.eval_run_id, status="expired", now=iso(now),
                            expires_at=_epoch(now) + JOB_RETENTION_SECONDS)

    # -- jobs ----------------------------------------------------------------------------------
    def offer_job(self, run: EvalRun, daemon_id: str) -> None:
        """DaemonDirectory: store the run's job for the daemon, then push it if the daemon is connected."""
        now = self._clock.now()
        daemon = self._store.get_daemon(run.tenant, run.created_by, daemon_id, now_epoch=_epoch(now))
        if daemon is None:
            raise Conflict("The chosen daemon is no longer available; start your daemon and try again.",
                           code="no_daemon_available")
        # Everything without a full verdict: on a rerun that includes questions a failed attempt
        # scored by event only (the event carries no finding, so the result could not include them).
        # The job carries the questions themselves (a tenant question's text and rubric included), read
        # from the run's catalog version: the daemon never needs the catalog.
        known = self._questions.questions_for_run(run)
        questions = [known[q.question_id] for q in run.questions
                     if q.question_id in known and run.outcome(q.question_id).judge_verdict is None]
        previous = self._store.get_job(run.tenant, daemon_id, run.eval_run_id)
        # Read once per job, like the server runner reads them once per run: every question gets the same list.
        patterns = (self._known_patterns(run.tenant, run.session_id)
                    if self._known_patterns is not None and not run.trial_questions else None)
        job = JobRecord(eval_run_id=run.eval_run_id, tenant=run.tenant, daemon_id=daemon_id, owner=daemon.user,
                        session_id=run.session_id, questions=questions, threshold=run.threshold, chain=run.chain,
                        model=run.model, deadline_at=run.deadline_at, created_at=iso(now),
                        attempt=(previous.attempt + 1) if previous is not None else 1, known_patterns=patterns)
        self._store.put_job(job, expires_at=_epoch(parse_iso(run.deadline_at)) + JOB_RETENTION_SECONDS)
        pushed = self._push_to_daemon(run.tenant, daemon_id,
                                      JobOfferNotice(eval_run_id=run.eval_run_id, daemon_id=daemon_id,
                                                     job=job_message(job)).model_dump(mode="json"))
        logger.info("daemon job offered", extra={"eval_run_id": run.eval_run_id, "daemon_id": daemon_id,
                                                 "questions": len(questions), "pushed": pushed})

    def notify_cancel(self, run: EvalRun) -> None:
        """DaemonDirectory: flag the job; an unclaimed job can no longer be claimed, a held one is
        delivered as a cancel on the daemon's next poll and pushed right away when connected."""
        if run.daemon_id is None:
            return
        now = self._clock.now()
        job = self._store.request_cancel(run.tenant, run.daemon_id, run.eval_run_id, now=iso(now))
        if job is not None and job.status == "claimed":
            notice = CancelNotice(eval_run_id=run.eval_run_id, reason="cancelled by user")
            self._push_to_daemon(run.tenant, run.daemon_id, notice.model_dump(mode="json"))

    def poll_jobs(self, principal: Principal, daemon_id: str, *, wait: int, claim: bool = True,
                  remaining_millis: RemainingMillis | None = None) -> DaemonJob | CancelNotice | None:
        """Long poll: the next job (claimed by this call) or cancel for the daemon, else None after `wait` s.

        A poll is also a heartbeat. The wait is bounded by the Lambda's remaining time.
        """
        now = self._clock.now()
        if self._store.touch_daemon(principal.tenant, principal.user, daemon_id, now=iso(now),
                                    now_epoch=_epoch(now), expires_at=_epoch(now) + PRESENCE_TTL_SECONDS) is None:
            raise _daemon_not_found(daemon_id)
        budget = float(wait)
        remaining = remaining_millis() if remaining_millis is not None else None
        if remaining is not None:
            budget = min(budget, remaining / 1000 - POLL_SAFETY_MARGIN_SECONDS)
        stop_at = self._clock.monotonic() + max(budget, 0.0)
        delay = POLL_FIRST_DELAY_SECONDS
        while True:
            message = self._next_message(principal.tenant, daemon_id, claim=claim)
            if message is not None:
                return message
            left = stop_at - self._clock.monotonic()
            if left <= 0:
                return None
            self._sleep(min(delay, left))
            delay = min(delay * POLL_BACKOFF, POLL_MAX_DELAY_SECONDS)

    def _next_message(self, tenant: str, daemon_id: str, *, claim: bool) -> DaemonJob | CancelNotice | None:
        for job in self._store.jobs_needing_attention(tenant, daemon_id):
            now = self._clock.now()
            if job.status == "claimed":
                if self._store.mark_cancel_delivered(tenant, daemon_id, job.eval_run_id, now=iso(now)):
                    return CancelNotice(eval_run_id=job.eval_run_id, reason="cancelled by user")
                continue
            if now >= parse_iso(job.deadline_at):
                self._expire_job(job, now)
                continue
            if not claim:
                continue
            claimed = self._store.claim_job(tenant, daemon_id, job.eval_run_id, now=iso(now), attempt=job.attempt)
            if claimed is None:
                continue  # another poll claimed it a moment ago
            try:
                self._runs.start(tenant, job.eval_run_id, now=iso(now), outcomes=[])
            except (RunStateConflict, NotFound):
                # Cancelled (or otherwise ended) between the offer and this claim.
                self._store.end_job(tenant, daemon_id, job.eval_run_id, status="cancelled", now=iso(now),
                                    expires_at=_epoch(now) + JOB_RETENTION_SECONDS)
                continue
            logger.info("daemon job claimed", extra={"eval_run_id": job.eval_run_id, "daemon_id": daemon_id})
            return job_message(claimed)
        return None

    def reconcile_run(self, run: EvalRun) -> EvalRun:
        """For readers of a run: an overdue daemon run is ended `timed_out` before it is shown."""
        return self._reporter.reconcile(run)

    # -- push ----------------------------------------------------------------------------------
    def _push_to_daemon(self, tenant: str, daemon_id: str, message: dict[str, Any]) -> bool:
        if not self._push.enabled:
            return False
        sent = False
        for connection_id in self._store.daemon_connections(tenant, daemon_id, now_epoch=_epoch(self._clock.now())):
            sent = self._send(connection_id, message) or sent
        return sent

    def _send(self, connection_id: str, message: dict[str, Any]) -> bool:
        outcome = self._push.send(connection_id, message)
        if outcome is PushOutcome.GONE:
            # API Gateway no longer knows the connection ($disconnect was missed): forget it.
            self._store.delete_connection(connection_id)
            logger.info("stale websocket connection removed")
        return outcome is PushOutcome.SENT

    # -- WebSocket -----------------------------------------------------------------------------
    def ws_connect(self, *, token: str, daemon_id: str, connection_id: str) -> ConnectionRecord:
        """`$connect` has no authorizer: verify the token here and bind the connection to the daemon."""
        if self._authenticate_token is None:  # pragma: no cover - wiring always provides it
            raise RuntimeError("token authentication not configured")
        principal = self._authenticate_token(token)
        now = self._clock.now()
        if not daemon_id:
            raise InvalidRequest("Connect with ?daemon_id=<id> from POST /daemons.", code="missing_daemon_id")
        if self._store.touch_daemon(principal.tenant, principal.user, daemon_id, now=iso(now),
                                    now_epoch=_epoch(now), expires_at=_epoch(now) + PRESENCE_TTL_SECONDS) is None:
            raise _daemon_not_found(daemon_id)
        # The connection is authorised only as long as the token it connected with: every message and
        # push reads the item against this expiry, so an expired token stops both (reconnect to renew).
        expires_at = _epoch(now + timedelta(seconds=CONNECTION_TTL_SECONDS))
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        conn = ConnectionRecord(connection_id=connection_id, tenant=principal.tenant, user=principal.user,
                                daemon_id=daemon_id, connected_at=iso(now), expires_at=expires_at)
        self._store.put_connection(conn)
        logger.info("daemon websocket connected", extra={"daemon_id": daemon_id})
        return conn

    def ws_disconnect(self, connection_id: str) -> None:
        self._store.delete_connection(connection_id)

    def ws_message(self, connection_id: str, body: str | None) -> dict[str, Any]:
        """`$default`: heartbeat / event / result / claim with the same validation as HTTPS. The reply
        (an ack, the claimed job, or an error body) is pushed back to the connection and returned."""
        reply = self._handle_ws_message(connection_id, body)
        if self._push.enabled:
            self._send(connection_id, reply)
        return reply

    def _handle_ws_message(self, connection_id: str, body: str | None) -> dict[str, Any]:
        request_id: str | None = None
        try:
            conn = self._store.get_connection(connection_id, now_epoch=_epoch(self._clock.now()))
            if conn is None:
                raise NotFound("This WebSocket connection is not registered, or the token it connected with has "
                               "expired; reconnect with a fresh token.", code="connection_not_found")
            raw = body or ""
            if len(raw.encode()) > MAX_WS_MESSAGE_BYTES:
                raise InvalidRequest(f"Messages are limited to {MAX_WS_MESSAGE_BYTES} bytes; post large results "
                                     "over HTTPS.", code="message_too_large")
            try:
                data = loads_bounded(raw)
            except JsonTooDeep:
                raise json_too_deep_error() from None
            except ValueError:
                raise InvalidRequest("The message is not valid JSON.", code="malformed_json") from None
            if isinstance(data, dict) and isinstance(data.get("request_id"), str):
                request_id = data["request_id"][:128]
            msg = WsMessage.model_validate(data)
            principal = Principal(tenant=conn.tenant, user=conn.user)
            return {"request_id": request_id, **self._dispatch_ws(principal, conn, msg)}
        except ValidationError as exc:
            fields = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"], "type": e["type"]}
                      for e in exc.errors(include_url=False, include_input=False)]
            return {"type": "error", "request_id": request_id,
                    "error": {"code": "validation_failed", "message": "The message is invalid.",
                              "details": {"fields": fields}}}
        except DomainError as exc:
            return {"type": "error", "request_id": request_id,
                    "error": {"code": exc.code, "message": exc.message, "details": exc.details}}

    def _dispatch_ws(self, principal: Principal, conn: ConnectionRecord, msg: WsMessage) -> dict[str, Any]:
        if msg.action == "heartbeat":
            view = self.heartbeat(principal, conn.daemon_id)
            return {"type": "heartbeat_ack", "available_until": view.available_until}
        if msg.action == "claim":
            found = self.poll_jobs(principal, conn.daemon_id, wait=0)
            return found.model_dump(mode="json") if found is not None else {"type": "no_job"}
        if msg.action == "event":
            event = msg.event or {}
            run_id = str(event.get("eval_run_id") or msg.eval_run_id or "")
            accepted = self._reporter.post_event(principal, run_id, event)
            return {"type": "event_ack", "eval_run_id": accepted.eval_run_id, "event_type": accepted.type,
                    "status": accepted.status, "applied": accepted.applied}
        run_id = msg.eval_run_id or ""
        result = self._reporter.post_result(principal, run_id, msg.result or {})
        return {"type": "result_ack", **result.model_dump(mode="json")}
