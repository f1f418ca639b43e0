"""Entrypoint: creates the Chalice app and registers blueprints and middleware. Nothing else."""

from __future__ import annotations

from chalice import Chalice, ConvertToMiddleware

from chalicelib.api.cors import cors_middleware, register_preflight_routes
from chalicelib.api.middleware import normalise_error_bodies
from chalicelib.api.routes import register_routes
from chalicelib.coldstart import first_request_loads_code
from chalicelib.observability import observe

# Powertools owns logging: Chalice's own setup would grab the same "eval-runner" logger, add a plain
# stdout handler and raise its level to ERROR whenever sys.stdout is not the stream Powertools bound.
app = Chalice(app_name="eval-runner", configure_logs=False)
app.experimental_feature_flags.update(["WEBSOCKETS"])
# Outermost: the first request loads the route's code with the garbage collector held off.
app.register_middleware(first_request_loads_code, "http")
# Logs with the Lambda context (keys of one request never leak into the next) and flushed metrics.
# HTTP only: every other function is deployed with its own module as handler, never imports this
# file, and so wraps itself (`chalicelib.observability.lambda_entry`).
app.register_middleware(ConvertToMiddleware(observe), "http")
app.register_middleware(normalise_error_bodies, "http")
app.register_middleware(cors_middleware(app), "http")
register_routes(app)
register_preflight_routes(app)  # after every blueprint: one OPTIONS route per path
