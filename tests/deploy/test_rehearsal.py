"""The offline deploy rehearsal (`make deploy-rehearsal`): a clean run, and each seeded fault caught clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devstack import package as pkg
from devstack import rehearsal

pytestmark = pytest.mark.deploy
STAGE = "prod"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("rehearsal")
    pkg.package(STAGE, directory)
    return directory


@pytest.fixture(scope="module")
def report(out: Path) -> dict[str, Any]:
    rehearsal.rehearse(STAGE, out_dir=out, bytecode_rounds=1)
    data: dict[str, Any] = json.loads((out / "rehearsal.json").read_text())
    return data


def test_the_rehearsal_passes_and_writes_the_documented_report(report: dict[str, Any]) -> None:
    from devstack.access import FUNCTION_ACCESS

    assert report["ok"], report["failures"]
    statuses = {s["step"]: s["status"] for s in report["steps"]}
    assert (statuses["create"], statuses["update"], statuses["delete"]) == (
        "CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE")
    assert {"function", "ok", "detail"} <= set(report["cold_started"][0])
    assert report["not_covered"] and report["moto_patches"]
    chalice_path = report["chalice_deploy"]
    assert chalice_path["data_stack"]["status"] == "CREATE_COMPLETE"
    # `chalice deploy` runs to the end, twice, as the README's path (b) says; push is pinned to its API.
    assert chalice_path["chalice_deploy"]["exit"] == 0, chalice_path["chalice_deploy"]["output_tail"]
    assert chalice_path["redeploy"]["exit"] == 0, chalice_path["redeploy"]["output_tail"]
    assert chalice_path["redeploy"]["push_policy_names_api"]
    assert len(chalice_path["chalice_deploy"]["created"]["functions"]) == len(FUNCTION_ACCESS)
    assert statuses["checkov"] == "OK"


def test_every_deployed_function_cold_starts_with_logs_and_metrics(report: dict[str, Any]) -> None:
    from devstack.access import FUNCTION_ACCESS

    functions = {entry["function"] for entry in report["cold_started"]}
    assert functions == set(FUNCTION_ACCESS)
    for entry in report["cold_started"]:
        assert entry["ok"], entry
        assert entry["log_lines"][0]["function_name"] == entry["function_name"]
        assert entry["log_lines"][0]["cold_start"] is True
        assert any("ColdStart" in json.dumps(m) for m in entry["metrics"])


def test_the_package_bytecode_is_used_and_measured(report: dict[str, Any]) -> None:
    # No cold start compiled a module (checked per function above); the comparison ran.
    assert report["bytecode"]["import_seconds_with_pyc"] and report["bytecode"]["import_seconds_without_pyc"]


@pytest.mark.parametrize(("fault", "message"), [
    ("wrong-handler", "cold start EvalWorker: AttributeError"),
    ("missing-env", "EvalWorker environment: EVAL_QUEUE_URL is not set"),
    ("foreign-resource", "EvalWorker EVAL_TABLE_NAME: 'eval-runner-shared-table' is not a resource of stack"),
])
def test_a_seeded_fault_fails_with_a_clear_message(out: Path, fault: str, message: str) -> None:
    report = rehearsal.rehearse(STAGE, out_dir=out, fault=fault, bytecode_rounds=0, chalice_path=False,
                                with_checkov=False)
    assert report.failures, fault
    assert any(message in failure for failure in report.failures), report.failures
