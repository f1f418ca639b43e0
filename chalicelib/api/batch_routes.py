"""Bulk evaluation routes: start an eval batch over many sessions, follow it, cancel it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.api.http import ApiResponse, RequestContext, endpoint
from chalicelib.domain.eval_batches import (
    BATCH_BODY_MAX_BYTES,
    MAX_BATCH_RUNS,
    BatchAccepted,
    BatchEstimate,
    EvalBatchList,
    EvalBatchRequest,
    EvalBatchView,
)

if TYPE_CHECKING:
    from chalicelib.services.eval_batches import EvalBatchService


_TAGS = ("evaluations",)
_BATCH_PARAM = {"batch_id": {"type": "string", "pattern": "^ebt_[0-9A-Z]{26}$"}}


class BatchListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100)


def _service() -> EvalBatchService:
    from chalicelib.wiring import container

    return container().eval_batches


@endpoint("/eval-batches", "POST", request_model=EvalBatchRequest, response_model=BatchAccepted,
          status=202, tags=_TAGS,
          extra_responses={400: f"Invalid request, no session matched, or more than {MAX_BATCH_RUNS} would be "
                                "created (batch_too_large: details.would_create)",
                           404: "A named session does not exist", 409: "The chosen vendor is not available"},
          summary="Evaluate many sessions: explicit session_ids or a filter, in mode now or batch "
                  "(optional Idempotency-Key header)")
def create_eval_batch(ctx: RequestContext) -> ApiResponse:
    request = ctx.body(EvalBatchRequest, BATCH_BODY_MAX_BYTES)
    accepted = _service().create_batch(ctx.principal, request, idempotency_key=ctx.header("idempotency-key"))
    return ApiResponse(accepted, status=202, headers={"Location": f"/eval-batches/{accepted.batch_id}"})


@endpoint("/eval-batches/estimate", "POST", request_model=EvalBatchRequest, response_model=BatchEstimate,
          tags=_TAGS,
          extra_responses={400: f"Invalid request, no session matched, or more than {MAX_BATCH_RUNS} would be "
                                "created (batch_too_large: details.would_create)",
                           404: "A named session does not exist", 409: "The chosen vendor is not available"},
          summary="What POST /eval-batches with this body would create and cost at most; nothing is stored")
def estimate_eval_batch(ctx: RequestContext) -> BatchEstimate:
    return _service().estimate_batch(ctx.principal, ctx.body(EvalBatchRequest, BATCH_BODY_MAX_BYTES))


@endpoint("/eval-batches", "GET", query_model=BatchListQuery, response_model=EvalBatchList, tags=_TAGS,
          summary="The tenant's eval batches, newest first")
def list_eval_batches(ctx: RequestContext) -> EvalBatchList:
    return _service().list_batches(ctx.principal, limit=ctx.query(BatchListQuery).limit)


@endpoint("/eval-batches/{batch_id}", "GET", path_params=_BATCH_PARAM, response_model=EvalBatchView,
          tags=_TAGS, extra_responses={404: "No such batch in this tenant"},
          summary="An eval batch: runs per status, cost so far, when it finished")
def get_eval_batch(ctx: RequestContext, batch_id: str) -> EvalBatchView:
    return _service().get_batch(ctx.principal, batch_id)


@endpoint("/eval-batches/{batch_id}/cancel", "POST", path_params=_BATCH_PARAM,
          response_model=EvalBatchView, tags=_TAGS,
          extra_responses={403: "Only the batch's creator or a tenant admin", 404: "No such batch in this tenant"},
          summary="Cancel every run of the batch that has not ended")
def cancel_eval_batch(ctx: RequestContext, batch_id: str) -> EvalBatchView:
    return _service().cancel_batch(ctx.principal, batch_id)
