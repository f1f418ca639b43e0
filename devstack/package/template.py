"""The packaged template's two merges over what `chalice package` generates: the data plane of infra/
with the stage overlay and the Chalice patches (`--merge-template`), then every function's wiring
(environment, own log group, least-privilege role, the worker's queue)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devstack.access import (
    PARAMETER_ENV,
    RESOURCE_ENV,
    STATIC_ENV,
    Targets,
    UnconfiguredFunction,
    access_of,
    role_statements,
)
from devstack.package.inputs import (
    CHALICE_OVERLAY,
    INFRA_DIR,
    INFRA_TEMPLATE,
    ROOT,
    STAGE_OVERLAYS,
    PackagingError,
    deep_merge,
    load_json,
    stage_config,
)

# Logical ids in infra/eval-runner.json the wiring refers to.
QUEUE = "EvalJobs"
TABLE = "EvalTable"
BUCKET = "SessionBucket"
KEY = "EvalKey"
# Chalice's fixed logical ids.
API_HANDLER = "APIHandler"
REST_API = "RestAPI"
WEBSOCKET_API = "WebsocketAPI"
WEBSOCKET_STAGE = "WebsocketAPIStage"
WEBSOCKET_HANDLERS = frozenset({"WebsocketConnect", "WebsocketMessage", "WebsocketDisconnect"})

# The API Gateway access log line (JSON; no Authorization header or body, ever).
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId", "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTimeEpoch", "method": "$context.httpMethod",
    "route": "$context.resourcePath", "routeKey": "$context.routeKey", "eventType": "$context.eventType",
    "connectionId": "$context.connectionId", "status": "$context.status",
    "responseLength": "$context.responseLength", "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency", "errorType": "$context.error.responseType",
}, separators=(",", ":"))

SUB = "Fn::Sub"
ARN = "arn:${AWS::Partition}"
REGION_ACCOUNT = "${AWS::Region}:${AWS::AccountId}"


def _sub_ref(expr: str, suffix: str = "", *, prefix: str = "") -> dict[str, str]:
    """`{"Fn::Sub": "<prefix>${expr}<suffix>"}` without fighting str.format over the braces."""
    return {SUB: prefix + "${" + expr + "}" + suffix}


# -- merge 1: static infra ------------------------------------------------------------------------

def data_plane_template(stage: str, root: Path = ROOT) -> dict[str, Any]:
    """infra/eval-runner.json with the stage overlay: the data resources and the stage parameters.
    The packaged template merges it; `make infra` deploys it as a stack of its own."""
    infra = root / INFRA_DIR.relative_to(ROOT)
    template: dict[str, Any] = load_json(infra / INFRA_TEMPLATE.name)
    overlays = {k: v for k, v in load_json(infra / STAGE_OVERLAYS.name).items() if not k.startswith("_")}
    template = deep_merge(overlays.get(stage, {}), template)
    if stage_config(stage, root).environment_variables.get("AUTH_MODE") == "jwks":
        # Verifying tokens needs all three: make the deploy fail fast instead of the first request.
        params = template["Parameters"]
        for name in ("JwksUrl", "JwtIssuer", "JwtAudience"):
            params[name].pop("Default", None)
            params[name]["MinLength"] = 1
        params["JwksUrl"]["AllowedPattern"] = r"^https://\S+$"
        params["JwksUrl"]["ConstraintDescription"] = "an https:// URL"
    return template


def gateway_cors_headers(origins: tuple[str, ...]) -> dict[str, str]:
    """Response parameters that give API Gateway's own error responses the CORS headers. A gateway
    response cannot choose a header by the request's Origin, so it names one origin: the stage's
    first (its primary dashboard). Empty when the stage lists none."""
    if not origins:
        return {}
    from chalicelib.api.cors import EXPOSED_RESPONSE_HEADERS

    return {"gatewayresponse.header.Access-Control-Allow-Origin": f"'{origins[0]}'",
            "gatewayresponse.header.Access-Control-Expose-Headers": f"'{', '.join(EXPOSED_RESPONSE_HEADERS)}'",
            "gatewayresponse.header.Vary": "'Origin'"}


def build_infra_merge(stage: str, root: Path = ROOT) -> dict[str, Any]:
    """The data plane + the Chalice patches of infra/chalice-overlay.json, for `--merge-template`."""
    from chalicelib.config import parse_origins

    merge = data_plane_template(stage, root)
    infra = root / INFRA_DIR.relative_to(ROOT)
    chalice_overlay = {k: v for k, v in load_json(infra / CHALICE_OVERLAY.name).items() if not k.startswith("_")}
    merge = deep_merge(chalice_overlay, merge)
    merge.pop("AWSTemplateFormatVersion", None)
    merge["Description"] = (f"Eval runner, stage {stage}: REST and WebSocket APIs, SQS worker, DynamoDB table, "
                            "S3 bucket, KMS key. Built by `make package` from infra/ and .chalice/.")
    resources = merge["Resources"]
    resources[REST_API]["Properties"]["AccessLogSetting"]["Format"] = ACCESS_LOG_FORMAT
    resources[WEBSOCKET_STAGE]["Properties"]["AccessLogSettings"]["Format"] = ACCESS_LOG_FORMAT
    try:
        origins = parse_origins(stage_config(stage, root).environment_variables.get("CORS_ALLOWED_ORIGINS", ""))
    except ValueError as exc:
        raise PackagingError(f"stage {stage!r}: {exc}") from None
    cors = gateway_cors_headers(origins)
    if cors:
        responses = resources[REST_API]["Properties"]["DefinitionBody"]["x-amazon-apigateway-gateway-responses"]
        for response in responses.values():
            response.setdefault("responseParameters", {}).update(cors)
    return merge


# -- merge 2: per-function wiring -----------------------------------------------------------------

def functions_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items()
            if res.get("Type") == "AWS::Serverless::Function"}


def sqs_events(function: dict[str, Any]) -> dict[str, dict[str, Any]]:
    events = function.get("Properties", {}).get("Events", {})
    return {name: ev for name, ev in events.items() if ev.get("Type") == "SQS"}


def function_kind(name: str, function: dict[str, Any]) -> str:
    if sqs_events(function):
        return "worker"
    if name == API_HANDLER:
        return "api"
    if name in WEBSOCKET_HANDLERS:
        return "websocket"
    return "other"


def log_group_id(function: str) -> str:
    return f"{function}LogGroup"


def stack_targets(function: str, *, has_websocket: bool, websocket_stage: str, secret_prefix: str) -> Targets:
    """The stack's resources as intrinsics, for `function`'s policy."""
    return Targets(
        table={"Fn::GetAtt": [TABLE, "Arn"]},
        table_indexes=_sub_ref(f"{TABLE}.Arn", "/index/*"),
        bucket={"Fn::GetAtt": [BUCKET, "Arn"]},
        bucket_objects=_sub_ref(f"{BUCKET}.Arn", "/*"),
        key={"Fn::GetAtt": [KEY, "Arn"]},
        queue={"Fn::GetAtt": [QUEUE, "Arn"]},
        secrets={SUB: f"{ARN}:secretsmanager:{REGION_ACCOUNT}:secret:{secret_prefix}*"},
        event_bus={SUB: f"{ARN}:events:{REGION_ACCOUNT}:event-bus/default"},
        connections=({SUB: f"{ARN}:execute-api:{REGION_ACCOUNT}:${{{WEBSOCKET_API}}}/{websocket_stage}"
                                "/*/@connections/*"} if has_websocket else None),
        log_group={"Fn::GetAtt": [log_group_id(function), "Arn"]},
        via={service: {SUB: f"{service}.${{AWS::Region}}.amazonaws.com"}
             for service in ("dynamodb", "s3", "secretsmanager")},
    )


def stack_environment(*, has_websocket: bool, websocket_stage: str) -> dict[str, Any]:
    """Every function's environment additions (resource names from intrinsics)."""
    env: dict[str, Any] = {var: intrinsic for var, (intrinsic, _) in RESOURCE_ENV.items()}
    env.update(STATIC_ENV)
    env["WEBSOCKET_STAGE"] = websocket_stage
    env.update({var: {"Ref": param} for param, var in PARAMETER_ENV.items()})
    if has_websocket:
        env["WEBSOCKET_API_ID"] = {"Ref": WEBSOCKET_API}
    return env


