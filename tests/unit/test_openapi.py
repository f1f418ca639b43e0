"""OpenAPI completeness: the document served at GET /openapi.json describes exactly the Chalice app's
route table, is a valid OpenAPI 3.1 document, marks every non-public operation as bearer-protected,
documents the contract's error body on every error response, and describes request/response bodies
with the same pydantic models the routes validate with."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

import chalicelib.api
from chalicelib.api.errors import error_body
from chalicelib.api.http import ROUTES, BodySchema, RouteSpec
from chalicelib.api.openapi import build_openapi
from chalicelib.api.routes import load_route_modules

# Route modules load on a route's first request; these tests (and their parameters) need all of them.
load_route_modules()

PUBLIC = re.compile(r"^/(health|openapi\.json|ui(/.*)?)$")
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def app() -> Any:
    from app import app as chalice_app

    return chalice_app


@pytest.fixture(scope="module")
def doc(app: Any) -> dict[str, Any]:
    return build_openapi()


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method.upper()): op for path, item in doc["paths"].items()
            for method, op in item.items() if method in METHODS}


def _component(doc: dict[str, Any], ref: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = ref["$ref"].removeprefix("#/components/schemas/")
    return name, doc["components"]["schemas"][name]


def _schema(model: Any, mode: str) -> tuple[str, dict[str, Any]]:
    if isinstance(model, BodySchema):
        schema = TypeAdapter(model.type).json_schema(mode=mode, ref_template="#/components/schemas/{model}")
        return model.name, schema
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model.__name__, model.model_json_schema(mode=mode, ref_template="#/components/schemas/{model}")


def _views() -> dict[str, Callable[..., Any]]:
    """Every view function of the route modules, by name (RouteSpec.name)."""
    views: dict[str, Callable[..., Any]] = {}
    for info in pkgutil.iter_modules(chalicelib.api.__path__):
        if info.name.endswith("_routes"):
            module = importlib.import_module(f"chalicelib.api.{info.name}")
            for name, fn in inspect.getmembers(module, inspect.isfunction):
                if fn.__module__ == module.__name__:
                    views[name] = fn
    return views


# -- the route table and the document agree ---------------------------------------------------------


def _operation_routes(app: Any) -> set[tuple[str, str]]:
    """The route table minus the CORS preflight routes (transport plumbing, not operations)."""
    from chalicelib.api.cors import PREFLIGHT_ROUTES

    routes = {(path, method) for path, methods in app.routes.items() for method in methods}
    assert {(path, "OPTIONS") for path in app.routes} == PREFLIGHT_ROUTES, "a path without a preflight route"
    return routes - PREFLIGHT_ROUTES


def test_every_route_has_an_operation_and_every_operation_a_route(app: Any, doc: dict[str, Any]) -> None:
    routes = _operation_routes(app)
    operations = set(_operations(doc))
    assert routes, "the app registered no routes"
    assert sorted(routes - operations) == [], "routes without an OpenAPI operation"
    assert sorted(operations - routes) == [], "OpenAPI operations without a route"


def test_every_route_goes_through_the_endpoint_registry(app: Any) -> None:
    # A route registered with a bare @bp.route would bypass auth, error mapping and documentation.
    registered = {(s.path, s.method) for s in ROUTES}
    routes = _operation_routes(app)
    assert routes == registered
    assert len(ROUTES) == len(registered), "a route was registered twice"


def test_operation_ids_are_unique(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for op in _operations(doc).values()]
    assert len(ids) == len(set(ids))


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

    assert doc["openapi"].startswith("3.1")
    validate(doc, cls=OpenAPIV31SpecValidator)
    json.dumps(doc)  # plain JSON all the way down


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs - set(doc["components"]["schemas"]) == set()


def test_path_parameters_match_the_path_template(doc: dict[str, Any]) -> None:
    for (path, method), op in _operations(doc).items():
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), f"{method} {path}"


def test_ids_with_a_known_shape_are_documented_with_it(doc: dict[str, Any]) -> None:
    from chalicelib.domain.ids import SESSION_ID_PATTERN
    from chalicelib.domain.settings import VENDORS

    for (path, method), op in _operations(doc).items():
        for param in op.get("parameters", []):
            if param["in"] == "path" and param["name"] == "session_id":
                assert param["schema"]["pattern"] == SESSION_ID_PATTERN.pattern, f"{method} {path}"
            if param["in"] == "path" and param["name"] == "vendor":
                assert param["schema"]["enum"] == list(VENDORS), f"{method} {path}"
            if param["in"] == "query":
                assert "null" not in json.dumps(param["schema"]), "a query parameter is absent, never null"


# -- auth and errors ----------------------------------------------------------------------------------


def test_every_operation_but_the_public_ones_requires_a_bearer_token(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for (path, method), op in _operations(doc).items():
        if PUBLIC.match(path):
            assert op["security"] == [], f"{method} {path} is public"
            assert "401" not in op["responses"], f"{method} {path} never answers 401"
        else:
            assert op["security"] == [{"bearerAuth": []}], f"{method} {path} must require a bearer token"
            assert "401" in op["responses"], f"{method} {path} must document 401"


def test_admin_operations_document_403(doc: dict[str, Any]) -> None:
    for (path, method), op in _operations(doc).items():
        if path.startswith("/admin/"):
            assert "403" in op["responses"], f"{method} {path}"


def test_every_error_response_is_the_contract_error_body(doc: dict[str, Any]) -> None:
    for (path, method), op in _operations(doc).items():
        errors = {code: r for code, r in op["responses"].items() if int(code) >= 400}
        assert {"400", "500"} <= set(errors), f"{method} {path}"
        for code, response in errors.items():
            assert response["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}, \
                f"{method} {path} {code}"


def test_error_schema_accepts_what_the_service_sends_and_rejects_other_shapes(doc: dict[str, Any]) -> None:
    import jsonschema

    schema = doc["components"]["schemas"]["Error"]
    jsonschema.validate(error_body("vendor_required", "Pick a vendor.", None), schema)
    jsonschema.validate(error_body("validation_failed", "Check x.", {"fields": [{"field": "x"}]}), schema)
    for bad in ({"message": "x"}, {"error": {"code": "Bad Code", "message": "x"}}, {"error": {"code": "x"}},
                {"Code": "NotFound", "Message": "x"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_every_body_operation_documents_size_and_media_type_errors(doc: dict[str, Any]) -> None:
    for (path, method), op in _operations(doc).items():
        if "requestBody" in op:
            assert {"413", "415"} <= set(op["responses"]), f"{method} {path}"


# -- one source of truth: the models the routes validate with -----------------------------------------


@pytest.mark.parametrize("spec", ROUTES, ids=lambda s: f"{s.method} {s.path}")
def test_bodies_are_documented_with_the_route_models(spec: RouteSpec, doc: dict[str, Any]) -> None:
    op = doc["paths"][spec.path][spec.method.lower()]
    if spec.request_model is not None:
        name, expected = _schema(spec.request_model, "validation")
        for ctype, media in op["requestBody"]["content"].items():
            if ctype == "application/json":
                got_name, got = _component(doc, media["schema"])
                assert got_name == name
                assert got == {k: v for k, v in expected.items() if k != "$defs"}
    ok = op["responses"][str(spec.status)]
    if spec.response_model is not None:
        name, expected = _schema(spec.response_model, "serialization")
        got_name, got = _component(doc, ok["content"]["application/json"]["schema"])
        assert got_name == name
        assert got == {k: v for k, v in expected.items() if k != "$defs"}
        for sub_name, sub in expected.get("$defs", {}).items():
            assert doc["components"]["schemas"][sub_name] == sub
    if spec.query_model is not None:
        documented = {p["name"] for p in op["parameters"] if p["in"] == "query"}
        # A parameter whose name is a Python keyword (`from`) is a field with an alias.
        assert documented == {f.alias or n for n, f in spec.query_model.model_fields.items()}


_VIEWS = _views()


@pytest.mark.parametrize("spec", ROUTES, ids=lambda s: f"{s.method} {s.path}")
def test_routes_parse_with_the_models_they_declare(spec: RouteSpec) -> None:
    """A view that validates `ctx.body(X)` / `ctx.query(Y)` must declare X / Y, and a view that reads a
    JSON body at all must document it: otherwise the document and the validation drift apart."""
    view = _VIEWS[spec.name]
    source = inspect.getsource(view)
    body_models = set(re.findall(r"ctx\.body\((\w+)", source))
    query_models = set(re.findall(r"ctx\.query\((\w+)", source))
    if body_models:
        assert isinstance(spec.request_model, type)
        assert body_models == {spec.request_model.__name__}
    if query_models:
        assert spec.query_model is not None
        assert query_models == {spec.query_model.__name__}
    if "ctx.json_object(" in source or body_models:
        assert spec.request_model is not None, f"{spec.name} reads a JSON body it does not document"
    if spec.query_model is not None:
        assert query_models, f"{spec.name} documents a query it never parses"


def test_served_document_is_the_built_one(client: Any) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.json == json.loads(json.dumps(build_openapi()))
