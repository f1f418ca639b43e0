"""Registers every blueprint (REST, WebSocket, SQS worker, schedule) and the authenticator; called by app.py."""

from __future__ import annotations

from chalice import Chalice

from chalicelib.api.http import set_authenticator
from chalicelib.domain.principal import Principal


def _authenticate(request: object) -> Principal:
    from chalicelib.wiring import container

    return container().authenticate(request)  # type: ignore[arg-type]


def register_routes(app: Chalice) -> None:
    from chalicelib.api.admin_routes import admin_bp
    from chalicelib.api.catalog_routes import catalog_bp
    from chalicelib.api.daemon_routes import daemon_bp
    from chalicelib.api.eval_routes import eval_bp
    from chalicelib.api.fact_routes import facts_bp
    from chalicelib.api.history_routes import history_bp
    from chalicelib.api.session_routes import sessions_bp
    from chalicelib.api.system_routes import system_bp
    from chalicelib.api.ui_routes import ui_bp
    from chalicelib.api.ws_handlers import ws_bp
    from chalicelib.worker.eval_worker import worker_bp
    from chalicelib.worker.maintenance import maintenance_bp

    set_authenticator(_authenticate)
    app.register_blueprint(system_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(catalog_bp)
    app.register_blueprint(eval_bp)
    app.register_blueprint(facts_bp)
    app.register_blueprint(history_bp)
    app.register_blueprint(sessions_bp)
    app.register_blueprint(daemon_bp)
    app.register_blueprint(ws_bp)
    app.register_blueprint(ui_bp)
    app.register_blueprint(worker_bp)
    app.register_blueprint(maintenance_bp)
    # Session transcripts travel as binary so API Gateway hands non-UTF-8 bytes over intact
    # (and they get a line-numbered 400) instead of mangling them into valid text.
    if "application/x-ndjson" not in app.api.binary_types:
        app.api.binary_types.append("application/x-ndjson")
