"""Registers every blueprint and installs the authenticator; called once by app.py."""

from __future__ import annotations

from chalice import Chalice

from chalicelib.api.http import set_authenticator
from chalicelib.domain.principal import Principal


def _authenticate(request: object) -> Principal:
    from chalicelib.wiring import container

    return container().authenticate(request)  # type: ignore[arg-type]


def register_routes(app: Chalice) -> None:
    from chalicelib.api.admin_routes import admin_bp
    from chalicelib.api.system_routes import system_bp

    set_authenticator(_authenticate)
    app.register_blueprint(system_bp)
    app.register_blueprint(admin_bp)
