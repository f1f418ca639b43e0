"""Route plumbing shared by every route module: auth, body/query parsing, JSON responses, errors.

`endpoint(...)` declares a route: its view receives a `RequestContext` and returns a pydantic model, a
dict or an `ApiResponse`. It records the route in `ROUTES` (which `chalicelib.api.openapi` turns into
the OpenAPI document, so validation and documentation share one source of truth) and its view in
`VIEWS`. Chalice never sees the route module: `chalicelib.api.routes` registers every route from the
generated route table at import, and its view imports the route module on the route's first request
and calls `serve(...)` (so a cold container loads only the modules, models and services of the routes
it serves). Nothing here imports pydantic: a route module that declares models has already loaded it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeAlias, TypeVar

from chalice import Response
from chalice.app import Request

from chalicelib.domain.errors import InvalidRequest, PayloadTooLarge, Unauthenticated, UnsupportedMediaType
from chalicelib.domain.json_depth import JsonTooDeep, check_json_depth, json_too_deep_error, loads_bounded
from chalicelib.observability import bind_log_keys

if TYPE_CHECKING:
    from pydantic import BaseModel

    from chalicelib.domain.principal import Principal

AuthLevel = Literal["public", "member", "admin"]
M = TypeVar("M", bound="BaseModel")


@dataclass(frozen=True)
class BodySchema:
    """A body that is not one pydantic model (e.g. a discriminated union of event models): `type` is
    anything pydantic's TypeAdapter accepts, documented as the component `name`."""

    name: str
    type: Any


# What a route declares for a body: a pydantic model class, or a named union of models.
BodyModel: TypeAlias = "type[BaseModel] | BodySchema"

# API Gateway caps payloads at 10 MB; JSON control-plane bodies are far smaller than that.
DEFAULT_MAX_BODY_BYTES = 256 * 1024


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def refuse_deep_json_body(request: Request) -> None:
    """Every JSON body is depth-checked before any view (or Chalice's own `request.json_body`) parses
    it, so nesting thousands deep is a 400 on every route, not a RecursionError."""
    content_type = str(request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if not _is_json(content_type):
        return
    raw = request.raw_body or b""
    try:
        check_json_depth(raw)
    except JsonTooDeep:
        raise json_too_deep_error() from None


@dataclass(frozen=True)
class RouteSpec:
    path: str
    method: str
    name: str
    # The route module that declares it (imported on the route's first request).
    module: str
    summary: str
    auth: AuthLevel
    request_model: BodyModel | None
    query_model: type[BaseModel] | None
    response_model: BodyModel | None
    status: int
    extra_responses: dict[int, str]
    request_content_types: tuple[str, ...]
    tags: tuple[str, ...]
    # Media types of the success response; anything but JSON is documented as a string body.
    response_content_types: tuple[str, ...] = ("application/json",)
    # JSON schemas of path parameters (default: a non-empty string), e.g. an id pattern or an enum.
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)


ROUTES: list[RouteSpec] = []
# (path, METHOD) → the view of that route, for the route table's lazy views.
VIEWS: dict[tuple[str, str], Callable[..., Any]] = {}


class TableRoute(NamedTuple):
    """One row of the generated route table (`chalicelib/api/route_table.py`): what Chalice registers
    at import, and where the view is."""

    path: str
    method: str
    auth: AuthLevel
    module: str
    name: str
    # The view's docstring: Chalice documents the API Gateway method with it (`chalice package`).
    doc: str | None


@dataclass
class ApiResponse:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def _dump(body: Any) -> Any:
    if body is None or isinstance(body, dict | list | str | int | float):
        return body
    from pydantic import BaseModel  # loaded already: the view that built the model imported it

    if isinstance(body, BaseModel):
        return body.model_dump(mode="json")
    return body


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body=json.dumps(_dump(body), separators=(",", ":")), status_code=status,
                    headers={"Content-Type": "application/json", "Cache-Control": "no-store",
                             **(headers or {})})


class RequestContext:
    """What a view may read from the request; everything is parsed and validated here."""

    def __init__(self, request: Request, principal: Principal | None) -> None:
        self.request = request
        self._principal = principal

    @property
    def principal(self) -> Principal:
        if self._principal is None:  # pragma: no cover - public routes never ask
            raise Unauthenticated("Authentication required.", code="missing_token")
        return self._principal

    def header(self, name: str) -> str | None:
        value = self.request.headers.get(name)
        return value if value is None else str(value)

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def raw_body(self, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
        raw = self.request.raw_body or b""
        body = raw.encode("utf-8") if isinstance(raw, str) else raw
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"The request body is {len(body)} bytes; the limit is {max_bytes} bytes.",
                                  details={"limit_bytes": max_bytes})
        return body

    def json_object(self, max_bytes: int = DEFAULT_MAX_BODY_BYTES, *, allow_empty: bool = False) -> Any:
        ctype = self.content_type
        body = self.raw_body(max_bytes)
        if not body.strip():
            if allow_empty:
                return {}
            raise InvalidRequest("The request body is empty; send a JSON object.", code="empty_body")
        if ctype and not _is_json(ctype):
            raise UnsupportedMediaType(f"Send this request as application/json, not {ctype}.")
        try:
            return loads_bounded(body)
        except JsonTooDeep:
            raise json_too_deep_error() from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest("The request body is not valid JSON.", code="malformed_json") from exc

    def body(self, model: type[M], max_bytes: int = DEFAULT_MAX_BODY_BYTES, *, allow_empty: bool = False) -> M:
        data = self.json_object(max_bytes, allow_empty=allow_empty)
        if not isinstance(data, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="malformed_json")
        return model.model_validate(data)

    def remaining_millis(self) -> int | None:
        """What is left of the Lambda invocation's time, when the request came through Lambda."""
        getter = getattr(self.request.lambda_context, "get_remaining_time_in_millis", None)
        return int(getter()) if callable(getter) else None

    def query(self, model: type[M]) -> M:
        from pydantic import ValidationError

        params = dict(self.request.query_params or {})
        try:
            return model.model_validate(params)
        except ValidationError as exc:
            fields = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                      for e in exc.errors(include_url=False, include_input=False)]
            names = ", ".join(f["field"] for f in fields)
            raise InvalidRequest(f"Invalid query parameter: {names}.", code="invalid_query",
                                 details={"fields": fields}) from exc


Authenticator: TypeAlias = "Callable[[Request], Principal]"
_authenticator: Authenticator | None = None


def set_authenticator(authenticate: Authenticator) -> None:
    """Installed by the composition root; kept out of import time so tests can swap it."""
    global _authenticator
    _authenticator = authenticate


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization") or ""
    scheme, _, token = str(header).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Send 'Authorization: Bearer <token>'.", code="missing_token")
    return token.strip()


def endpoint(
    path: str,
    method: str,
    *,
    auth: AuthLevel = "member",
    summary: str = "",
    request_model: BodyModel | None = None,
    query_model: type[BaseModel] | None = None,
    response_model: BodyModel | None = None,
    status: int = 200,
    extra_responses: dict[int, str] | None = None,
    request_content_types: tuple[str, ...] = ("application/json",),
    response_content_types: tuple[str, ...] = ("application/json",),
    path_params: dict[str, dict[str, Any]] | None = None,
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declares the decorated view as the route `method path`. Add the route to the route table with
    `make routes` (`python -m devstack.routes`); tests/unit/test_route_table.py fails until then."""

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        key = (path, method.upper())
        if key in VIEWS:
            raise ValueError(f"{method.upper()} {path} is declared twice: {VIEWS[key].__module__}."
                             f"{VIEWS[key].__name__} and {view.__module__}.{view.__name__}")
        ROUTES.append(RouteSpec(path=path, method=method.upper(), name=view.__name__, module=view.__module__,
                                summary=summary or (view.__doc__ or "").strip().split("\n")[0],
                                auth=auth, request_model=request_model, query_model=query_model,
                                response_model=response_model, status=status,
                                extra_responses=extra_responses or {},
                                request_content_types=request_content_types, tags=tags,
                                response_content_types=response_content_types, path_params=path_params or {}))
        VIEWS[key] = view
        return view

    return register


def authenticate(request: Request, auth: AuthLevel, eval_run_id: str | None = None) -> Principal | None:
    """The caller of a route with this auth level (None for public routes); 401/403 as domain errors."""
    if auth == "public":
        return None
    if _authenticator is None:
        raise RuntimeError("authenticator not configured")
    principal = _authenticator(request)
    bind_log_keys(tenant=principal.tenant, user=principal.user, eval_run_id=eval_run_id)
    if auth == "admin":
        principal.require_admin()
    return principal


def serve(request: Request, principal: Principal | None, view: Callable[..., Any], status: int,
          path_params: dict[str, str]) -> Response:
    """Runs an authenticated request's view and turns what it returns into the response."""
    result = view(RequestContext(request, principal), **path_params)
    if isinstance(result, Response):
        return result
    if isinstance(result, ApiResponse):
        return json_response(result.body, result.status, result.headers)
    return json_response(result, status)

