"""Admin-only routes: the tenant's Eval runner settings (vendors, keys, run timeout, learned context limits)
and their audit. The connection test has its own module (`connection_test_routes`): it loads the judges."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.api.http import ApiResponse, RequestContext, endpoint
from chalicelib.domain.settings import (
    MAX_SETTINGS_BODY_BYTES,
    VENDORS,
    AuditQuery,
    ContextLimitQuery,
    ContextLimitsCleared,
    EvalRunnerSettingsUpdate,
    EvalRunnerSettingsView,
    SettingsAuditPage,
    parse_if_match,
    parse_vendor,
)

if TYPE_CHECKING:
    from chalicelib.services.admin_settings import AdminSettingsService


SETTINGS_PATH = "/admin/settings/eval-runner"
TAGS = ("admin",)
VENDOR_PARAM = {"vendor": {"type": "string", "enum": list(VENDORS)}}
ERRORS = {400: "Invalid settings (details.fields names each field)", 401: "Missing or invalid token",
           403: "Not an admin of this tenant"}


def _settings() -> AdminSettingsService:
    from chalicelib.wiring import container

    return container().admin_settings


def _with_etag(view: EvalRunnerSettingsView) -> ApiResponse:
    return ApiResponse(view, headers={"ETag": f'"{view.version}"'})


@endpoint(SETTINGS_PATH, "GET", auth="admin", response_model=EvalRunnerSettingsView, tags=TAGS,
          extra_responses={401: ERRORS[401], 403: ERRORS[403]})
def get_eval_runner_settings(ctx: RequestContext) -> ApiResponse:
    """The masked Eval runner settings (keys appear as last-4 hints only)."""
    return _with_etag(_settings().get_eval_runner_settings(ctx.principal))


@endpoint(SETTINGS_PATH, "PUT", auth="admin", request_model=EvalRunnerSettingsUpdate,
          response_model=EvalRunnerSettingsView, tags=TAGS,
          extra_responses={**ERRORS, 412: "If-Match names an older version", 413: "Body over 64 KB"})
def put_eval_runner_settings(ctx: RequestContext) -> ApiResponse:
    """Update any subset of the settings; a new api_key rotates the stored key."""
    update = ctx.body(EvalRunnerSettingsUpdate, MAX_SETTINGS_BODY_BYTES)
    if_match = parse_if_match(ctx.header("if-match"))
    return _with_etag(_settings().update_eval_runner_settings(ctx.principal, update, if_match))


@endpoint(SETTINGS_PATH + "/vendors/{vendor}", "DELETE", path_params=VENDOR_PARAM, auth="admin",
          response_model=EvalRunnerSettingsView, tags=TAGS,
          extra_responses={**ERRORS, 404: "Unknown vendor", 412: "If-Match names an older version"})
def delete_eval_runner_vendor(ctx: RequestContext, vendor: str) -> ApiResponse:
    """Remove a vendor's key (the secret is deleted) and its block."""
    if_match = parse_if_match(ctx.header("if-match"))
    return _with_etag(_settings().remove_vendor(ctx.principal, parse_vendor(vendor), if_match))


@endpoint(SETTINGS_PATH + "/vendors/{vendor}/context-limits", "DELETE", path_params=VENDOR_PARAM,
          auth="admin", query_model=ContextLimitQuery, response_model=ContextLimitsCleared, tags=TAGS,
          extra_responses={400: "Invalid model name", 401: ERRORS[401], 403: ERRORS[403], 404: "Unknown vendor"})
def delete_learned_context_limits(ctx: RequestContext, vendor: str) -> ContextLimitsCleared:
    """Clear the context limits the vendor stated (all, or one model's with ?model=); runs fit to the model table."""
    return _settings().forget_context_limits(ctx.principal, parse_vendor(vendor), ctx.query(ContextLimitQuery).model)


@endpoint(SETTINGS_PATH + "/audit", "GET", auth="admin", query_model=AuditQuery,
          response_model=SettingsAuditPage, tags=TAGS, extra_responses={401: ERRORS[401], 403: ERRORS[403]})
def get_eval_runner_settings_audit(ctx: RequestContext) -> SettingsAuditPage:
    """Settings changes, newest first (key changes as hints only)."""
    return _settings().list_settings_audit(ctx.principal, ctx.query(AuditQuery).limit)
