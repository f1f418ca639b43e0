"""Spend routes: limits and prices (admin, If-Match), the eval estimate, and usage (own row for members)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalicelib.api.http import ApiResponse, RequestContext, endpoint
from chalicelib.api.params import SESSION_ID_PARAM
from chalicelib.domain.settings import parse_if_match
from chalicelib.domain.spend import SpendLimitsUpdate
from chalicelib.services.eval_runners import EvalRunRequest
from chalicelib.services.spend_admin import (
    PricesUpdate,
    PricesView,
    SpendLimitsView,
    UsageQuery,
    UsageReport,
)
from chalicelib.services.spend_admission import EvalRunEstimate

if TYPE_CHECKING:
    from chalicelib.services.eval_runs import EvalRunService
    from chalicelib.services.spend_admin import SpendAdminService

LIMITS_PATH = "/admin/settings/eval-runner/limits"
PRICES_PATH = "/admin/settings/eval-runner/prices"
_ADMIN_TAGS = ("admin",)
_MAX_BODY_BYTES = 64 * 1024
_ERRORS = {400: "Invalid values (details.fields names each field); nothing was stored",
           401: "Missing or invalid token", 403: "Not an admin of this tenant"}


def _admin() -> SpendAdminService:
    from chalicelib.wiring import container

    return container().spend_admin


def _runs() -> EvalRunService:
    from chalicelib.wiring import container

    return container().eval_runs


@endpoint(LIMITS_PATH, "GET", auth="admin", response_model=SpendLimitsView, tags=_ADMIN_TAGS,
          extra_responses={401: _ERRORS[401], 403: _ERRORS[403]})
def get_spend_limits(ctx: RequestContext) -> ApiResponse:
    """The tenant's budgets, active-run quotas, alert threshold and retention (null = no cap)."""
    view = _admin().get_limits(ctx.principal)
    return ApiResponse(view, headers={"ETag": f'"{view.version}"'})


@endpoint(LIMITS_PATH, "PUT", auth="admin", request_model=SpendLimitsUpdate, response_model=SpendLimitsView,
          tags=_ADMIN_TAGS, extra_responses={**_ERRORS, 412: "If-Match names an older version"})
def put_spend_limits(ctx: RequestContext) -> ApiResponse:
    """Change any subset of the limits; an explicit null removes a budget cap or the retention."""
    update = ctx.body(SpendLimitsUpdate, _MAX_BODY_BYTES)
    view = _admin().update_limits(ctx.principal, update, parse_if_match(ctx.header("if-match")))
    return ApiResponse(view, headers={"ETag": f'"{view.version}"'})


@endpoint(PRICES_PATH, "GET", auth="admin", response_model=PricesView, tags=_ADMIN_TAGS,
          extra_responses={401: _ERRORS[401], 403: _ERRORS[403]})
def get_model_prices(ctx: RequestContext) -> ApiResponse:
    """Judge model prices per million tokens: the shipped defaults with the admin's overrides on top."""
    view = _admin().get_prices(ctx.principal)
    return ApiResponse(view, headers={"ETag": f'"{view.version}"'})


@endpoint(PRICES_PATH, "PUT", auth="admin", request_model=PricesUpdate, response_model=PricesView,
          tags=_ADMIN_TAGS, extra_responses={**_ERRORS, 412: "If-Match names an older version"})
def put_model_prices(ctx: RequestContext) -> ApiResponse:
    """Replace the admin's price overrides (a model left out goes back to its shipped default)."""
    update = ctx.body(PricesUpdate, _MAX_BODY_BYTES)
    view = _admin().update_prices(ctx.principal, update, parse_if_match(ctx.header("if-match")))
    return ApiResponse(view, headers={"ETag": f'"{view.version}"'})


@endpoint("/sessions/{session_id}/eval-runs/estimate", "POST", path_params=SESSION_ID_PARAM,
          request_model=EvalRunRequest, response_model=EvalRunEstimate, tags=("evaluations",),
          extra_responses={404: "No such session in this tenant", 409: "The chosen vendor/runner is not available",
                           422: "The session cannot fit the judge model's context window"},
          summary="What an evaluation of this session would cost, and whether the limits allow it now")
def estimate_eval_run(ctx: RequestContext, session_id: str) -> EvalRunEstimate:
    request = ctx.body(EvalRunRequest, 16 * 1024, allow_empty=True)
    return _runs().estimate_eval_run(ctx.principal, session_id, request)


@endpoint("/usage", "GET", query_model=UsageQuery, response_model=UsageReport, tags=("usage",),
          extra_responses={400: "Invalid range or grouping"},
          summary="Runs, tokens and USD by user, day, vendor or model (members: their own usage only)")
def get_usage(ctx: RequestContext) -> UsageReport:
    return _admin().usage(ctx.principal, ctx.query(UsageQuery))