def build_functions_merge(template: dict[str, Any], stage: str, root: Path = ROOT) -> dict[str, Any]:
    """The per-function patch for the template `chalice package` generated: for every function its
    environment, its own log group (LoggingConfig) with retention, its own role with the
    least-privilege statements of `devstack/access.py`, tracing from the `Tracing` parameter; for the
    SQS worker `ReportBatchItemFailures` and its event source re-pointed at the stack's queue."""
    config = stage_config(stage, root)
    secret_prefix = config.environment_variables.get("EVAL_SECRET_PREFIX", "")
    if not secret_prefix.endswith("/tenant/"):
        raise PackagingError(f"EVAL_SECRET_PREFIX for stage {stage!r} must end in '/tenant/', got "
                             f"{secret_prefix!r}; the IAM policy scopes Secrets Manager to it")
    resources = template["Resources"]
    has_websocket = WEBSOCKET_API in resources
    websocket_stage = config.api_gateway_stage
    if QUEUE not in resources:
        raise PackagingError(f"no {QUEUE} queue in the template (infra/eval-runner.json)")
    env = stack_environment(has_websocket=has_websocket, websocket_stage=websocket_stage)

    patch: dict[str, Any] = {"Resources": {}}
    out = patch["Resources"]
    for name, function in functions_of(template).items():
        try:
            grants = access_of(name)
        except UnconfiguredFunction as exc:
            raise PackagingError(str(exc)) from None
        role = function["Properties"].get("Role")
        if not (isinstance(role, dict) and "Fn::GetAtt" in role):
            raise PackagingError(f"{name}: its role is not managed in this template ({role!r}); "
                                 "keep manage_iam_role on so the least-privilege policy applies")
        role_id = role["Fn::GetAtt"][0]
        if role_id in out:
            raise PackagingError(f"{name} shares role {role_id} with another function; every function needs "
                                 "its own (give it its own iam_policy_file in .chalice/config.json)")
        group = log_group_id(name)
        fn_patch: dict[str, Any] = {"Properties": {
            "Environment": {"Variables": dict(env)},
            "LoggingConfig": {"LogGroup": {"Ref": group}},
            "Tracing": {"Ref": "Tracing"},
        }}
        for event_name in sqs_events(function):
            # Chalice only knows the queue by name; point every SQS source at the stack's queue (a string
            # inside the generated Fn::Sub: the merge cannot swap intrinsic types).
            fn_patch["Properties"].setdefault("Events", {})[event_name] = {"Properties": {
                "Queue": _sub_ref(f"{QUEUE}.Arn"),
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            }}
        out[name] = fn_patch
        # Named after the stack and the function, not the function's generated name, so the role can
        # name it without a cycle (role -> log group, function -> role and log group).
        out[group] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {"LogGroupName": _sub_ref("AWS::StackName", f"-{name}", prefix="/aws/lambda/"),
                           "RetentionInDays": {"Ref": "LogRetentionInDays"}},
        }
        targets = stack_targets(name, has_websocket=has_websocket, websocket_stage=websocket_stage,
                                secret_prefix=secret_prefix)
        out[role_id] = {"Properties": {
            "Policies": [{"PolicyName": f"{role_id}Policy", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": role_statements(grants, targets)}}],
            "ManagedPolicyArns": {"Fn::If": ["TracingActive", [_sub_ref(
                "AWS::Partition", ":iam::aws:policy/AWSXRayDaemonWriteAccess", prefix="arn:")],
                {"Ref": "AWS::NoValue"}]},
        }}
    return patch

