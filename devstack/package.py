"""`make package STAGE=…`: the deployable CloudFormation/SAM template and zip in `build/<stage>/`.

Two merges over what `chalice package` generates, both with Chalice's own deep merge (a dict merges
into a dict; anything else, lists included, replaces):

1. `build/<stage>/infra-merge.json`, passed to `chalice package --merge-template`: the data plane of
   `infra/eval-runner.json`, the stage overlay of `infra/stages.json`, the static patches of
   `infra/chalice-overlay.json` (API Gateway error responses), and per-stage parameter defaults.
2. `build/<stage>/functions-merge.json`, computed from the generated template because its logical ids
   depend on the app (which websocket handlers, authorizers or pure lambdas exist): for every function
   the environment (table, bucket, queue, key, auth parameters, websocket API id), a log group with
   retention and a least-privilege role policy built from intrinsics; for the SQS worker
   `ReportBatchItemFailures` and its event source re-pointed at the CloudFormation queue (Chalice
   only knows the queue *name*). That `${EvalJobs.Arn}` already makes the worker depend on the
   queue, so no `DependsOn` (cfn-lint W3005 flags a redundant one).

Then the result is checked (`check_template`) and, unless `--no-lint`, run through cfn-lint.

It builds from a snapshot of the sources (others keep editing the tree). It needs a region (us-east-1
for the subprocess unless set) but no AWS credentials. The Lambda's manylinux wheels come from PyPI
the first time a requirements.txt is packaged (20-50 s) and from `.chalice/deployments/deps-*.zip`
afterwards (a few seconds, offline too); `--refresh-dependencies` downloads them again.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
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

ROOT = Path(__file__).resolve().parent.parent
INFRA_DIR = ROOT / "infra"
INFRA_TEMPLATE = INFRA_DIR / "eval-runner.json"
STAGE_OVERLAYS = INFRA_DIR / "stages.json"
CHALICE_OVERLAY = INFRA_DIR / "chalice-overlay.json"
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"
BUILD_DIR = ROOT / "build"
DEFAULT_REGION = "us-east-1"

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

# Worker Lambda timeout vs queue visibility: AWS recommends at least 6x (retries within a batch).
VISIBILITY_FACTOR = 6
# Services whose actions touch tenant data; a `*` resource on any of them fails the build.
DATA_SERVICES = frozenset({"secretsmanager", "kms", "dynamodb", "s3", "sqs", "events", "logs"})
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


class PackagingError(RuntimeError):
    """The template could not be built, or it breaks one of the invariants checked below."""


@dataclass
class PackageResult:
    stage: str
    out_dir: str
    template: str
    fingerprint: str
    template_only: bool
    zip_bytes: int = 0
    unzipped_bytes: int = 0
    files: int = 0
    chalice_seconds: float = 0.0
    total_seconds: float = 0.0
    reused_dependency_cache: bool = False
    functions: dict[str, str] = field(default_factory=dict)
    lint: str = "not run"
    # Bytecode compiled at package time (compile_bytecode): files, growth of the zip, seconds.
    pyc_files: int = 0
    pyc_zip_bytes: int = 0
    pyc_seconds: float = 0.0


# -- inputs ---------------------------------------------------------------------------------------

def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def deep_merge(patch: Any, base: Any) -> Any:
    """Chalice's `--merge-template` semantics, so both merges behave the same way."""
    from chalice.package import TemplateDeepMerger

    return TemplateDeepMerger().merge(copy.deepcopy(patch), copy.deepcopy(base))


def stage_config(stage: str, root: Path = ROOT) -> Any:
    """The chalice Config for `stage`, resolved the way `chalice package` resolves it."""
    from chalice.cli.factory import CLIFactory

    stages = _load(root / ".chalice" / "config.json").get("stages", {})
    if stage not in stages:
        raise PackagingError(f"stage {stage!r} is not in .chalice/config.json (known: "
                             f"{', '.join(sorted(stages))})")
    return CLIFactory(project_dir=str(root)).create_config_obj(chalice_stage_name=stage)


