"""CORS for dashboards on their own origins: preflight answers and response headers, exact origins only.

The stage lists its dashboard origins in `CORS_ALLOWED_ORIGINS` (comma-separated, e.g.
`https://dash.example.com,https://staging-dash.example.com`; `.chalice/config.json` per stage, the
environment on the local stack). A request whose `Origin` is one of them gets
`Access-Control-Allow-Origin: <that origin>` on every response, errors included, plus the exposed
headers a dashboard reads (`ETag` for If-Match, `Retry-After` on 429/503); any other origin gets no
`Access-Control-*` header at all. Every response says `Vary: Origin` once origins are configured, so
a cache never serves one origin's answer to another. No credentials mode: the API takes bearer
tokens, never cookies.

A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here, before any route runs
and without a token (browsers send none): 204 with the path's methods and the allowed request
headers for a listed origin, 403 `cors_origin_not_allowed` (no CORS headers) otherwise. API Gateway
only forwards `OPTIONS` for paths that declare it, so `register_preflight_routes` adds an `OPTIONS`
route to every path once all blueprints are registered; a plain `OPTIONS` (not a preflight) gets 204
with `Allow`. Those routes are transport plumbing, not operations: the OpenAPI document leaves them
out (`PREFLIGHT_ROUTES` names them for its completeness test).

API Gateway's own error responses (unknown route, throttling, body too large, timeouts, Lambda
failures) never reach this code; `devstack/package/template.py` gives them the same headers in the template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from chalice import Chalice, Response

from chalicelib.api.errors import error_body

ALLOWED_REQUEST_HEADERS = ("Authorization", "Content-Type", "If-Match", "Idempotency-Key")
EXPOSED_RESPONSE_HEADERS = ("ETag", "Retry-After")
# Browsers cap this anyway (Chromium: 2 h); 10 minutes keeps a changed origin list effective soon.
PREFLIGHT_MAX_AGE_SECONDS = 600

# (path, "OPTIONS") pairs added by register_preflight_routes.
PREFLIGHT_ROUTES: set[tuple[str, str]] = set()


def response_headers(origin: str | None, allowed: Iterable[str]) -> dict[str, str]:
    """The CORS headers for a response to a request from `origin` (empty when none are configured)."""
    allowed = tuple(allowed)
    if not allowed:
        return {}
    headers = {"Vary": "Origin"}
    if origin is not None and origin in allowed:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_RESPONSE_HEADERS)
    return headers


def preflight_response(origin: str | None, allowed: Iterable[str], methods: Iterable[str]) -> Response:
    allowed = tuple(allowed)
    if origin is None or origin not in allowed:
        headers: dict[str, str | list[str]] = {"Content-Type": "application/json",
                                               **response_headers(origin, allowed)}
        return Response(body=error_body("cors_origin_not_allowed",
                                        "This origin may not call the API from a browser; ask an operator to add "
                                        "it to the stage's CORS_ALLOWED_ORIGINS.",
                                        {"origin": origin}),
                        status_code=403, headers=headers)
    headers = dict[str, str | list[str]](response_headers(origin, allowed))
    headers.update({
        "Access-Control-Allow-Methods": ", ".join(sorted(set(methods) | {"OPTIONS"})),
        "Access-Control-Allow-Headers": ", ".join(ALLOWED_REQUEST_HEADERS),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
    })
    return Response(body="", status_code=204, headers=headers)


def _merge_vary(existing: str | list[str] | None, value: str) -> str:
    if not existing:
        return value
    if isinstance(existing, list):
        existing = ", ".join(existing)
    parts = [p.strip() for p in existing.split(",")]
    return existing if any(p.lower() == value.lower() for p in parts) else f"{existing}, {value}"


def _configured_origins() -> tuple[str, ...]:
    from chalicelib.wiring import container

    try:
        return container().config.cors_allowed_origins
    except RuntimeError:
        # A misconfigured stage answers 500 from its routes anyway; CORS then fails closed.
        return ()


def _header(request: Any, name: str) -> str | None:
    value = request.headers.get(name) if request is not None else None
    return None if value is None else str(value)


def cors_middleware(app: Chalice,
                    origins: Callable[[], tuple[str, ...]] = _configured_origins) -> Callable[..., Response]:
    """The app's HTTP middleware (`app.register_middleware(cors_middleware(app), "http")`)."""

    def middleware(request: Any, get_response: Callable[[Any], Response]) -> Response:
        allowed = origins()
        origin = _header(request, "origin")
        if (request is not None and request.method == "OPTIONS"
                and _header(request, "access-control-request-method") is not None):
            path = request.context.get("resourcePath", "") if isinstance(request.context, dict) else ""
            methods = [m for m in app.routes.get(path, {}) if m != "OPTIONS"]
            return preflight_response(origin, allowed, methods)
        response = get_response(request)
        for name, value in response_headers(origin, allowed).items():
            if name == "Vary":
                current = next((v for k, v in response.headers.items() if k.lower() == "vary"), None)
                response.headers = {k: v for k, v in response.headers.items() if k.lower() != "vary"}
                response.headers["Vary"] = _merge_vary(current, value)
            else:
                response.headers[name] = value
        return response

    return middleware


def register_preflight_routes(app: Chalice) -> None:
    """An `OPTIONS` route on every path registered so far (call after every blueprint)."""

    def preflight(**_path_params: str) -> Response:
        request = app.current_request
        path = request.context.get("resourcePath", "") if request is not None else ""
        methods = sorted(set(app.routes.get(path, {})) | {"OPTIONS"})
        return Response(body="", status_code=204, headers={"Allow": ", ".join(methods)})

    for path, methods in list(app.routes.items()):
        if "OPTIONS" in methods:
            continue
        app.route(path, methods=["OPTIONS"], content_types=["*/*"])(preflight)
        PREFLIGHT_ROUTES.add((path, "OPTIONS"))
