"""Entrypoint: creates the Chalice app and registers blueprints and middleware. Nothing else."""

from __future__ import annotations

from chalice import Chalice

from chalicelib.api.middleware import normalise_error_bodies
from chalicelib.api.routes import register_routes

app = Chalice(app_name="eval-runner")
app.experimental_feature_flags.update(["WEBSOCKETS"])
app.register_middleware(normalise_error_bodies, "http")
register_routes(app)
