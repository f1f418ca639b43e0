"""Unauthenticated system routes: health and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from chalicelib.api.http import RequestContext, endpoint


class HealthResponse(BaseModel):
    status: str
    stage: str


@endpoint("/health", "GET", auth="public", response_model=HealthResponse, tags=("system",),
          summary="Liveness check")
def health(ctx: RequestContext) -> HealthResponse:
    from chalicelib.wiring import container

    return HealthResponse(status="ok", stage=container().config.stage)


@endpoint("/openapi.json", "GET", auth="public", tags=("system",),
          summary="The OpenAPI 3.1 document of every route")
def openapi_document(ctx: RequestContext) -> dict[str, Any]:
    from chalicelib.api.openapi import build_openapi

    return build_openapi()
