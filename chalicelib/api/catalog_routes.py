"""Admin-only routes of the tenant's judge catalog: read and save (versioned, If-Match), the audit,
old versions, and the editor's prompt preview and try-it run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.api.http import ApiResponse, RequestContext, endpoint
from chalicelib.domain.catalog import (
    MAX_CATALOG_BODY_BYTES,
    CatalogAuditPage,
    CatalogAuditQuery,
    CatalogUpdate,
    CatalogVersionView,
    CatalogView,
    parse_catalog_if_match,
)
from chalicelib.domain.errors import InvalidRequest
from chalicelib.services.catalog import PromptPreview, PromptPreviewRequest, QuestionTrialRequest
from chalicelib.services.eval_runs import EvalRunAccepted

if TYPE_CHECKING:
    from chalicelib.services.catalog import CatalogService


CATALOG_PATH = "/admin/eval-questions"
_TAGS = ("admin",)
_AUTH = {401: "Missing or invalid token", 403: "Not an admin of this tenant"}
_VERSION_PARAM = {"version": {"type": "string", "pattern": "^[0-9]{1,9}$"}}
# A draft question is at most ~6,000 characters (the models' caps): under 100 KB even fully JSON-escaped.
_MAX_EDITOR_BODY_BYTES = 256 * 1024


def _service() -> CatalogService:
    from chalicelib.wiring import container

    return container().catalog


def _with_etag(view: CatalogView) -> ApiResponse:
    return ApiResponse(view, headers={"ETag": f'"{view.version}"'})


@endpoint(CATALOG_PATH, "GET", auth="admin", response_model=CatalogView, tags=_TAGS,
          extra_responses=_AUTH)
def get_eval_questions_catalog(ctx: RequestContext) -> ApiResponse:
    """The tenant's judge catalog: the 13 built-ins (enabled or not) and its own questions, in order."""
    return _with_etag(_service().get_catalog(ctx.principal))


@endpoint(CATALOG_PATH, "PUT", auth="admin", request_model=CatalogUpdate, response_model=CatalogView,
          tags=_TAGS, extra_responses={**_AUTH, 400: "Invalid catalog (details.fields names each problem)",
                                       412: "If-Match names an older version", 413: "Body over 6 MB"})
def put_eval_questions_catalog(ctx: RequestContext) -> ApiResponse:
    """Save the whole catalog in order as a new version (list every built-in; only its `enabled` may change)."""
    update = ctx.body(CatalogUpdate, MAX_CATALOG_BODY_BYTES)
    if_match = parse_catalog_if_match(ctx.header("if-match"))
    return _with_etag(_service().update_catalog(ctx.principal, update, if_match))


@endpoint(CATALOG_PATH + "/audit", "GET", auth="admin", query_model=CatalogAuditQuery,
          response_model=CatalogAuditPage, tags=_TAGS, extra_responses=_AUTH)
def get_eval_questions_audit(ctx: RequestContext) -> CatalogAuditPage:
    """Catalog versions newest first: who saved each, when, and what changed."""
    return _service().list_catalog_audit(ctx.principal, ctx.query(CatalogAuditQuery).limit)


@endpoint(CATALOG_PATH + "/versions/{version}", "GET", auth="admin", path_params=_VERSION_PARAM,
          response_model=CatalogVersionView, tags=_TAGS,
          extra_responses={**_AUTH, 400: "Not a version number", 404: "No such version"})
def get_eval_questions_version(ctx: RequestContext, version: str) -> CatalogVersionView:
    """One saved catalog version exactly as runs that recorded it judge it."""
    if not version.isascii() or not version.isdigit() or len(version) > 9:
        raise InvalidRequest("The version is a whole number, e.g. /versions/3.", code="invalid_version")
    return _service().get_catalog_version(ctx.principal, int(version))


@endpoint(CATALOG_PATH + "/preview", "POST", auth="admin", request_model=PromptPreviewRequest,
          response_model=PromptPreview, tags=_TAGS,
          extra_responses={**_AUTH, 400: "Invalid question", 404: "No such question or session",
                           413: "Body over 256 KB", 422: "The prompt is too large to preview"})
def preview_eval_question(ctx: RequestContext) -> PromptPreview:
    """The exact prompt one judge call of a (draft or saved) question sends, optionally with a session's trace."""
    request = ctx.body(PromptPreviewRequest, _MAX_EDITOR_BODY_BYTES)
    return _service().preview_question(ctx.principal, request)


@endpoint(CATALOG_PATH + "/try", "POST", auth="admin", request_model=QuestionTrialRequest,
          response_model=EvalRunAccepted, status=202, tags=_TAGS,
          extra_responses={**_AUTH, 400: "Invalid question or options", 404: "No such question or session",
                           409: "No runner available", 413: "Body over 256 KB",
                           503: "The run could not be queued (it is marked failed); retry"})
def try_eval_question(ctx: RequestContext) -> ApiResponse:
    """Judge one question, saved or not, on a session: a one-question run (poll GET /eval-runs/{id})."""
    request = ctx.body(QuestionTrialRequest, _MAX_EDITOR_BODY_BYTES)
    accepted = _service().try_question(ctx.principal, request, idempotency_key=ctx.header("idempotency-key"))
    return ApiResponse(accepted, status=202, headers={"Location": f"/eval-runs/{accepted.eval_run_id}"})
