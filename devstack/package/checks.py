"""The deploy-time invariants of the packaged template, and cfn-lint over it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack.package.template import (
    REST_API,
    SUB,
    WEBSOCKET_API,
    WEBSOCKET_STAGE,
    functions_of,
    log_group_id,
    sqs_events,
)

# Worker Lambda timeout vs queue visibility: AWS recommends at least 6x (retries within a batch).
VISIBILITY_FACTOR = 6
# Services whose actions touch tenant data; a `*` resource on any of them fails the build.
DATA_SERVICES = frozenset({"secretsmanager", "kms", "dynamodb", "s3", "sqs", "events", "logs"})


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def iam_policy_documents(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every identity policy in the template (inline role policies and managed/inline policies)."""
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res.get("Type") == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield f"{name}/{policy.get('PolicyName')}", policy["PolicyDocument"]
        elif res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            yield name, props["PolicyDocument"]


def check_template(template: dict[str, Any]) -> list[str]:
    """The deploy-time invariants; an empty list means the template is fit to ship."""
    problems: list[str] = []
    resources = template["Resources"]
    functions = functions_of(template)

    workers = {n: f for n, f in functions.items() if sqs_events(f)}
    if not workers:
        problems.append("no function consumes the eval job queue (is the worker blueprint registered?)")
    for name, function in workers.items():
        timeout = int(function["Properties"].get("Timeout", 3))
        for event_name, event in sqs_events(function).items():
            props = event.get("Properties", {})
            if "ReportBatchItemFailures" not in props.get("FunctionResponseTypes", []):
                problems.append(f"{name}.{event_name}: ReportBatchItemFailures is not set")
            queue_ref = props.get("Queue", {}).get(SUB, "")
            queue_id = queue_ref[2:-5] if queue_ref.startswith("${") and queue_ref.endswith(".Arn}") else ""
            queue = resources.get(queue_id, {})
            if queue.get("Type") != "AWS::SQS::Queue":
                problems.append(f"{name}.{event_name}: Queue {props.get('Queue')!r} is not a queue of this stack")
                continue
            visibility = int(queue["Properties"].get("VisibilityTimeout", 30))
            if visibility < VISIBILITY_FACTOR * timeout:
                problems.append(f"{queue_id}: VisibilityTimeout {visibility} < {VISIBILITY_FACTOR} x "
                                f"{name} Timeout {timeout}")
            if "RedrivePolicy" not in queue["Properties"]:
                problems.append(f"{queue_id}: no dead-letter queue")
            if not props.get("ScalingConfig", {}).get("MaximumConcurrency"):
                problems.append(f"{name}.{event_name}: no ScalingConfig.MaximumConcurrency (worker concurrency cap)")

    from chalicelib.config import _ENV_MAP, RuntimeConfig

    required = [_ENV_MAP[f] for f, info in RuntimeConfig.model_fields.items() if info.is_required()]
    for name, function in functions.items():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        missing = [v for v in required if v not in variables]
        if missing:
            problems.append(f"{name}: environment lacks {missing}")
        group = log_group_id(name)
        if resources.get(group, {}).get("Type") != "AWS::Logs::LogGroup":
            problems.append(f"{name}: no log group with retention")
        elif function["Properties"].get("LoggingConfig", {}).get("LogGroup") != {"Ref": group}:
            problems.append(f"{name}: does not log to its own log group {group}")
        role = function["Properties"].get("Role", {}).get("Fn::GetAtt", [""])[0]
        for policy_name, document in iam_policy_documents({"Resources": {role: resources.get(role, {})}}):
            for statement in _as_list(document.get("Statement", [])):
                if any(str(a).startswith("logs:") for a in _as_list(statement.get("Action", []))) and \
                        statement.get("Resource") != {"Fn::GetAtt": [group, "Arn"]}:
                    problems.append(f"{policy_name}: log access beyond {name}'s own log group")

    api = resources.get(REST_API, {}).get("Properties", {})
    if api.get("OpenApiVersion") is None:
        problems.append(f"{REST_API}: no OpenApiVersion (SAM would add a second stage named 'Stage')")
    throttled = [m for m in api.get("MethodSettings", [])
                 if m.get("ResourcePath") == "/*" and m.get("HttpMethod") == "*" and "ThrottlingRateLimit" in m]
    if not throttled:
        problems.append(f"{REST_API}: no stage-wide throttling (MethodSettings /* *)")
    if "DestinationArn" not in api.get("AccessLogSetting", {}):
        problems.append(f"{REST_API}: no access log")
    if WEBSOCKET_API in resources:
        ws_stage = resources.get(WEBSOCKET_STAGE, {}).get("Properties", {})
        if "ThrottlingRateLimit" not in ws_stage.get("DefaultRouteSettings", {}):
            problems.append(f"{WEBSOCKET_STAGE}: no stage throttling")
        if "DestinationArn" not in ws_stage.get("AccessLogSettings", {}):
            problems.append(f"{WEBSOCKET_STAGE}: no access log")

    for policy_name, document in iam_policy_documents(template):
        for statement in _as_list(document.get("Statement", [])):
            if statement.get("Effect") != "Allow":
                continue
            actions = _as_list(statement.get("Action", []))
            if "*" in _as_list(statement.get("Resource", [])) or statement.get("NotResource"):
                data = [a for a in actions if a == "*" or a.split(":")[0] in DATA_SERVICES]
                if data:
                    problems.append(f"{policy_name}: {data} allowed on every resource")
            if any(a == "*" or a.endswith(":*") for a in actions):
                problems.append(f"{policy_name}: wildcard action in {actions}")
    return problems



def run_cfn_lint(template: Path) -> tuple[int, str]:
    """cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational, 1 fatal."""
    script = Path(sys.executable).with_name("cfn-lint")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "cfnlint"]
    proc = subprocess.run([*cmd, str(template)], capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()
