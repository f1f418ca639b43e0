"""`make infra STAGE=…`: the data resources as their own stack, for teams that deploy with `chalice deploy`.

`chalice deploy` creates functions, roles, the REST and WebSocket APIs and the worker's event source,
but no table, bucket, key, queues or log groups. This deploys those (infra/eval-runner.json with the
stage overlay, plus one log group with retention per function under the name `chalice deploy` gives
it) as the stack `eval-runner-<stage>-data`, then writes into `.chalice/config.json`:

- the stage's `environment_variables`: the same resource names and parameters the packaged
  template gives its functions (`devstack/access.py` RESOURCE_ENV / PARAMETER_ENV), so the app
  starts with the same runtime configuration on both paths;
- per function, `lambda_functions.<name>.iam_policy_file` → `.chalice/policy-<stage>-<name>.json`:
  the same least-privilege statements as the packaged template (`devstack/access.py`), with this
  stack's ARNs, the function's own log group, and its own role.

The WebSocket API exists only after the first `chalice deploy`; run `make infra` once more after it
(it reads `.chalice/deployed/<stage>.json`) and deploy again, and push is pinned to that API and
`WEBSOCKET_API_ID` is set. Until then push is allowed on this account's and region's `<stage>`
WebSocket stages and daemons fall back to polling. Needs AWS credentials (or `--endpoint-url` for
moto, which the deploy rehearsal uses).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devstack import package as pkg
from devstack.access import (
    PARAMETER_ENV,
    RESOURCE_ENV,
    STATIC_ENV,
    Targets,
    UnconfiguredFunction,
    access_of,
    logical_id,
    role_statements,
)

ROOT = pkg.ROOT


def chalice_functions(stage: str, root: Path = ROOT) -> dict[str, tuple[str, str]]:
    """Logical id → (Chalice's name, deployed function name) for every function `chalice deploy` creates."""
    from chalice.deploy import models
    from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder

    config = pkg.stage_config(stage, root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    graph = ApplicationGraphBuilder().build(config, stage)
    found: dict[str, tuple[str, str]] = {}
    for resource in DependencyBuilder().build_dependencies(graph):
        if isinstance(resource, models.LambdaFunction):
            found[logical_id(resource.resource_name)] = (resource.resource_name, resource.function_name)
    return found


def data_stack_template(stage: str, root: Path = ROOT) -> dict[str, Any]:
    """The data plane, one log group per function `chalice deploy` will create, and the outputs
    `write_stage_config` needs."""
    template = pkg.data_plane_template(stage, root)
    template["Description"] = (f"Eval runner, stage {stage}: data resources (table, bucket, key, queues, log groups) "
                               "for `chalice deploy`. Built by `make infra` from infra/.")
    resources = template["Resources"]
    outputs = template.setdefault("Outputs", {})
    for logical, (_name, function_name) in sorted(chalice_functions(stage, root).items()):
        group = pkg.log_group_id(logical)
        resources[group] = {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": f"/aws/lambda/{function_name}", "RetentionInDays": {"Ref": "LogRetentionInDays"}}}
        outputs[f"{group}Arn"] = {"Value": {"Fn::GetAtt": [group, "Arn"]}}
    for _var, (intrinsic, output) in RESOURCE_ENV.items():
        outputs[output] = {"Value": intrinsic}
    for param in PARAMETER_ENV:
        outputs[f"Param{param}"] = {"Value": {"Ref": param}}
    outputs.update({
        "EvalTableArn": {"Value": {"Fn::GetAtt": [pkg.TABLE, "Arn"]}},
        "SessionBucketArn": {"Value": {"Fn::GetAtt": [pkg.BUCKET, "Arn"]}},
        "EvalJobsQueueArn": {"Value": {"Fn::GetAtt": [pkg.QUEUE, "Arn"]}},
        "AccountId": {"Value": {"Ref": "AWS::AccountId"}},
        "Region": {"Value": {"Ref": "AWS::Region"}},
        "Partition": {"Value": {"Ref": "AWS::Partition"}},
    })
    return template


def deploy_data_stack(cloudformation: Any, stack: str, template: dict[str, Any],
                      parameters: dict[str, str], timeout: float = 1800) -> tuple[str, dict[str, str]]:
    """Create or update the stack and wait; returns (final status, outputs)."""
    body = json.dumps(template)
    args = {"StackName": stack, "TemplateBody": body,
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()
                           if k in template.get("Parameters", {})]}
    try:
        cloudformation.describe_stacks(StackName=stack)
        exists = True
    except cloudformation.exceptions.ClientError:
        exists = False
    try:
        (cloudformation.update_stack if exists else cloudformation.create_stack)(**args)
    except cloudformation.exceptions.ClientError as exc:
        if "No updates are to be performed" not in str(exc):
            raise
    deadline = time.monotonic() + timeout
    while True:
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        if not found["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(1 if timeout > 60 else 0.2)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
    return found["StackStatus"], outputs


def deployed_websocket_api(stage: str, root: Path = ROOT) -> str | None:
    """The WebSocket API id from a previous `chalice deploy` of this stage, if any."""
    record = root / ".chalice" / "deployed" / f"{stage}.json"
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    for resource in data.get("resources", []):
        if resource.get("resource_type") == "websocket_api" and resource.get("websocket_api_id"):
            return str(resource["websocket_api_id"])
    return None


def chalice_targets(function: str, outputs: dict[str, str], *, secret_prefix: str, websocket_stage: str,
                    websocket_api_id: str | None) -> Targets:
    """The data stack's resources as ARNs, for `function`'s policy file."""
    partition, region, account = outputs["Partition"], outputs["Region"], outputs["AccountId"]
    arn = f"arn:{partition}"
    api = websocket_api_id or "*"
    return Targets(
        table=outputs["EvalTableArn"], table_indexes=f"{outputs['EvalTableArn']}/index/*",
        bucket=outputs["SessionBucketArn"], bucket_objects=f"{outputs['SessionBucketArn']}/*",
        key=outputs["EvalKeyArn"], queue=outputs["EvalJobsQueueArn"],
        secrets=f"{arn}:secretsmanager:{region}:{account}:secret:{secret_prefix}*",
        event_bus=f"{arn}:events:{region}:{account}:event-bus/default",
        connections=f"{arn}:execute-api:{region}:{account}:{api}/{websocket_stage}/*/@connections/*",
        log_group=outputs[f"{pkg.log_group_id(function)}Arn"],
        via={service: f"{service}.{region}.amazonaws.com" for service in ("dynamodb", "s3", "secretsmanager")},
    )


def stage_environment(outputs: dict[str, str], *, websocket_stage: str, websocket_api_id: str | None) -> dict[str, str]:
    env = {var: outputs[output] for var, (_intrinsic, output) in RESOURCE_ENV.items()}
    env.update(STATIC_ENV)
    env["WEBSOCKET_STAGE"] = websocket_stage
    env.update({var: outputs.get(f"Param{param}", "") for param, var in PARAMETER_ENV.items()})
    if websocket_api_id:
        env["WEBSOCKET_API_ID"] = websocket_api_id
    return env


def write_stage_config(stage: str, outputs: dict[str, str], root: Path = ROOT) -> list[Path]:
    """Writes the stage's environment and per-function policy files; returns the files written."""
    config_file = root / ".chalice" / "config.json"
    config = json.loads(config_file.read_text())
    chalice_config = pkg.stage_config(stage, root)
    secret_prefix = chalice_config.environment_variables.get("EVAL_SECRET_PREFIX", "")
    websocket_stage = chalice_config.api_gateway_stage
    websocket_api_id = deployed_websocket_api(stage, root)
    xray = bool(chalice_config.xray_enabled)
    stage_block = config["stages"][stage]
    stage_block.setdefault("environment_variables", {}).update(
        stage_environment(outputs, websocket_stage=websocket_stage, websocket_api_id=websocket_api_id))
    functions = stage_block.setdefault("lambda_functions", {})
    written = [config_file]
    for logical, (name, _function_name) in sorted(chalice_functions(stage, root).items()):
        try:
            grants = access_of(logical)
        except UnconfiguredFunction as exc:
            raise SystemExit(f"infra: {exc}") from None
        targets = chalice_targets(logical, outputs, secret_prefix=secret_prefix, websocket_stage=websocket_stage,
                                  websocket_api_id=websocket_api_id)
        policy_file = root / ".chalice" / f"policy-{stage}-{name}.json"
        policy_file.write_text(json.dumps({"Version": "2012-10-17",
                                           "Statement": role_statements(grants, targets, xray=xray)}, indent=2) + "\n")
        functions.setdefault(name, {})["iam_policy_file"] = policy_file.name
        written.append(policy_file)
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    return written


def _client(service: str, endpoint_url: str | None, region: str) -> Any:
    import boto3

    if endpoint_url:  # moto: never sign with whatever real credentials this shell has
        return boto3.client(service, endpoint_url=endpoint_url, region_name=region,
                            aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client(service, region_name=region)


def make_infra(stage: str, parameters: dict[str, str], *, stack: str | None = None, endpoint_url: str | None = None,
               region: str | None = None, root: Path = ROOT) -> dict[str, Any]:
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or pkg.DEFAULT_REGION
    stack = stack or f"eval-runner-{stage}-data"
    template = data_stack_template(stage, root)
    status, outputs = deploy_data_stack(_client("cloudformation", endpoint_url, region), stack, template, parameters,
                                        timeout=120 if endpoint_url else 1800)
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise SystemExit(f"infra: stack {stack} ended {status}; see its events in the CloudFormation console")
    written = write_stage_config(stage, outputs, root)
    return {"stack": stack, "status": status, "outputs": outputs, "written": [str(p) for p in written]}


def rehearse_chalice_deploy(stage: str, endpoint: str, parameters: dict[str, str], workdir: Path) -> dict[str, Any]:
    """The rehearsal's `chalice deploy` path on moto, in a copy of the project: the data stack, the
    stage config, then `chalice deploy` itself (what it created, or where moto stopped it)."""
    from chalicelib.config import runtime_config_from_env

    project = pkg.snapshot_project(workdir / "chalice-path")
    result: dict[str, Any] = {"ok": False}
    try:
        infra = make_infra(stage, parameters, endpoint_url=endpoint, region="us-east-1", root=project)
    except SystemExit as exc:
        return {"ok": False, "detail": str(exc)}
    result["data_stack"] = {"stack": infra["stack"], "status": infra["status"]}
    config = json.loads((project / ".chalice" / "config.json").read_text())
    result["stage_environment"] = {k: v for k, v in config["stages"][stage]["environment_variables"].items()
                                   if k in RESOURCE_ENV or k in STATIC_ENV}
    problems = []
    for logical, (name, _fn) in chalice_functions(stage, project).items():
        env = dict(pkg.stage_config(stage, project).scope(stage, name).environment_variables)
        try:
            runtime_config_from_env({**env, "AWS_REGION": "us-east-1"})
        except RuntimeError as exc:
            problems.append(f"{logical}: {exc}")
    result["runtime_config"] = problems if problems else "every function's environment parses"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    with pkg._project_lock():
        pkg._seed_chalice_cache(project, stage)
    first = _chalice_deploy(project, stage, env)
    result["chalice_deploy"] = first | {"created": _created_by_chalice(endpoint, stage)}
    steps = [("chalice deploy", first)]
    pinned: str | None = None
    if first["exit"] == 0:
        # The README's second round: `make infra` again pins WebSocket push to the API the first deploy
        # created, and `chalice deploy` then updates the functions' policies in place.
        make_infra(stage, parameters, endpoint_url=endpoint, region="us-east-1", root=project)
        pinned = deployed_websocket_api(stage, project)
        second = _chalice_deploy(project, stage, env)
        result["redeploy"] = second | {"push_pinned_to": pinned,
                                       "push_policy_names_api": _push_policy_names(project, stage, pinned)}
        steps.append(("redeploy after make infra", second))
    failed = [(name, step) for name, step in steps if step["exit"] != 0]
    push_ok = pinned is not None and bool(result.get("redeploy", {}).get("push_policy_names_api"))
    result["ok"] = (infra["status"] == "CREATE_COMPLETE" and not problems and not failed and push_ok)
    stopped = "".join(f"; {name} failed: {step['output_tail'].splitlines()[-1] if step['output_tail'] else ''}"
                      for name, step in failed)
    redeployed = f", redeployed with push pinned to {pinned}" if push_ok else ""
    result["summary"] = (f"data stack {infra['status']}, "
                         f"{len(result['chalice_deploy']['created'].get('functions', []))} functions created"
                         f"{redeployed}{stopped}")
    result["detail"] = result["summary"] if not problems else "; ".join(problems)
    return result


def _chalice_deploy(project: Path, stage: str, env: dict[str, str]) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run([*pkg._chalice_command(), "--project-dir", str(project), "deploy", "--stage", stage],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = (proc.stdout + proc.stderr).strip()
    return {"exit": proc.returncode, "seconds": round(time.monotonic() - started, 1), "output_tail": output[-1500:]}


def _push_policy_names(project: Path, stage: str, api_id: str | None) -> bool:
    """Whether the functions that push to daemons are granted ManageConnections on that API only."""
    if not api_id:
        return False
    found = False
    for policy in (project / ".chalice").glob(f"policy-{stage}-*.json"):
        for statement in json.loads(policy.read_text()).get("Statement", []):
            actions = statement.get("Action", [])
            if "execute-api:ManageConnections" in (actions if isinstance(actions, list) else [actions]):
                resources = statement.get("Resource", [])
                resources = resources if isinstance(resources, list) else [resources]
                if not all(f":{api_id}/" in str(r) for r in resources):
                    return False
                found = True
    return found


def _created_by_chalice(endpoint: str, stage: str) -> dict[str, Any]:
    lam = _client("lambda", endpoint, "us-east-1")
    functions = [f for f in lam.list_functions()["Functions"] if f["FunctionName"].startswith(f"eval-runner-{stage}")
                 and "rehearsal" not in f["FunctionName"]]
    mappings = lam.list_event_source_mappings().get("EventSourceMappings", [])
    apis = _client("apigateway", endpoint, "us-east-1").get_rest_apis().get("items", [])
    return {"functions": sorted(f["FunctionName"] for f in functions),
            "roles": sorted({f["Role"].rsplit("/", 1)[-1] for f in functions}),
            "event_source_mappings": [{"queue": m["EventSourceArn"].rsplit(":", 1)[-1],
                                       "maximum_concurrency": m.get("ScalingConfig", {}).get("MaximumConcurrency")}
                                      for m in mappings],
            "rest_apis": sorted(a["name"] for a in apis if a["name"] == "eval-runner")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--stack-name", help="default eval-runner-<stage>-data")
    parser.add_argument("--endpoint-url", help="an AWS endpoint (moto) instead of AWS")
    parser.add_argument("overrides", nargs="*", metavar="Key=Value",
                        help="stack parameters, as for `make deploy` (JwksUrl=… JwtIssuer=… JwtAudience=…)")
    args = parser.parse_args(argv)
    parameters = dict(o.split("=", 1) for o in args.overrides if "=" in o)
    result = make_infra(args.stage, parameters, stack=args.stack_name, endpoint_url=args.endpoint_url)
    print(f"{result['stack']}: {result['status']}")
    for path in result["written"]:
        print(f"  wrote {os.path.relpath(path, Path.cwd())}")
    print(f"next: chalice deploy --stage {args.stage}"
          + ("" if deployed_websocket_api(args.stage) else
             f"  (then `make infra STAGE={args.stage} …` and `chalice deploy --stage {args.stage}` once more "
             "to pin WebSocket push to the API it created)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
