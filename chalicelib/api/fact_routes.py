"""Judge facts routes: a repository's retained facts (members) and deleting one (admins)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chalice import Response

from chalicelib.api.http import RequestContext, endpoint
from chalicelib.domain.judge_facts import FACT_ID_PATTERN, JudgeFactList, JudgeFactQuery

if TYPE_CHECKING:
    from chalicelib.services.judge_facts import JudgeFactService


_TAGS = ("judge facts",)
_FACT_ID_PARAM = {"fact_id": {"type": "string", "pattern": FACT_ID_PATTERN.pattern}}


def _service() -> JudgeFactService:
    from chalicelib.wiring import container

    return container().judge_facts


@endpoint("/judge-facts", "GET", query_model=JudgeFactQuery, response_model=JudgeFactList, tags=_TAGS,
          extra_responses={400: "No repository, or a bad limit or cursor"})
def list_judge_facts(ctx: RequestContext) -> JudgeFactList:
    """The facts judges retained about a repository (deduplicated), with the run and question that first did."""
    return _service().list_facts(ctx.principal, ctx.query(JudgeFactQuery))


@endpoint("/judge-facts/{fact_id}", "DELETE", auth="admin", path_params=_FACT_ID_PARAM, status=204,
          tags=_TAGS, extra_responses={403: "Not an admin of this tenant", 404: "No such fact in this tenant"})
def delete_judge_fact(ctx: RequestContext, fact_id: str) -> Response:
    """Delete a judge fact (it is no longer listed or given to judges)."""
    _service().delete_fact(ctx.principal, fact_id)
    return Response(body="", status_code=204)
