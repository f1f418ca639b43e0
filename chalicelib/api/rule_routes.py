"""Admin routes of online evaluation rules: list, create, read, replace (If-Match), delete."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from chalicelib.api.http import ApiResponse, RequestContext, endpoint
from chalicelib.domain.automation import RULE_BODY_MAX_BYTES, EvalRuleInput, EvalRuleList, EvalRuleView
from chalicelib.domain.settings import parse_if_match

if TYPE_CHECKING:
    from chalicelib.services.eval_rules import EvalRuleService


RULES_PATH = "/admin/eval-rules"
_TAGS = ("admin",)
_AUTH = {401: "Missing or invalid token", 403: "Not an admin of this tenant"}
_INVALID = {400: "Invalid rule: bad glob, sample_rate outside 0..1, unknown question or vendor (details.fields)"}
_RULE_PARAM = {"rule_id": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"}}


class RuleDeleted(BaseModel):
    rule_id: str
    deleted: bool


def _service() -> EvalRuleService:
    from chalicelib.wiring import container

    return container().eval_rules


def _with_etag(view: EvalRuleView, status: int = 200) -> ApiResponse:
    return ApiResponse(view, status=status, headers={"ETag": f'"{view.version}"'})


@endpoint(RULES_PATH, "GET", auth="admin", response_model=EvalRuleList, tags=_TAGS, extra_responses=_AUTH)
def list_eval_rules(ctx: RequestContext) -> EvalRuleList:
    """The tenant's online evaluation rules with what each did (matches, runs, skipped by reason)."""
    return _service().list_rules(ctx.principal)


@endpoint(RULES_PATH, "POST", auth="admin", request_model=EvalRuleInput, response_model=EvalRuleView,
          status=201, tags=_TAGS, extra_responses={**_AUTH, **_INVALID, 409: "The tenant has the most rules it may"})
def create_eval_rule(ctx: RequestContext) -> ApiResponse:
    """Create a rule that judges new sessions matching its filter, sampled deterministically."""
    view = _service().create_rule(ctx.principal, ctx.body(EvalRuleInput, RULE_BODY_MAX_BYTES))
    return _with_etag(view, status=201)


@endpoint(RULES_PATH + "/{rule_id}", "GET", auth="admin", path_params=_RULE_PARAM,
          response_model=EvalRuleView, tags=_TAGS, extra_responses={**_AUTH, 404: "No such rule"})
def get_eval_rule(ctx: RequestContext, rule_id: str) -> ApiResponse:
    """One rule, its last matches and how many runs it skipped, and why."""
    return _with_etag(_service().get_rule(ctx.principal, rule_id))


@endpoint(RULES_PATH + "/{rule_id}", "PUT", auth="admin", path_params=_RULE_PARAM,
          request_model=EvalRuleInput, response_model=EvalRuleView, tags=_TAGS,
          extra_responses={**_AUTH, **_INVALID, 404: "No such rule", 412: "If-Match names an older version"})
def put_eval_rule(ctx: RequestContext, rule_id: str) -> ApiResponse:
    """Replace a rule (the whole rule; optional If-Match: its version)."""
    body = ctx.body(EvalRuleInput, RULE_BODY_MAX_BYTES)
    view = _service().replace_rule(ctx.principal, rule_id, body, parse_if_match(ctx.header("if-match")))
    return _with_etag(view)


@endpoint(RULES_PATH + "/{rule_id}", "DELETE", auth="admin", path_params=_RULE_PARAM,
          response_model=RuleDeleted, tags=_TAGS, extra_responses={**_AUTH, 404: "No such rule"})
def delete_eval_rule(ctx: RequestContext, rule_id: str) -> RuleDeleted:
    """Delete a rule (runs it created stay)."""
    return RuleDeleted.model_validate(_service().delete_rule(ctx.principal, rule_id))
