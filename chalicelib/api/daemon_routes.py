"""Daemon routes: registration, heartbeat, job long poll, and the daemon's progress events and result posts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from chalice import Response
from pydantic import Field

from chalicelib.api.http import ApiResponse, BodySchema, RequestContext, endpoint
from chalicelib.domain.daemons import (
    MAX_EVENT_BYTES,
    MAX_RESULT_BYTES,
    CancelNotice,
    DaemonJob,
    DaemonList,
    DaemonRegistration,
    DaemonView,
    EventAccepted,
    JobPollQuery,
    ResultAccepted,
)
from chalicelib.domain.evaluation import EvalProgressEvent, SessionEvalCompleted

if TYPE_CHECKING:
    from chalicelib.services.daemons import DaemonService


_TAGS = ("daemons",)
_SMALL_BODY_BYTES = 4 * 1024
# Documented with the models the reporter validates them with (parse_progress_event, SessionEvalCompleted).
_EVENT_BODY = BodySchema("EvalProgressEvent", EvalProgressEvent)
_POLL_BODY = BodySchema("DaemonPollMessage", Annotated[DaemonJob | CancelNotice, Field(discriminator="type")])
_OWNER_ERRORS = {403: "Your daemon does not hold this run's job", 404: "No such eval run in this tenant",
                 409: "The run already ended, timed out, or its job is not claimed", 413: "Body too large"}


def _service() -> DaemonService:
    from chalicelib.wiring import container

    service: DaemonService = container().daemon_service
    return service


@endpoint("/daemons", "POST", request_model=DaemonRegistration, response_model=DaemonView, status=201,
          tags=_TAGS, summary="Register a daemon for the calling user (it is available while it heartbeats)")
def register_daemon(ctx: RequestContext) -> ApiResponse:
    registration = ctx.body(DaemonRegistration, _SMALL_BODY_BYTES)
    view = _service().register_daemon(ctx.principal, registration)
    return ApiResponse(view, status=201, headers={"Location": f"/daemons/{view.daemon_id}"})


@endpoint("/daemons", "GET", response_model=DaemonList, tags=_TAGS,
          summary="Your available daemons, most recent heartbeat first")
def list_daemons(ctx: RequestContext) -> DaemonList:
    return _service().list_daemons(ctx.principal)


@endpoint("/daemons/{daemon_id}/heartbeat", "POST", response_model=DaemonView, tags=_TAGS,
          extra_responses={404: "Not your daemon, or its presence expired (register again)"},
          summary="Refresh the daemon's presence (every 20 s; it expires 90 s after the last one)")
def daemon_heartbeat(ctx: RequestContext, daemon_id: str) -> DaemonView:
    ctx.raw_body(_SMALL_BODY_BYTES)  # any small body is accepted and ignored
    return _service().heartbeat(ctx.principal, daemon_id)


@endpoint("/daemons/{daemon_id}/jobs", "GET", query_model=JobPollQuery, response_model=_POLL_BODY,
          tags=_TAGS,
          extra_responses={204: "Nothing within the wait", 404: "Not your daemon, or its presence expired"},
          summary="Long poll (wait ≤ 25 s): 200 with a job claimed by this call or a cancel notice, else 204")
def poll_daemon_jobs(ctx: RequestContext, daemon_id: str) -> Response | ApiResponse:
    query = ctx.query(JobPollQuery)
    found = _service().poll_jobs(ctx.principal, daemon_id, wait=query.wait, claim=query.claim,
                                 remaining_millis=ctx.remaining_millis)
    if found is None:
        return Response(body="", status_code=204, headers={"Cache-Control": "no-store"})
    return ApiResponse(found)


@endpoint("/eval-runs/{eval_run_id}/events", "POST", request_model=_EVENT_BODY,
          response_model=EventAccepted, tags=_TAGS,
          extra_responses={400: "Not one of the nine events, or it does not match the run", **_OWNER_ERRORS},
          summary="One progress event from the daemon running this eval run")
def post_eval_run_event(ctx: RequestContext, eval_run_id: str) -> EventAccepted:
    data = ctx.json_object(MAX_EVENT_BYTES)
    return _service().reporter.post_event(ctx.principal, eval_run_id, data)


@endpoint("/eval-runs/{eval_run_id}/result", "POST", request_model=SessionEvalCompleted,
          response_model=ResultAccepted, tags=_TAGS,
          extra_responses={400: "Not a valid SessionEvalCompleted for this run", **_OWNER_ERRORS},
          summary="The daemon's SessionEvalCompleted; scores are re-derived and the run succeeds")
def post_eval_run_result(ctx: RequestContext, eval_run_id: str) -> ResultAccepted:
    data = ctx.json_object(MAX_RESULT_BYTES)
    return _service().reporter.post_result(ctx.principal, eval_run_id, data)
