"""Evaluation routes for dashboard users: question catalog, runner dialog, dispatch, read, cancel, rerun."""

from __future__ import annotations

from chalicelib.api.http import ApiResponse, RequestContext, endpoint
from chalicelib.api.params import SESSION_ID_PARAM
from chalicelib.domain.catalog import QuestionCatalog
from chalicelib.domain.runs import EvalRunList, EvalRunView
from chalicelib.services.eval_runners import EvalRunnersView, EvalRunRequest
from chalicelib.services.eval_runs import EvalRunAccepted, EvalRunService, RunListQuery

_TAGS = ("evaluations",)
# Dispatch bodies are a handful of fields; anything larger is not an EvalRunRequest.
_MAX_REQUEST_BYTES = 16 * 1024


def _service() -> EvalRunService:
    from chalicelib.wiring import container

    service: EvalRunService = container().eval_runs
    return service


@endpoint("/eval/questions", "GET", response_model=QuestionCatalog, tags=_TAGS,
          summary="The tenant's enabled judge questions (built-in and its own), in catalog order")
def list_eval_questions(ctx: RequestContext) -> QuestionCatalog:
    return _service().questions(ctx.principal)


@endpoint("/eval/runners", "GET", response_model=EvalRunnersView, tags=_TAGS,
          summary="What the eval dialog offers this user: server vendors, daemons, run button routes")
def get_eval_runners(ctx: RequestContext) -> EvalRunnersView:
    return _service().runners(ctx.principal)


@endpoint("/sessions/{session_id}/eval-runs", "POST", path_params=SESSION_ID_PARAM,
          request_model=EvalRunRequest,
          response_model=EvalRunAccepted, status=202, tags=_TAGS,
          extra_responses={402: "budget_exceeded: the run's upper bound does not fit a budget (details: which, "
                                "what is left, what was needed); nothing was queued",
                           404: "No such session in this tenant",
                           409: "The chosen vendor/runner is not available",
                           429: "too_many_active_runs (Retry-After): the user's or tenant's active-run quota is "
                                "full; nothing was queued",
                           503: "The run could not be queued (it is marked failed), or the spend ledger is "
                                "unavailable (nothing stored); retry"},
          summary="Dispatch an evaluation of a session (optional Idempotency-Key header)")
def dispatch_eval_run(ctx: RequestContext, session_id: str) -> ApiResponse:
    request = ctx.body(EvalRunRequest, _MAX_REQUEST_BYTES, allow_empty=True)
    accepted = _service().dispatch_eval_run(ctx.principal, session_id, request,
                                            idempotency_key=ctx.header("idempotency-key"))
    return ApiResponse(accepted, status=202, headers={"Location": f"/eval-runs/{accepted.eval_run_id}"})


@endpoint("/sessions/{session_id}/eval-runs", "GET", path_params=SESSION_ID_PARAM, query_model=RunListQuery,
          response_model=EvalRunList, tags=_TAGS, summary="A session's eval runs, newest first")
def list_session_eval_runs(ctx: RequestContext, session_id: str) -> EvalRunList:
    query = ctx.query(RunListQuery)
    return _service().list_session_runs(ctx.principal, session_id, limit=query.limit, cursor=query.cursor)


@endpoint("/eval-runs/{eval_run_id}", "GET", response_model=EvalRunView, tags=_TAGS,
          extra_responses={404: "No such eval run in this tenant"},
          summary="An eval run: status, per-question progress, result, usage")
def get_eval_run(ctx: RequestContext, eval_run_id: str) -> EvalRunView:
    return _service().get_eval_run(ctx.principal, eval_run_id)


@endpoint("/eval-runs/{eval_run_id}/cancel", "POST", response_model=EvalRunView, tags=_TAGS,
          extra_responses={403: "Only the run's creator or a tenant admin", 409: "The run already ended"},
          summary="Cancel a queued or running eval run")
def cancel_eval_run(ctx: RequestContext, eval_run_id: str) -> EvalRunView:
    return _service().cancel_eval_run(ctx.principal, eval_run_id)


@endpoint("/eval-runs/{eval_run_id}/rerun", "POST", response_model=EvalRunView, status=202,
          tags=_TAGS, extra_responses={402: "budget_exceeded: the rerun's upper bound does not fit a budget",
                                       403: "Only the run's creator or a tenant admin",
                                       409: "Not failed/timed out/cancelled, or nothing to rerun",
                                       429: "too_many_active_runs (Retry-After): the active-run quota is full",
                                       503: "The spend ledger is unavailable; retry"},
          summary="Re-judge the failed or missing questions of a finished run, in the same run")
def rerun_eval_run(ctx: RequestContext, eval_run_id: str) -> ApiResponse:
    view = _service().rerun_eval_run(ctx.principal, eval_run_id)
    return ApiResponse(view, status=202)
