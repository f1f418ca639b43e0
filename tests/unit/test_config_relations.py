"""The run-timeout ceiling, the worker Lambda's timeout and the queue's visibility move together.

Asserted on the real files (`.chalice/config.json`, `infra/`), resolved the way `chalice package`
resolves them, so changing one number without the others fails here rather than in production
(a worker killed mid-run, or a message redelivered while its first run is still going).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.cli.factory import CLIFactory

from chalicelib.config import RuntimeConfig, runtime_config_from_env
from chalicelib.domain.settings import DEFAULT_RUN_TIMEOUT_SECONDS, MIN_RUN_TIMEOUT_SECONDS
from devstack.package import CHALICE_CONFIG, INFRA_TEMPLATE, QUEUE, ROOT, build_infra_merge

WORKER = "eval_worker"
# Lambda's documented maximum; botocore's model allows more, but not every account does (platform §4).
LAMBDA_MAX_TIMEOUT = 900
# REST API and WebSocket API integrations give up after 29 s.
API_GATEWAY_INTEGRATION_TIMEOUT = 29
STAGES = sorted(json.loads(CHALICE_CONFIG.read_text())["stages"])


def _config(stage: str, function: str | None = None) -> Any:
    config = CLIFactory(project_dir=str(ROOT)).create_config_obj(chalice_stage_name=stage)
    return config.scope(stage, function) if function else config


def _ceiling_and_grace(stage: str) -> tuple[int, int]:
    env = _config(stage, WORKER).environment_variables
    return int(env["MAX_RUN_TIMEOUT_SECONDS"]), int(env["WORKER_GRACE_SECONDS"])


def test_every_stage_is_checked() -> None:
    assert {"dev", "prod"} <= set(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_worker_timeout_is_the_run_ceiling_plus_the_grace_period(stage: str) -> None:
    ceiling, grace = _ceiling_and_grace(stage)
    assert _config(stage, WORKER).lambda_timeout == ceiling + grace


@pytest.mark.parametrize("stage", STAGES)
def test_worker_timeout_fits_the_lambda_maximum(stage: str) -> None:
    assert _config(stage, WORKER).lambda_timeout <= LAMBDA_MAX_TIMEOUT


@pytest.mark.parametrize("stage", STAGES)
def test_grace_period_leaves_time_to_persist_results(stage: str) -> None:
    ceiling, grace = _ceiling_and_grace(stage)
    assert grace >= 30
    assert MIN_RUN_TIMEOUT_SECONDS <= DEFAULT_RUN_TIMEOUT_SECONDS <= ceiling


@pytest.mark.parametrize("stage", STAGES)
def test_queue_visibility_covers_six_worker_timeouts(stage: str) -> None:
    worker_timeout = _config(stage, WORKER).lambda_timeout
    # The file the local stack provisions from, and the stage's merged version that gets deployed.
    for template in (json.loads(INFRA_TEMPLATE.read_text()), build_infra_merge(stage)):
        queue = template["Resources"][QUEUE]["Properties"]
        assert queue["VisibilityTimeout"] >= 6 * worker_timeout
        assert queue["RedrivePolicy"]["maxReceiveCount"] >= 1


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("function", ["api_handler", "websocket_connect", "websocket_message",
                                      "websocket_disconnect"])
def test_synchronous_handlers_fit_the_api_gateway_timeout(stage: str, function: str) -> None:
    assert _config(stage, function).lambda_timeout <= API_GATEWAY_INTEGRATION_TIMEOUT


@pytest.mark.parametrize("stage", STAGES)
def test_runtime_config_defaults_agree_with_the_deployed_values(stage: str) -> None:
    ceiling, grace = _ceiling_and_grace(stage)
    fields = RuntimeConfig.model_fields
    assert fields["max_run_timeout_seconds"].default == ceiling
    assert fields["worker_grace_seconds"].default == grace
    assert fields["websocket_stage"].default == _config(stage).api_gateway_stage

    env = {k: str(v) for k, v in _config(stage, WORKER).environment_variables.items()}
    env.update({"EVAL_TABLE_NAME": "t", "EVAL_BUCKET_NAME": "b", "EVAL_QUEUE_URL": "q",
                "EVAL_KMS_KEY_ID": "k"})
    runtime = runtime_config_from_env(env)
    assert runtime.worker_timeout_seconds == _config(stage, WORKER).lambda_timeout
    assert runtime.secret_prefix == f"eval-runner/{stage}/tenant/"
    assert runtime.stage == stage


def test_per_function_config_names_functions_the_app_defines() -> None:
    # A renamed handler would silently fall back to the 29 s default timeout.
    from app import app

    defined = {"api_handler"}
    defined |= {source.name for source in app.event_sources}
    defined |= {fn.name for fn in app.pure_lambda_functions}
    defined |= {auth.name for auth in app.builtin_auth_handlers}
    ws_names = {"$connect": "websocket_connect", "$default": "websocket_message",
                "$disconnect": "websocket_disconnect"}
    defined |= {ws_names[route] for route in app.websocket_handlers}
    config = json.loads(CHALICE_CONFIG.read_text())
    configured = set(config.get("lambda_functions", {}))
    for stage in config["stages"].values():
        configured |= set(stage.get("lambda_functions", {}))
    assert configured <= defined, f"configured but not defined by app.py: {sorted(configured - defined)}"
