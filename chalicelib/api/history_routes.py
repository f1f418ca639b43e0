"""History routes for tenant members: the run list, score analytics, verdict export, compare, and
deleting sessions and runs (plus the admins' deletion audit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalice import Response
from pydantic import BaseModel, ConfigDict, Field

from chalicelib.api.http import ApiResponse, RequestContext, endpoint
from chalicelib.api.params import SESSION_ID_PARAM
from chalicelib.domain.analytics import ScoreAnalytics, ScoresQuery
from chalicelib.domain.deletion import DeletionAuditPage
from chalicelib.domain.export import ExportQuery
from chalicelib.domain.history import EvalRunPage, RunListQuery
from chalicelib.domain.run_compare import RunComparison

if TYPE_CHECKING:
    from chalicelib.wiring import Container


_TAGS = ("history",)


def _container() -> Container:
    from chalicelib.wiring import container

    return container()


class CompareQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: str = Field(min_length=1, max_length=64, description="The first run (the baseline)")
    b: str = Field(min_length=1, max_length=64, description="The second run; deltas are b - a")


class DeletionAuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=200)


class ExportLink(BaseModel):
    """An export too large for a response (or asked for with delivery=link): download it from S3."""

    download_url: str = Field(description="Presigned S3 GET, valid until expires_at")
    expires_at: str
    format: str
    filename: str
    rows: int
    bytes: int


@endpoint("/eval-runs", "GET", query_model=RunListQuery, response_model=EvalRunPage, tags=_TAGS,
          summary="The tenant's eval runs, newest first, filtered; follow next_cursor until null")
def list_eval_runs(ctx: RequestContext) -> EvalRunPage:
    return _container().run_history.list_runs(ctx.principal, ctx.query(RunListQuery))


@endpoint("/eval-runs/compare", "GET", query_model=CompareQuery, response_model=RunComparison,
          tags=_TAGS, extra_responses={404: "Either run is not in this tenant"},
          summary="Per-question and per-category score deltas (b - a) and the verdicts that changed")
def compare_eval_runs(ctx: RequestContext) -> RunComparison:
    query = ctx.query(CompareQuery)
    return _container().run_history.compare(ctx.principal, query.a, query.b)


@endpoint("/eval-runs/export", "GET", query_model=ExportQuery, response_model=ExportLink, tags=_TAGS,
          response_content_types=("text/csv", "application/jsonl", "application/json"),
          extra_responses={303: "Too large for a response: Location is a presigned S3 link (body: ExportLink)"},
          summary="One row per question verdict (CSV or JSON Lines) of the runs the list filters select")
def export_eval_runs(ctx: RequestContext) -> Response | ApiResponse:
    query = ctx.query(ExportQuery)
    outcome = _container().run_exports.export(ctx.principal, query)
    if outcome.body is not None:
        return Response(body=outcome.body, status_code=200, headers={
            "Content-Type": outcome.content_type, "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{outcome.filename}"',
            "X-Export-Rows": str(outcome.rows)})
    link = ExportLink(download_url=outcome.url or "", expires_at=outcome.expires_at or "", format=outcome.format,
                      filename=outcome.filename, rows=outcome.rows, bytes=outcome.bytes)
    if query.delivery == "link":
        return ApiResponse(link)
    return ApiResponse(link, status=303, headers={"Location": link.download_url})


@endpoint("/analytics/scores", "GET", query_model=ScoresQuery, response_model=ScoreAnalytics,
          tags=_TAGS,
          summary="Mean score and pass/warn/fail per category, question, repository or user, by day or week")
def score_analytics(ctx: RequestContext) -> ScoreAnalytics:
    return _container().score_analytics.scores(ctx.principal, ctx.query(ScoresQuery))


@endpoint("/eval-runs/{eval_run_id}", "DELETE", status=204, tags=_TAGS,
          extra_responses={403: "Only the run's creator or a tenant admin", 409: "The run is still active"},
          summary="Delete a finished eval run, its verdicts and its contribution to the aggregates")
def delete_eval_run(ctx: RequestContext, eval_run_id: str) -> Response:
    _container().deletions.delete_run(ctx.principal, eval_run_id)
    return Response(body="", status_code=204, headers={"Cache-Control": "no-store"})


@endpoint("/sessions/{session_id}", "DELETE", status=204, path_params=SESSION_ID_PARAM, tags=_TAGS,
          extra_responses={403: "Only the session's uploader or a tenant admin (not_session_owner)",
                           409: "The session has active runs; cancel them first"},
          summary="Delete a session: its trace, metadata, runs, verdicts and their aggregate contributions")
def delete_session(ctx: RequestContext, session_id: str) -> Response:
    _container().deletions.delete_session(ctx.principal, session_id)
    return Response(body="", status_code=204, headers={"Cache-Control": "no-store"})


@endpoint("/admin/audit/deletions", "GET", auth="admin", query_model=DeletionAuditQuery,
          response_model=DeletionAuditPage, tags=_TAGS,
          summary="Who deleted which sessions and runs, and when (ids only), newest first")
def list_deletions(ctx: RequestContext) -> DeletionAuditPage:
    return _container().deletions.deletions(ctx.principal, limit=ctx.query(DeletionAuditQuery).limit)
