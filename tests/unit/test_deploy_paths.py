"""Both deploy paths give every function the same runtime configuration and the same least privilege.

Path (a) is the packaged template (`make package`): environment and policies as intrinsics. Path (b) is
`make infra` + `chalice deploy`: the data stack's outputs written into the stage's `.chalice/config.json`
environment and per-function policy files. Here path (b) is written into a copy of the project from
stand-in outputs, and each function is compared: the same variables (resource variables naming the same
resource), the same statements (same actions, on the same resource, with the same conditions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import infra
from devstack import package as pkg
from devstack.access import FUNCTION_ACCESS, PARAMETER_ENV, RESOURCE_ENV

STAGE = "prod"
ACCOUNT, REGION = "111122223333", "eu-west-1"
TABLE, BUCKET, QUEUE = "eval-runner-prod-data-EvalTable-1AB", "eval-runner-prod-data-sessionbucket-9xy", \
    "eval-runner-prod-data-EvalJobs-77Q"
KEY_ID = "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"


def _outputs(functions: dict[str, tuple[str, str]]) -> dict[str, str]:
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    outputs = {
        "EvalTableName": TABLE, "SessionBucketName": BUCKET, "EvalJobsQueueName": QUEUE,
        "EvalJobsQueueUrl": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{QUEUE}",
        "EvalKeyArn": arn.format("kms", f"key/{KEY_ID}"), "EvalTableArn": arn.format("dynamodb", f"table/{TABLE}"),
        "SessionBucketArn": f"arn:aws:s3:::{BUCKET}", "EvalJobsQueueArn": arn.format("sqs", QUEUE),
        "AccountId": ACCOUNT, "Region": REGION, "Partition": "aws",
        **{f"Param{p}": f"value-of-{p}" for p in PARAMETER_ENV},
    }
    for logical, (_name, function_name) in functions.items():
        outputs[f"{logical}LogGroupArn"] = arn.format("logs", f"log-group:/aws/lambda/{function_name}:*")
    return outputs


# The physical resource each intrinsic of path (a) stands for, in path (b)'s terms.
def _resolve(value: Any, outputs: dict[str, str], function: str) -> Any:
    if isinstance(value, str):
        return value
    if value == {"Ref": "EvalTable"}:
        return TABLE
    if value == {"Ref": "SessionBucket"}:
        return BUCKET
    if value == {"Ref": "EvalJobs"}:
        return outputs["EvalJobsQueueUrl"]
    if value == {"Fn::GetAtt": ["EvalJobs", "QueueName"]}:
        return QUEUE
    if value == {"Fn::GetAtt": ["EvalKey", "Arn"]}:
        return outputs["EvalKeyArn"]
    if value == {"Fn::GetAtt": ["EvalTable", "Arn"]}:
        return outputs["EvalTableArn"]
    if value == {"Fn::GetAtt": ["SessionBucket", "Arn"]}:
        return outputs["SessionBucketArn"]
    if value == {"Fn::GetAtt": ["EvalJobs", "Arn"]}:
        return outputs["EvalJobsQueueArn"]
    if value == {"Fn::GetAtt": [f"{function}LogGroup", "Arn"]}:
        return outputs[f"{function}LogGroupArn"]
    if "Ref" in value and value["Ref"] in PARAMETER_ENV:
        return outputs[f"Param{value['Ref']}"]
    if "Fn::Sub" in value:
        text = value["Fn::Sub"]
        subs = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                "EvalTable.Arn": outputs["EvalTableArn"], "SessionBucket.Arn": outputs["SessionBucketArn"],
                "EvalJobs.Arn": outputs["EvalJobsQueueArn"], "WebsocketAPI": "*"}
        return re.sub(r"\$\{([^}]+)\}", lambda m: subs[m.group(1)], text)
    if isinstance(value, list):
        return [_resolve(v, outputs, function) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, outputs, function) for k, v in value.items()}
    raise AssertionError(f"unexpected intrinsic {value}")


def _deep_resolve(value: Any, outputs: dict[str, str], function: str) -> Any:
    if isinstance(value, list):
        return [_deep_resolve(v, outputs, function) for v in value]
    if isinstance(value, dict) and not ({"Ref", "Fn::GetAtt", "Fn::Sub"} & set(value)):
        return {k: _deep_resolve(v, outputs, function) for k, v in value.items()}
    return _resolve(value, outputs, function)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    fresh = pkg.fresh_build(STAGE)
    if fresh is not None:
        data: dict[str, Any] = json.loads(fresh.read_text())
        return data
    with pkg.project_snapshot(with_dependencies=False) as project:
        result = pkg.package(STAGE, project.parent / "out", source=project, lint=False, template_only=True)
        built: dict[str, Any] = json.loads(Path(result.template).read_text())
        return built


@pytest.fixture(scope="module")
def chalice_path() -> Iterator[tuple[Path, dict[str, tuple[str, str]], dict[str, str]]]:
    with pkg.project_snapshot(with_dependencies=False) as project:
        functions = infra.chalice_functions(STAGE, project)
        outputs = _outputs(functions)
        infra.write_stage_config(STAGE, outputs, project)
        yield project, functions, outputs


def test_both_paths_deploy_the_same_functions(template: dict[str, Any], chalice_path: Any) -> None:
    _, functions, _ = chalice_path
    packaged = {n for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert set(functions) == packaged == set(FUNCTION_ACCESS)


def test_every_function_gets_the_same_environment(template: dict[str, Any], chalice_path: Any) -> None:
    project, functions, outputs = chalice_path
    config = pkg.stage_config(STAGE, project)
    for logical, (name, _function_name) in functions.items():
        sam_env = template["Resources"][logical]["Properties"]["Environment"]["Variables"]
        chalice_env = dict(config.scope(STAGE, name).environment_variables)
        # The WebSocket API exists on path (b) only after its first deploy (make infra pins it then).
        sam_env = {k: v for k, v in sam_env.items() if k != "WEBSOCKET_API_ID"}
        assert set(sam_env) == set(chalice_env), (logical, set(sam_env) ^ set(chalice_env))
        for var, value in sam_env.items():
            assert _resolve(value, outputs, logical) == chalice_env[var], (logical, var)
        for var in RESOURCE_ENV:
            assert chalice_env[var] and not chalice_env[var].startswith("{"), (logical, var)


def test_every_function_gets_the_same_least_privilege_policy(template: dict[str, Any], chalice_path: Any) -> None:
    project, functions, outputs = chalice_path
    config = json.loads((project / ".chalice" / "config.json").read_text())["stages"][STAGE]["lambda_functions"]
    roles = set()
    for logical, (name, _function_name) in functions.items():
        role = template["Resources"][logical]["Properties"]["Role"]["Fn::GetAtt"][0]
        (policy,) = template["Resources"][role]["Properties"]["Policies"]
        sam = _deep_resolve(policy["PolicyDocument"]["Statement"], outputs, logical)
        policy_file = config[name]["iam_policy_file"]
        roles.add(policy_file)
        chalice = json.loads((project / ".chalice" / policy_file).read_text())["Statement"]
        assert sam == chalice, logical
    assert len(roles) == len(functions), "every function has its own policy (and so its own role)"


def test_chalice_path_logs_only_to_the_functions_own_group(chalice_path: Any) -> None:
    project, functions, outputs = chalice_path
    for logical, (name, function_name) in functions.items():
        statements = json.loads((project / ".chalice" / f"policy-{STAGE}-{name}.json").read_text())["Statement"]
        logs = [s for s in statements if any(a.startswith("logs:") for a in s["Action"])]
        assert [s["Resource"] for s in logs] == [outputs[f"{logical}LogGroupArn"]]
        assert f"/aws/lambda/{function_name}:" in outputs[f"{logical}LogGroupArn"]
    template = infra.data_stack_template(STAGE, project)
    for logical, (_name, function_name) in functions.items():
        group = template["Resources"][f"{logical}LogGroup"]["Properties"]
        assert group["LogGroupName"] == f"/aws/lambda/{function_name}"
        assert group["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
