"""Entrypoint: creates the Chalice app and registers blueprints and middleware. Nothing else."""

from __future__ import annotations

from chalice import Chalice, ConvertToMiddleware

from chalicelib.api.cors import cors_middleware, register_preflight_routes
from chalicelib.api.middleware import normalise_error_bodies
from chalicelib.api.routes import register_routes
from chalicelib.observability import logger, metrics

# Powertools owns logging: Chalice's own setup would grab the same "eval-runner" logger, add a plain
# stdout handler and raise its level to ERROR whenever sys.stdout is not the stream Powertools bound.
app = Chalice(app_name="eval-runner", configure_logs=False)
app.experimental_feature_flags.update(["WEBSOCKETS"])
# clear_state: keys appended for one request (tenant, user, eval_run_id) never leak into the next.
app.register_middleware(ConvertToMiddleware(logger.inject_lambda_context(clear_state=True)), "all")
app.register_middleware(ConvertToMiddleware(metrics.log_metrics), "all")
app.register_middleware(normalise_error_bodies, "http")
app.register_middleware(cors_middleware(app), "http")
register_routes(app)
register_preflight_routes(app)  # after every blueprint: one OPTIONS route per path