def _is_source(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"


def input_files(root: Path = ROOT) -> list[Path]:
    """What the package is built from, relative to `root`: what chalice zips (app.py, chalicelib/,
    vendor/, requirements.txt), its config and policies, and infra/."""
    files = [Path("app.py"), Path("requirements.txt")]
    files += sorted(p.relative_to(root) for p in (root / ".chalice").glob("*.json"))
    for tree in ("chalicelib", "vendor", "infra"):
        if (root / tree).is_dir():
            files += sorted(p.relative_to(root) for p in (root / tree).rglob("*") if _is_source(p))
    return [p for p in files if (root / p).is_file()]


def pinned_requirements(text: str) -> str:
    """requirements.txt with every requirement pinned to the version installed in this venv, so the
    Lambda ships exactly what the tests ran against (a dev tool's cap, e.g. aws-sam-translator's
    `pydantic~=2.13`, would otherwise test one version and ship another). A requirement that is not
    installed here keeps its range (and `make package` then ships what pip picks)."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    lines = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
            version = metadata.version(req.name)
        except (InvalidRequirement, metadata.PackageNotFoundError):
            lines.append(line)
            continue
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        marker = f"; {req.marker}" if req.marker else ""
        lines.append(f"{req.name}{extras}=={version}{marker}")
    return "\n".join(lines) + "\n"


def fingerprint(root: Path = ROOT) -> str:
    """Decides whether a build is fresh: the inputs plus this module (which shapes the output)."""
    digest = hashlib.sha256(Path(__file__).resolve().read_bytes())
    for rel in input_files(root):
        data = (root / rel).read_bytes()
        if rel == Path("requirements.txt"):
            data = pinned_requirements(data.decode()).encode()
        digest.update(str(rel).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def snapshot_project(dest: Path, *, with_dependencies: bool = True) -> Path:
    """A copy of the inputs in `dest/project`, so a build sees one consistent state of a tree others
    keep editing, and no `__pycache__` ends up in the zip or in chalice's cache key. The dependency
    cache `.chalice/deployments/` stays shared (chalice keys it on content)."""
    project = dest / "project"
    project.mkdir(parents=True)
    for rel in input_files(ROOT):
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, project / rel)
    if with_dependencies:
        (project / "requirements.txt").write_text(pinned_requirements((ROOT / "requirements.txt").read_text()))
        cache = ROOT / ".chalice" / "deployments"
        cache.mkdir(parents=True, exist_ok=True)
        (project / ".chalice" / "deployments").symlink_to(cache, target_is_directory=True)
    else:
        # Without the wheels `chalice package` runs offline; the zip is then useless and not kept.
        (project / "requirements.txt").write_text("")
    return project


@contextlib.contextmanager
def project_snapshot(*, with_dependencies: bool = True) -> Iterator[Path]:
    """`snapshot_project` in a temporary directory under build/ (same filesystem as the tree, so
    chalice's cache key, which depends on directory listing order, matches `make package`'s)."""
    BUILD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="snapshot-", dir=BUILD_DIR) as tmp:
        yield snapshot_project(Path(tmp), with_dependencies=with_dependencies)


# -- merge 1: static infra ------------------------------------------------------------------------

def data_plane_template(stage: str, root: Path = ROOT) -> dict[str, Any]:
    """infra/eval-runner.json with the stage overlay: the data resources and the stage parameters.
    The packaged template merges it; `make infra` deploys it as a stack of its own."""
    infra = root / INFRA_DIR.relative_to(ROOT)
    template: dict[str, Any] = _load(infra / INFRA_TEMPLATE.name)
    overlays = {k: v for k, v in _load(infra / STAGE_OVERLAYS.name).items() if not k.startswith("_")}
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
    chalice_overlay = {k: v for k, v in _load(infra / CHALICE_OVERLAY.name).items() if not k.startswith("_")}
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

def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items()
            if res.get("Type") == "AWS::Serverless::Function"}


def _sqs_events(function: dict[str, Any]) -> dict[str, dict[str, Any]]:
    events = function.get("Properties", {}).get("Events", {})
    return {name: ev for name, ev in events.items() if ev.get("Type") == "SQS"}


def function_kind(name: str, function: dict[str, Any]) -> str:
    if _sqs_events(function):
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
    for name, function in _functions(template).items():
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
        for event_name in _sqs_events(function):
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


# -- invariants -----------------------------------------------------------------------------------

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
    functions = _functions(template)

    workers = {n: f for n, f in functions.items() if _sqs_events(f)}
    if not workers:
        problems.append("no function consumes the eval job queue (is the worker blueprint registered?)")
    for name, function in workers.items():
        timeout = int(function["Properties"].get("Timeout", 3))
        for event_name, event in _sqs_events(function).items():
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


# -- running chalice package ----------------------------------------------------------------------

@contextlib.contextmanager
def _project_lock() -> Iterator[None]:
    """Serialises packaging in this tree: chalice writes its dependency zip in place, so a second run
    could otherwise 'reuse' a half-written one."""
    BUILD_DIR.mkdir(exist_ok=True)
    with (BUILD_DIR / ".package.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _chalice_command() -> list[str]:
    script = Path(sys.executable).with_name("chalice")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from chalice.cli import main; sys.exit(main())"]


def _run_chalice_package(project: Path, stage: str, merge_file: Path, out: Path) -> tuple[float, str]:
    env = dict(os.environ)
    if not (env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")):
        env["AWS_DEFAULT_REGION"] = DEFAULT_REGION
    env.pop("AWS_ENDPOINT_URL", None)
    cmd = [*_chalice_command(), "--project-dir", str(project), "package", "--stage", stage,
           "--merge-template", str(merge_file), str(out)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise PackagingError(f"chalice package failed (exit {proc.returncode}):\n{output}")
    return seconds, output


DEPENDENCY_CACHE = ROOT / ".chalice" / "deployments"


def _deployment_packager(project: Path, stage: str) -> tuple[Any, str]:
    from chalice.deploy.packager import LambdaDeploymentPackager
    from chalice.utils import UI, OSUtils

    config = stage_config(stage, project)
    packager = LambdaDeploymentPackager(osutils=OSUtils(), dependency_builder=None,  # type: ignore[arg-type]
                                        ui=UI(out=io.StringIO()), architecture=config.lambda_architecture)
    return packager, config.lambda_python_version


def _chalice_cache_zip(project: Path, stage: str) -> Path:
    """The zip `chalice package` looks for (and writes) in .chalice/deployments/ for this source."""
    packager, python_version = _deployment_packager(project, stage)
    return Path(packager.deployment_package_filename(str(project), python_version))


def _dependencies_zip(project: Path, stage: str) -> Path:
    """Where a zip with the wheels for this requirements.txt (+ runtime, architecture) is kept."""
    config = stage_config(stage, project)
    digest = hashlib.md5((project / "requirements.txt").read_bytes(), usedforsecurity=False).hexdigest()
    return DEPENDENCY_CACHE / f"deps-{digest}-{config.lambda_python_version}-{config.lambda_architecture}.zip"


def _seed_chalice_cache(project: Path, stage: str) -> bool:
    """Chalice keys its cached zip on requirements.txt *and* the app's source, so any code change
    means a fresh download of every wheel (20-50 s, and impossible offline). When the wheels for this
    requirements.txt were fetched before, put the zip chalice is about to look for in place with
    chalice's own `inject_latest_app`; it then prints 'Reusing existing deployment package'."""
    if (project / "vendor").exists():
        return False  # vendored files are not swapped by inject_latest_app
    target = _chalice_cache_zip(project, stage)
    deps = _dependencies_zip(project, stage)
    if target.exists() or not deps.exists():
        return False
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(deps, partial)
    _deployment_packager(project, stage)[0].inject_latest_app(str(partial), str(project))
    partial.replace(target)
    return True


def _remember_dependencies(project: Path, stage: str) -> None:
    built = _chalice_cache_zip(project, stage)
    deps = _dependencies_zip(project, stage)
    if built.exists() and not deps.exists() and not (project / "vendor").exists():
        partial = deps.with_name(f".{deps.name}.{os.getpid()}.tmp")
        shutil.copyfile(built, partial)
        partial.replace(deps)


def _forget_dependencies(project: Path, stage: str) -> None:
    for stale in (_dependencies_zip(project, stage), _chalice_cache_zip(project, stage)):
        stale.unlink(missing_ok=True)


def _prune_dependency_cache(keep: int = 2) -> None:
    """Keep the newest few zips of each kind (per-source ones are ~16 MB and one per code change)."""
    if not DEPENDENCY_CACHE.is_dir():
        return
    every = list(DEPENDENCY_CACHE.glob("*.zip"))
    for kind in ([p for p in every if p.name.startswith("deps-")],
                 [p for p in every if not p.name.startswith("deps-")]):
        for stale in sorted(kind, key=lambda p: p.stat().st_mtime, reverse=True)[keep:]:
            with contextlib.suppress(OSError):
                stale.unlink()


def package_index_reachable(timeout: float = 3.0) -> bool:
    """Whether pip's index answers; packaging downloads the Lambda's wheels from it."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(parsed.path).exists()
    host, port = parsed.hostname or "pypi.org", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def compile_bytecode(zip_path: Path, python_version: str) -> tuple[int, int]:
    """Adds `__pycache__/*.cpython-3XX.pyc` for every module of the deployment zip, compiled by this
    interpreter, which must be the Lambda runtime's version (a pyc of another minor version is
    ignored, i.e. dead weight). Unchecked-hash pycs (PEP 552): Python uses them without comparing the
    source's mtime, which Lambda's extraction does not preserve reliably, and never tries to rewrite
    them (the code directory is read-only, so a stale-looking timestamp pyc would mean compiling every
    module on every cold start). Returns (pyc files, bytes the zip grew by)."""
    import importlib.util
    from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]

    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if runtime != python_version:
        raise PackagingError(f"packaging runs on {runtime} but the Lambda runtime is {python_version}: run "
                             f"`make package` with Python {python_version[6:]} so the bytecode matches")
    before = zip_path.stat().st_size
    partial = zip_path.with_name(zip_path.name + ".pyc.tmp")
    compiled = 0
    with zipfile.ZipFile(zip_path) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
        names = set(source.namelist())
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, data)
            if not info.filename.endswith(".py"):
                continue
            folder, _, module = info.filename.rpartition("/")
            pyc_name = f"{folder + '/' if folder else ''}__pycache__/{module[:-3]}.{sys.implementation.cache_tag}.pyc"
            if pyc_name in names:
                continue
            try:
                code = compile(data, f"/var/task/{info.filename}", "exec", dont_inherit=True)
            except SyntaxError:
                continue  # e.g. a vendored file for another Python version: never imported here either
            pyc = zipfile.ZipInfo(pyc_name, date_time=info.date_time)
            pyc.external_attr = info.external_attr
            pyc.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(pyc, _code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False))
            compiled += 1
    partial.replace(zip_path)
    return compiled, zip_path.stat().st_size - before


def run_cfn_lint(template: Path) -> tuple[int, str]:
    """cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational, 1 fatal."""
    script = Path(sys.executable).with_name("cfn-lint")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "cfnlint"]
    proc = subprocess.run([*cmd, str(template)], capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def package(stage: str, out_dir: Path | None = None, *, source: Path | None = None, lint: bool = True,
            check: bool = True, template_only: bool = False,
            refresh_dependencies: bool = False) -> PackageResult:
    """Build `out_dir` (default `build/<stage>/`): sam.json, deployment.zip, the two merge files and
    manifest.json. `source` is a `snapshot_project` to build from (one is taken when omitted; pass
    the same one to build several stages from one state). `check=False` leaves the invariants to the
    caller (the tests assert each one). `template_only` packages the app without its dependencies
    and keeps no zip (template checks when the package index is unreachable). The wheels are
    downloaded once per requirements.txt; `refresh_dependencies` downloads them again."""
    started = time.monotonic()
    out = (out_dir or BUILD_DIR / stage).resolve()
    BUILD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"package-{stage}-", dir=BUILD_DIR) as tmp_name:
        tmp = Path(tmp_name)
        project = source or snapshot_project(tmp / "src", with_dependencies=not template_only)
        stage_config(stage, project)  # fail fast on an unknown stage
        digest = fingerprint(project)
        staging = tmp / "out"
        staging.mkdir()
        infra_file = staging / "infra-merge.json"
        infra_file.write_text(json.dumps(build_infra_merge(stage, project), indent=2) + "\n")
        with _project_lock():
            if refresh_dependencies and not template_only:
                _forget_dependencies(project, stage)
            seeded = not template_only and _seed_chalice_cache(project, stage)
            chalice_seconds, chalice_output = _run_chalice_package(project, stage, infra_file, staging)
            if not template_only:
                _remember_dependencies(project, stage)
                _prune_dependency_cache()

        sam_file = staging / "sam.json"
        generated = _load(sam_file)
        functions_merge = build_functions_merge(generated, stage, project)
        (staging / "functions-merge.json").write_text(json.dumps(functions_merge, indent=2) + "\n")
        template = deep_merge(functions_merge, generated)
        sam_file.write_text(json.dumps(template, indent=2) + "\n")

        problems = check_template(template) if check else []
        if problems:
            raise PackagingError("the packaged template breaks deploy invariants:\n  - "
                                 + "\n  - ".join(problems))

        result = PackageResult(
            stage=stage, out_dir=str(out), template=str(out / "sam.json"), fingerprint=digest,
            template_only=template_only, chalice_seconds=round(chalice_seconds, 1),
            reused_dependency_cache=seeded or "Reusing existing deployment package" in chalice_output,
            functions={n: function_kind(n, f) for n, f in _functions(template).items()})
        zip_path = staging / "deployment.zip"
        if template_only:
            zip_path.unlink(missing_ok=True)  # app-only code would fail at import: never deploy it
        else:
            compile_started = time.monotonic()
            result.pyc_files, result.pyc_zip_bytes = compile_bytecode(
                zip_path, stage_config(stage, project).lambda_python_version)
            result.pyc_seconds = round(time.monotonic() - compile_started, 1)
            with zipfile.ZipFile(zip_path) as archive:
                infos = archive.infolist()
            result.zip_bytes = zip_path.stat().st_size
            result.unzipped_bytes = sum(i.file_size for i in infos)
            result.files = len(infos)

        with _project_lock():
            if out.exists():
                shutil.rmtree(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging), str(out))

    if lint:
        code, output = run_cfn_lint(out / "sam.json")
        result.lint = f"exit {code}" + (f"\n{output}" if output else "")
        if code & 3:
            _write_manifest(out, result, started)
            raise PackagingError(f"cfn-lint found errors in {out / 'sam.json'}:\n{output}")
    _write_manifest(out, result, started)
    return result


def _write_manifest(out: Path, result: PackageResult, started: float) -> None:
    result.total_seconds = round(time.monotonic() - started, 1)
    (out / "manifest.json").write_text(json.dumps(asdict(result), indent=2) + "\n")


def fresh_build(stage: str, out_dir: Path | None = None) -> Path | None:
    """`out_dir/sam.json` if it was built from the current inputs, else None."""
    out = out_dir or BUILD_DIR / stage
    try:
        manifest = _load(out / "manifest.json")
    except (OSError, ValueError):
        return None
    if manifest.get("stage") != stage or manifest.get("fingerprint") != fingerprint():
        return None
    sam = out / "sam.json"
    return sam if sam.exists() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help="a stage of .chalice/config.json (dev, prod)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default build/<stage>)")
    parser.add_argument("--no-lint", action="store_true", help="skip cfn-lint")
    parser.add_argument("--refresh-dependencies", action="store_true",
                        help="download the Lambda's wheels again instead of reusing the cached ones")
    parser.add_argument("--template-only", action="store_true",
                        help="no dependencies, no zip: the template alone, without the package index")
    args = parser.parse_args(argv)
    try:
        result = package(args.stage, args.out, lint=not args.no_lint, template_only=args.template_only,
                         refresh_dependencies=args.refresh_dependencies)
    except PackagingError as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    rel = os.path.relpath(result.out_dir, Path.cwd())
    print(f"{rel}/sam.json: {len(result.functions)} functions "
          f"({', '.join(f'{n}={k}' for n, k in sorted(result.functions.items()))})")
    if result.template_only:
        print(f"{rel}: template only (no deployment.zip)")
    else:
        print(f"{rel}/deployment.zip: {result.zip_bytes / 1e6:.1f} MB zipped, "
              f"{result.unzipped_bytes / 1e6:.1f} MB unzipped, {result.files} files, of which "
              f"{result.pyc_files} unchecked-hash .pyc (+{result.pyc_zip_bytes / 1e6:.1f} MB, "
              f"{result.pyc_seconds:.1f}s)")
    cache = ("none: template only" if result.template_only else
             "reused" if result.reused_dependency_cache else "downloaded from the package index")
    print(f"chalice package: {result.chalice_seconds:.1f}s (dependencies {cache}); "
          f"total {result.total_seconds:.1f}s; cfn-lint: {result.lint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
