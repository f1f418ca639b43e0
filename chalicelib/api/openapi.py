"""Builds the OpenAPI 3.1 document from the route registry and the same pydantic models the
routes validate with, so the document cannot drift from the code."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from chalicelib.api.http import ROUTES, RouteSpec

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}

_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Invalid request",
                401: "Missing or invalid bearer token", 403: "Forbidden", 404: "Not found",
                409: "Conflict", 412: "Precondition failed", 413: "Payload too large",
                415: "Unsupported media type", 429: "Rate limited", 500: "Internal error",
                503: "Dependency unavailable"}


def _model_schema(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(mode=mode,  # type: ignore[arg-type]
                                     ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    name = model.__name__
    components.setdefault(name, schema)
    return {"$ref": f"#/components/schemas/{name}"}


def _path_params(path: str) -> list[dict[str, Any]]:
    return [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"{(\w+)}", path)]


def _operation(spec: RouteSpec, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary or spec.name,
                          "tags": list(spec.tags) or ["api"]}
    params = _path_params(spec.path)
    if spec.query_model is not None:
        qschema = spec.query_model.model_json_schema()
        required = set(qschema.get("required", []))
        for pname, pschema in qschema.get("properties", {}).items():
            params.append({"name": pname, "in": "query", "required": pname in required,
                           "schema": {k: v for k, v in pschema.items() if k != "title"}})
    if params:
        op["parameters"] = params
    if spec.request_model is not None:
        content: dict[str, Any] = {}
        for ctype in spec.request_content_types:
            if ctype == "application/json":
                content[ctype] = {"schema": _model_schema(spec.request_model, components, "validation")}
            else:
                content[ctype] = {"schema": {"type": "string"}}
        op["requestBody"] = {"required": True, "content": content}
    elif spec.request_content_types and spec.method in {"PUT", "POST"} and \
            spec.request_content_types != ("application/json",):
        op["requestBody"] = {"required": True,
                             "content": {c: {"schema": {"type": "string"}} for c in spec.request_content_types}}
    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": _STATUS_TEXT.get(spec.status, "OK")}
    if spec.response_model is not None:
        ok["content"] = {"application/json": {
            "schema": _model_schema(spec.response_model, components, "serialization")}}
    elif spec.status != 204:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    responses[str(spec.status)] = ok
    error_codes = {400, 500}
    if spec.auth != "public":
        error_codes |= {401}
        op["security"] = [{"bearerAuth": []}]
    else:
        op["security"] = []
    if spec.auth == "admin":
        error_codes |= {403}
    error_codes |= set(spec.extra_responses)
    for code in sorted(error_codes):
        if str(code) in responses:
            continue
        if code < 400:
            responses[str(code)] = {"description": spec.extra_responses.get(code, _STATUS_TEXT.get(code, ""))}
            continue
        responses[str(code)] = {
            "description": spec.extra_responses.get(code, _STATUS_TEXT.get(code, "Error")),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    op["responses"] = responses
    return op


@lru_cache(maxsize=1)
def build_openapi() -> dict[str, Any]:
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for spec in sorted(ROUTES, key=lambda s: (s.path, s.method)):
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Eval runner API", "version": "1.0.0",
                 "description": "Admin eval-runner settings, session ingest, evaluations and daemons."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
