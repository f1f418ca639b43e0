"""Registers every route and event handler on the app; called by app.py.

HTTP routes come from the generated route table (`chalicelib/api/route_table.py`, `make routes`): each
is registered with Chalice at import with its path, method, name and docstring, so `chalice package`,
the local server and the test client see the whole API, but its route module (its models, services
and what they import) is imported on the route's first request. A cold container that answers GET
/health never loads the session ingest; one that dispatches never loads the admin settings models.
The caller is authenticated before the module is imported, so a request without a valid token costs
no route module either. WebSocket, SQS and schedule handlers are blueprints of their own modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice import Chalice, Response

from chalicelib.api.errors import response_for_exception
from chalicelib.api.http import (
    ROUTES,
    VIEWS,
    RouteSpec,
    TableRoute,
    authenticate,
    refuse_deep_json_body,
    serve,
    set_authenticator,
)
from chalicelib.api.route_table import ROUTE_TABLE

if TYPE_CHECKING:
    from chalicelib.domain.principal import Principal


class StaleRouteTable(RuntimeError):
    """The route table and the route modules disagree: `make routes` was not run after a change."""


def _authenticate(request: object) -> Principal:
    from chalicelib.wiring import container

    return container().authenticate(request)  # type: ignore[arg-type]


# Table row → the route's declaration and view, once its module is imported and the row checked.
_BOUND: dict[TableRoute, tuple[RouteSpec, Callable[..., Any]]] = {}


def bound_view(route: TableRoute) -> tuple[RouteSpec, Callable[..., Any]]:
    """Imports the route's module (once) and returns what it declares for the route, checked against
    the table: a table row that no longer matches its module fails closed rather than serving a route
    whose auth level or view changed."""
    found = _BOUND.get(route)
    if found is not None:
        return found
    key = (route.path, route.method)
    importlib.import_module(route.module)
    view = VIEWS.get(key)
    spec = next((s for s in ROUTES if (s.path, s.method) == key), None)
    if view is None or spec is None or (spec.module, spec.name, spec.auth) != (route.module, route.name, route.auth):
        raise StaleRouteTable(f"{route.method} {route.path}: chalicelib/api/route_table.py does not match "
                              f"{route.module}; run `make routes` (python -m devstack.routes)")
    _BOUND[route] = found = (spec, view)
    return found


def lazy_view(app: Chalice, route: TableRoute) -> Callable[..., Response]:
    """The Chalice view of a table route: authenticates, checks the body's JSON depth, then imports the
    route module and runs its view. Every failure becomes the contract's error body."""

    def view(**path_params: str) -> Response:
        request = app.current_request
        try:
            if request is None:
                raise RuntimeError("a route was called outside a request")
            principal = authenticate(request, route.auth, path_params.get("eval_run_id"))
            refuse_deep_json_body(request)
            spec, target = bound_view(route)
            return serve(request, principal, target, spec.status, path_params)
        except Exception as exc:  # every failure becomes the contract's error body
            return response_for_exception(exc)

    view.__name__ = view.__qualname__ = route.name
    view.__module__ = route.module
    view.__doc__ = route.doc
    return view


def load_route_modules() -> None:
    """Imports every route module of the table, so `ROUTES` describes every route (the OpenAPI document)."""
    for module in dict.fromkeys(route.module for route in ROUTE_TABLE):
        importlib.import_module(module)


def register_routes(app: Chalice) -> None:
    from chalicelib.api.ws_handlers import ws_bp
    from chalicelib.worker.automation_poller import automation_bp
    from chalicelib.worker.eval_worker import worker_bp
    from chalicelib.worker.maintenance import maintenance_bp

    set_authenticator(_authenticate)
    for route in ROUTE_TABLE:
        # '*/*' makes Chalice hand every content type to the view, which answers unsupported
        # ones with the contract's error body instead of Chalice's own 415 shape.
        app.route(route.path, methods=[route.method], content_types=["*/*"], name=route.name)(lazy_view(app, route))
    app.register_blueprint(ws_bp)
    app.register_blueprint(worker_bp)
    app.register_blueprint(maintenance_bp)
    app.register_blueprint(automation_bp)
    # Session transcripts travel as binary so API Gateway hands non-UTF-8 bytes over intact
    # (and they get a line-numbered 400) instead of mangling them into valid text.
    if "application/x-ndjson" not in app.api.binary_types:
        app.api.binary_types.append("application/x-ndjson")
