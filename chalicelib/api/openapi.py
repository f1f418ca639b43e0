"""Builds the OpenAPI 3.1 document from the route registry and the same pydantic models the
routes validate with, so the document cannot drift from the code."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from chalicelib.api.http import ROUTES, BodySchema, RouteSpec

if TYPE_CHECKING:
    from chalicelib.api.http import BodyModel

ERROR_SCHEMA_NAME = "Error"
_ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every 4xx/5xx body.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                         "description": "Stable snake_case code clients may switch on."},
                "message": {"type": "string", "description": "An actionable sentence."},
                "details": {"description": "Optional structured details, e.g. field errors."},
            },
        }
    },
}

_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 301: "Moved permanently",
                304: "Not modified", 400: "Invalid request", 401: "Missing or invalid bearer token",
                403: "Forbidden", 404: "Not found", 409: "Conflict", 412: "Precondition failed",
                413: "Payload too large", 415: "Unsupported media type", 422: "Unprocessable", 429: "Rate limited",
                500: "Internal error", 503: "A dependency is unavailable; retry"}
JSON = "application/json"


def _schema_of(model: BodyModel, mode: str) -> tuple[str, dict[str, Any]]:
    if isinstance(model, BodySchema):
        return model.name, TypeAdapter(model.type).json_schema(
            mode=mode, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    return model.__name__, model.model_json_schema(mode=mode,  # type: ignore[arg-type]
                                                   ref_template="#/components/schemas/{model}")


def _model_schema(model: BodyModel, components: dict[str, Any], mode: str) -> dict[str, Any]:
    name, schema = _schema_of(model, mode)
    for sub_name, sub in schema.pop("$defs", {}).items():
        _register(components, sub_name, sub)
    _register(components, name, schema)
    return {"$ref": f"#/components/schemas/{name}"}


def _register(components: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    # One name, one schema: a request model and a response model with the same name but different
    # (validation vs serialization) schemas would silently document the wrong one.
    existing = components.setdefault(name, schema)
    if existing != schema:
        raise ValueError(f"two different schemas are named {name!r} in the OpenAPI document")


def _query_param_schema(prop: dict[str, Any]) -> dict[str, Any]:
    schema = {k: v for k, v in prop.items() if k != "title"}
    # A query parameter is absent rather than null: drop pydantic's `| None` branch.
    options = schema.get("anyOf")
    if isinstance(options, list):
        non_null = [o for o in options if o != {"type": "null"}]
        if len(non_null) == 1:
            schema.pop("anyOf")
            schema = {**non_null[0], **schema}
        else:
            schema["anyOf"] = non_null
    if schema.get("default", "") is None:
        schema.pop("default")
    return schema


def _path_params(spec: RouteSpec) -> list[dict[str, Any]]:
    params = []
    for name in re.findall(r"{(\w+)}", spec.path):
        schema = dict(spec.path_params.get(name) or {"type": "string", "minLength": 1})
        param: dict[str, Any] = {"name": name, "in": "path", "required": True}
        if "description" in schema:
            param["description"] = schema.pop("description")
        params.append({**param, "schema": schema})
    return params


def _content(types: tuple[str, ...], schema: dict[str, Any]) -> dict[str, Any]:
    return {t: {"schema": schema if t == JSON or t.endswith("+json") else {"type": "string"}} for t in types}


def _operation(spec: RouteSpec, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary or spec.name,
                          "tags": list(spec.tags) or ["api"]}
    params = _path_params(spec)
    if spec.query_model is not None:
        qschema = spec.query_model.model_json_schema()
        required = set(qschema.get("required", []))
        for pname, pschema in qschema.get("properties", {}).items():
            param: dict[str, Any] = {"name": pname, "in": "query", "required": pname in required,
                                     "schema": _query_param_schema(pschema)}
            if "description" in pschema:
                param["description"] = pschema["description"]
            params.append(param)
    if params:
        op["parameters"] = params

    has_body = spec.request_model is not None or (
        spec.method in {"PUT", "POST"} and spec.request_content_types != (JSON,))
    if spec.request_model is not None:
        body_schema = _model_schema(spec.request_model, components, "validation")
        op["requestBody"] = {"required": True, "content": _content(spec.request_content_types, body_schema)}
    elif has_body:
        op["requestBody"] = {"required": True, "content": _content(spec.request_content_types, {"type": "string"})}

    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": _STATUS_TEXT.get(spec.status, "OK")}
    if spec.status != 204:
        ok_schema = (_model_schema(spec.response_model, components, "serialization")
                     if spec.response_model is not None else {"type": "object"})
        ok["content"] = _content(spec.response_content_types, ok_schema)
    responses[str(spec.status)] = ok

    error_codes = {400, 500}
    if spec.auth == "public":
        op["security"] = []
    else:
        op["security"] = [{"bearerAuth": []}]
        # Every authenticated route reads its tenant's records from AWS, which may be throttled.
        error_codes |= {401, 503}
    if spec.auth == "admin":
        error_codes |= {403}
    if "{" in spec.path:
        # A path parameter names an object: unknown ones, and other tenants' objects, are 404.
        error_codes |= {404}
    if has_body:
        # Every body is size-checked and content-type-checked before it is parsed.
        error_codes |= {413, 415}
    error_codes |= set(spec.extra_responses)
    for code in sorted(error_codes):
        key = str(code)
        if key in responses:
            continue
        description = spec.extra_responses.get(code) or _STATUS_TEXT.get(code, "Error")
        if code < 400:
            success: dict[str, Any] = {"description": description}
            if 200 <= code < 300 and code != 204 and "content" in ok:
                success["content"] = ok["content"]
            responses[key] = success
        else:
            responses[key] = {"description": description, "content": {JSON: {"schema": _ERROR_REF}}}
    op["responses"] = dict(sorted(responses.items()))
    return op


@lru_cache(maxsize=1)
def build_openapi() -> dict[str, Any]:
    from chalicelib.api.routes import load_route_modules

    load_route_modules()  # route modules load on first use; the document describes all of them
    components: dict[str, Any] = {ERROR_SCHEMA_NAME: _ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    for spec in sorted(ROUTES, key=lambda s: (s.path, s.method)):
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Eval runner API", "version": "1.0.0",
                 "description": "Admin eval-runner settings, session ingest, evaluations and daemons. "
                                "Every route but /health, /openapi.json and the console (/ui) needs "
                                "`Authorization: Bearer <JWT>`; every 4xx/5xx body is an Error."},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }

