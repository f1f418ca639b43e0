"""The generated route table (`chalicelib/api/route_table.py`): current with the route modules, registered
with Chalice in full at import, its route modules imported only by the routes that need them, and a row
that no longer matches its module refused (500) rather than served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from chalice import Chalice
from chalice.test import Client

from chalicelib.api.errors import response_for_exception
from chalicelib.api.http import TableRoute
from chalicelib.api.route_table import ROUTE_TABLE
from chalicelib.api.routes import bound_view, lazy_view
from devstack import routes as generator

ROOT = Path(__file__).resolve().parents[2]
RUN = f"run `{generator.COMMAND}` and commit chalicelib/api/route_table.py"


def test_the_route_table_is_current() -> None:
    assert generator.TABLE_FILE.read_text() == generator.render(), f"the route table is stale: {RUN}"


def test_every_module_that_declares_routes_is_in_the_table() -> None:
    declared = {module for _, _, _, module, _, _ in generator.declared_routes()}
    missing = declared - {route.module for route in ROUTE_TABLE}
    assert not missing, f"route modules missing from the route table: {sorted(missing)}: {RUN}"


def test_every_row_matches_what_its_module_declares() -> None:
    for route in ROUTE_TABLE:
        spec, view = bound_view(route)
        assert (spec.module, spec.name, spec.auth) == (route.module, route.name, route.auth)
        assert view.__name__ == route.name


def test_chalice_registers_every_route_of_the_table_at_import() -> None:
    from app import app

    for route in ROUTE_TABLE:
        entry = app.routes[route.path][route.method]
        assert entry.view_name == route.name
        assert entry.content_types == ["*/*"]
        assert entry.authorizer is None and not entry.api_key_required
        # `chalice package` documents each API Gateway method with the view's docstring.
        assert entry.view_function.__doc__ == route.doc


def _modules_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
                         cwd=ROOT, check=True, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STAGE": "test",
                              "AWS_DEFAULT_REGION": "us-east-1", "EVAL_TABLE_NAME": "t", "EVAL_BUCKET_NAME": "b",
                              "EVAL_QUEUE_URL": "https://sqs.invalid/q", "EVAL_KMS_KEY_ID": "k",
                              "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"})
    modules: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return modules


def test_importing_the_app_imports_no_route_module() -> None:
    modules = _modules_after("import app")
    route_modules = sorted({route.module for route in ROUTE_TABLE})
    assert [m for m in route_modules if m in modules] == []
    # Nor what only routes need: the session ingest, the services, pydantic's model machinery.
    assert [m for m in modules if m.startswith(("chalicelib.ingest", "chalicelib.services", "pydantic.main"))] == []


def test_a_route_imports_only_its_own_route_module() -> None:
    modules = _modules_after(
        "from chalice.test import Client\nimport app\n"
        "with Client(app.app) as c:\n    assert c.http.get('/health').status_code == 200")
    assert [m for m in modules if m.endswith("_routes")] == ["chalicelib.api.system_routes"]


def _app_with(route: TableRoute) -> Chalice:
    app = Chalice(app_name="stale-table")
    app.route(route.path, methods=[route.method], content_types=["*/*"], name=route.name)(lazy_view(app, route))
    return app


def test_a_row_whose_auth_level_no_longer_matches_its_module_is_refused_not_served() -> None:
    settings = next(r for r in ROUTE_TABLE if r.path == "/admin/settings/eval-runner" and r.method == "GET")
    assert settings.auth == "admin"
    # A stale table that says the admin route is public: the request without a token must not be served.
    with Client(_app_with(settings._replace(auth="public"))) as client:
        resp = client.http.get(settings.path)
    assert resp.status_code == 500
    body: dict[str, Any] = json.loads(resp.body)
    assert body["error"]["code"] == "internal_error"
    assert "make routes" not in resp.body.decode()  # the reason is logged, never returned


def test_the_stale_row_error_names_the_command() -> None:
    health = next(r for r in ROUTE_TABLE if r.path == "/health")
    try:
        bound_view(health._replace(path="/healthz"))
    except RuntimeError as exc:
        assert "make routes" in str(exc)
        assert response_for_exception(exc).status_code == 500
    else:
        raise AssertionError("a row for a route its module does not declare was bound")
