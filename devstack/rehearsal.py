"""`make deploy-rehearsal STAGE=…`: the deploy rehearsed offline, on a moto server, start to finish.

Steps (each recorded in `build/<stage>/rehearsal.json`, and the first failure ends the run non-zero
with a message naming the function, variable or resource at fault):

1. package the stage (`devstack/package/`: template, zip with bytecode, cfn-lint of sam.json);
2. upload the zip to an artifact bucket on moto and expand the SAM transform offline with
   aws-sam-translator (moto has no transforms), then cfn-lint the expanded template too, and run
   checkov on the packaged template (skips and their reasons: `infra/checkov-skips.json`);
3. create the stack on moto (its known gaps patched in this process: `devstack/moto_patches.py`),
   and check that every function's resource variables name resources of *this* stack;
4. cold-start every deployed function in its own interpreter (`devstack/coldstart_harness.py`) with
   its deployed handler path and environment, against the stack on moto, from the extracted package
   on a read-only-like directory: the call must succeed, log structured lines with the Lambda
   context, flush its `ColdStart` metric, and compile no module at import (the zip's bytecode);
5. update the stack with a changed parameter, and check the functions' environment followed;
6. the `chalice deploy` path: `make infra`'s data stack on the same moto, the stage config written
   into a copy of the project, then `chalice deploy` against moto (what it created, or where moto
   stopped it);
7. delete the stack.

Lambda invocation through moto needs Docker, hence step 4's subprocess. `--fault` seeds one of the
faults the rehearsal must catch (a wrong handler path, a missing environment variable, a resource
outside the stack) into the expanded template, for the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack import package as pkg
from devstack.access import PARAMETER_ENV, RESOURCE_ENV

ROOT = pkg.ROOT
REGION = "us-east-1"
ARTIFACT_BUCKET = "eval-runner-rehearsal-artifacts"
CHECKOV_SKIPS = ROOT / "infra" / "checkov-skips.json"
HARNESS = Path(__file__).resolve().parent / "coldstart_harness.py"
FAULTS = ("wrong-handler", "missing-env", "foreign-resource")
# Parameter values a deployer would pass (the prod stage requires the OIDC three).
REHEARSAL_PARAMETERS = {
    "JwksUrl": "https://idp.rehearsal.example.com/.well-known/jwks.json",
    "JwtIssuer": "https://idp.rehearsal.example.com",
    "JwtAudience": "rehearsal-client",
    "AllowedBaseUrlHosts": "",
}
UPDATE_PARAMETER = ("AllowedBaseUrlHosts", "llm-gateway.rehearsal.internal")

NOT_COVERED = [
    "CloudFormation's own SAM transform: moto has none, so the template is expanded offline with "
    "aws-sam-translator (the same library the service runs) and the expanded template is deployed",
    "the WebSocket API (AWS::ApiGatewayV2::*), the session bucket policy and AWS::ApiGateway::Account: moto's "
    "CloudFormation skips them, so WEBSOCKET_API_ID resolves to the logical id and the WebSocket handlers are "
    "cold-started with synthetic events only",
    "REST stage settings (throttling, access log, tracing): moto creates no stage from SAM's AWS::ApiGateway::Stage "
    "settings; they are checked in the template (devstack/package/checks.py check_template, tests) and by checkov",
    "IAM enforcement: moto creates the roles with their policies but authorises every call; the policies are "
    "checked statically (tests/unit/test_package_template.py, tests/unit/test_deploy_paths.py)",
    "table SSE/TTL/PITR, bucket public-access block and lifecycle, parameter AllowedPattern/AllowedValues and "
    "CAPABILITY_IAM: moto does not apply or enforce them",
    "Lambda invocation: moto needs Docker for it; each handler is imported and called in a subprocess instead",
    "the Lambda architecture: compiled extension modules in the zip are arm64 wheels; the cold start swaps in the "
    "host's wheels of the same versions (listed under cold_start_environment.replaced_for_host)",
]


class RehearsalFailed(RuntimeError):
    """A step failed; the message says which and why."""


@dataclass
class Report:
    stage: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    cold_started: list[dict[str, Any]] = field(default_factory=list)
    chalice_deploy: dict[str, Any] = field(default_factory=dict)
    not_covered: list[str] = field(default_factory=lambda: list(NOT_COVERED))
    checks: list[dict[str, Any]] = field(default_factory=list)
    moto_patches: dict[str, str] = field(default_factory=dict)
    bytecode: dict[str, Any] = field(default_factory=dict)
    cold_start_environment: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append({"check": name, "ok": ok, "detail": detail})
        if not ok:
            self.failures.append(f"{name}: {detail}")

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "ok": not self.failures, "failures": self.failures, "steps": self.steps,
                "cold_started": self.cold_started, "chalice_deploy": self.chalice_deploy,
                "not_covered": self.not_covered, "checks": self.checks, "moto_patches": self.moto_patches,
                "bytecode": self.bytecode, "cold_start_environment": self.cold_start_environment,
                "seconds": self.seconds}


# -- moto -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """This process's own moto server, with the rehearsal's patches; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    from devstack import moto_patches

    moto_patches.apply()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        # localhost, not 127.0.0.1: moto resolves a TemplateURL's bucket from the host name.
        yield f"http://localhost:{port}"
    finally:
        server.stop()


def _client(service: str, endpoint: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="rehearsal",
                        aws_secret_access_key="rehearsal")


def _wait(cloudformation: Any, stack: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found: dict[str, Any] = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        except cloudformation.exceptions.ClientError as exc:
            if "does not exist" in str(exc):
                return {"StackStatus": "DELETE_COMPLETE"}
            raise
        if not found["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _failure_events(cloudformation: Any, stack: str) -> str:
    events = cloudformation.describe_stack_events(StackName=stack)["StackEvents"]
    failed = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}" for e in events
              if e["ResourceStatus"].endswith("_FAILED")]
    return "; ".join(failed[:5])


# -- the template -----------------------------------------------------------------------------------

def expand(template: dict[str, Any], code_uri: str, parameters: dict[str, str]) -> dict[str, Any]:
    """The SAM transform, offline (needs AWS_DEFAULT_REGION): what CloudFormation would deploy."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        # The template names no SAM policy templates or managed policies by name.
        def load(self) -> dict[str, str]:
            return {}

        def get(self, *_args: Any, **_kwargs: Any) -> None:
            return None

    template = json.loads(json.dumps(template))
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = code_uri
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    expanded: dict[str, Any] = transform(template, parameters, NoManagedPolicies())
    return expanded


def seed_fault(expanded: dict[str, Any], fault: str) -> str:
    """Breaks the expanded template the way a real mistake would; returns what was broken."""
    functions = {n: r for n, r in expanded["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
    worker = next(n for n, r in functions.items()
                  if "eval_worker" in r["Properties"]["Handler"])
    props = functions[worker]["Properties"]
    if fault == "wrong-handler":
        props["Handler"] = "chalicelib.worker.eval_worker.eval_wroker"
        return f"{worker}: Handler chalicelib.worker.eval_worker.eval_wroker"
    if fault == "missing-env":
        del props["Environment"]["Variables"]["EVAL_QUEUE_URL"]
        return f"{worker}: no EVAL_QUEUE_URL"
    if fault == "foreign-resource":
        props["Environment"]["Variables"]["EVAL_TABLE_NAME"] = "eval-runner-shared-table"
        return f"{worker}: EVAL_TABLE_NAME=eval-runner-shared-table"
    raise ValueError(f"unknown fault {fault!r} (one of {', '.join(FAULTS)})")


def run_checkov(template: Path, checkov: str | None) -> tuple[bool, str, dict[str, Any]]:
    """checkov on the packaged template, every skip from infra/checkov-skips.json (with its reason)."""
    skips = {k: v for k, v in json.loads(CHECKOV_SKIPS.read_text()).items() if not k.startswith("_")}
    local = ROOT / ".local" / "checkov" / "bin" / "checkov"
    binary = checkov or os.environ.get("CHECKOV") or (str(local) if local.exists() else shutil.which("checkov"))
    if not binary:
        return False, "checkov not found: run `make deploy-rehearsal` (it installs checkov into .local/checkov)", {}
    cmd = [binary, "--framework", "cloudformation", "--skip-download", "--quiet", "--compact", "-o", "json",
           "-f", str(template), "--skip-check", ",".join(sorted(skips))]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return False, f"checkov exit {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}", {}
    results = (data[0] if isinstance(data, list) else data).get("results", {})
    summary = (data[0] if isinstance(data, list) else data).get("summary", {})
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results.get("failed_checks", [])]
    info = {"passed": summary.get("passed"), "failed": summary.get("failed"), "skipped": sorted(skips)}
    return not failed, "; ".join(failed) if failed else "", info


# -- cold starts --------------------------------------------------------------------------------------

HOST_WHEELS = ROOT / ".local" / "host-wheels"


def _distributions(code_dir: Path) -> dict[str, tuple[str, str]]:
    """Top-level name in the package → (distribution, version), from the wheels' RECORD files."""
    owners: dict[str, tuple[str, str]] = {}
    for record in code_dir.glob("*.dist-info/RECORD"):
        meta = (record.parent / "METADATA").read_text(errors="replace")
        name = next((line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Name:")), "")
        version = next((line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Version:")), "")
        for line in record.read_text().splitlines():
            top = line.split(",", 1)[0].split("/", 1)[0]
            if top and not top.endswith(".dist-info"):
                owners.setdefault(top, (name, version))
    return owners


# ELF e_machine of the architectures Lambda runs (arm64) and hosts we run on.
_ELF_MACHINES = {"x86_64": 0x3E, "aarch64": 0xB7}


def _foreign_elf(path: Path, host: str) -> bool:
    """A shared object built for another machine than this host: told by its ELF header, not its name
    (an `abi3.so`, like cryptography's, names no architecture)."""
    with path.open("rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF" or host not in _ELF_MACHINES:
        return False
    return int.from_bytes(header[18:20], "little" if header[5] == 1 else "big") != _ELF_MACHINES[host]


def extract_code(zip_path: Path, dest: Path) -> list[str]:
    """The package as Lambda sees it in /var/task. Its compiled extension modules are built for Lambda's
    arm64; each distribution that has one is replaced by the host's wheel of the *same version* (pip,
    cached in .local/host-wheels/), so the cold start runs the zip's versions. Returns what was replaced."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(dest)
    host = platform.machine()
    tops = {p.relative_to(dest).parts[0] for p in dest.rglob("*.so*") if _foreign_elf(p, host)}
    owners = _distributions(dest)
    replaced = []
    for dist, version in sorted({owners[t] for t in tops if t in owners}):
        cache = HOST_WHEELS / f"{dist}-{version}-{host}"
        if not cache.is_dir():
            partial = cache.with_name(cache.name + f".{os.getpid()}.tmp")
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                   "--no-deps", "--only-binary=:all:", "--target", str(partial),
                                   f"{dist}=={version}"], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RehearsalFailed(f"cannot fetch the host's wheel of {dist}=={version} for the cold start "
                                      f"(the package index is needed once): {proc.stderr.strip()[-500:]}")
            partial.replace(cache)
        for top in {t for t, owner in owners.items() if owner == (dist, version)}:
            target = dest / top
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        for item in cache.iterdir():
            if item.name.endswith(".dist-info") or item.name == "bin":
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, dest / item.name)
        replaced.append(f"{dist}=={version}")
    return replaced


def synthetic_event(kind: str, function: str, endpoint_queue_arn: str) -> tuple[dict[str, Any], str]:
    """An event this kind of function gets in AWS, and what a healthy answer looks like."""
    if kind == "api":
        return ({"resource": "/health", "path": "/health", "httpMethod": "GET",
                 "headers": {"Host": "rehearsal.execute-api.local", "Origin": "https://dash.rehearsal.example.com"},
                 "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
                 "pathParameters": None, "stageVariables": None, "body": None, "isBase64Encoded": False,
                 "requestContext": {"resourcePath": "/health", "httpMethod": "GET", "path": "/api/health",
                                    "stage": "api", "requestId": "rehearsal", "identity": {"sourceIp": "127.0.0.1"}}},
                "statusCode 200")
    if kind == "worker":
        body = json.dumps({"tenant": "rehearsal", "eval_run_id": "evr_rehearsal0000000000000000",
                           "dispatched_at": "2026-12-04T00:00:00Z"})
        return ({"Records": [{"messageId": "rehearsal-1", "receiptHandle": "r", "body": body, "attributes": {},
                              "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False)
                              .hexdigest(), "eventSource": "aws:sqs", "eventSourceARN": endpoint_queue_arn,
                              "awsRegion": REGION}]},
                "no batchItemFailures")
    if kind == "websocket":
        route = {"WebsocketConnect": "$connect", "WebsocketMessage": "$default"}.get(function, "$disconnect")
        event: dict[str, Any] = {"requestContext": {"routeKey": route, "eventType": route.strip("$").upper(),
                                                    "connectionId": "rehearsal-conn", "apiId": "rehearsal",
                                                    "domainName": "rehearsal.execute-api.local", "stage": "api",
                                                    "requestId": "rehearsal"},
                                 "isBase64Encoded": False}
        if route == "$default":
            event["body"] = json.dumps({"action": "heartbeat"})
        return event, ("statusCode 401 (no token)" if route == "$connect" else "statusCode 200")
    if kind == "schedule":
        return ({"version": "0", "id": "rehearsal-schedule", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": "2026-12-04T00:00:00Z", "region": REGION,
                 "resources": [f"arn:aws:events:{REGION}:123456789012:rule/{function}"], "detail": {}},
                "no error")
    return {}, "no error"


def _healthy(kind: str, function: str, response: Any) -> bool:
    if kind == "api":
        return isinstance(response, dict) and response.get("statusCode") == 200
    if kind == "worker":
        return isinstance(response, dict) and response.get("batchItemFailures") == []
    if kind == "websocket":
        expected = 401 if function == "WebsocketConnect" else 200
        return isinstance(response, dict) and response.get("statusCode") == expected
    return True


def cold_start(function: str, kind: str, configuration: dict[str, Any], code_dir: Path, endpoint: str,
               queue_arn: str, *, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One fresh interpreter, the deployed handler and environment; returns the cold_started entry."""
    deployed_env = dict(configuration.get("Environment", {}).get("Variables", {}))
    name = configuration["FunctionName"]
    env = {
        **deployed_env,
        # What the Lambda runtime sets, plus the endpoint of the stack on moto.
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal",
        "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(configuration.get("MemorySize", 128)),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "LAMBDA_TASK_ROOT": str(code_dir), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **(extra_env or {}),
    }
    event, expected = synthetic_event(kind, function, queue_arn)
    spec = {"handler": configuration["Handler"], "code_dir": str(code_dir), "event": event,
            "context": {"function_name": name, "memory_mb": configuration.get("MemorySize", 128),
                        "function_arn": configuration.get("FunctionArn", ""),
                        "timeout_seconds": min(60, int(configuration.get("Timeout", 3))),
                        "log_group": configuration.get("LoggingConfig", {}).get("LogGroup", "")}}
    before = {p for p in code_dir.rglob("*.pyc")}
    with tempfile.TemporaryDirectory(prefix="coldstart-") as tmp:
        # A copy outside the repository, run isolated (-I): only the package and the runtime's libraries.
        harness = Path(tmp) / "harness.py"
        shutil.copyfile(HARNESS, harness)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-I", str(harness)], input=json.dumps(spec), capture_output=True,
                              text=True, cwd=code_dir, env=env, timeout=120, check=False)
        wall = time.perf_counter() - started
    compiled = sorted(str(p.relative_to(code_dir)) for p in set(code_dir.rglob("*.pyc")) - before)
    lines = proc.stdout.splitlines()
    marker = next((line for line in reversed(lines) if line.startswith("REHEARSAL-RESULT ")), None)
    result: dict[str, Any] = json.loads(marker[len("REHEARSAL-RESULT "):]) if marker else {
        "ok": False, "error": f"the interpreter exited {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    records = []
    for line in lines:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    logs = [r for r in records if "_aws" not in r and "level" in r]
    metrics = [r for r in records if "_aws" in r]
    problems = []
    if not result.get("ok"):
        problems.append(result.get("error", "failed"))
    elif not _healthy(kind, function, result.get("response")):
        problems.append(f"answered {json.dumps(result.get('response'))[:300]}, expected {expected}")
    if result.get("ok"):
        context_logs = [r for r in logs if r.get("function_name") == name
                        and r.get("function_request_id") == result.get("request_id") and "cold_start" in r]
        if not context_logs:
            problems.append("no structured log line with its Lambda context (function_name, request id, cold_start)")
        if not any("ColdStart" in json.dumps(m["_aws"]) and m.get("function_name") == name for m in metrics):
            problems.append("no ColdStart metric flushed (EMF) for this function")
    if compiled:
        problems.append(f"{len(compiled)} modules compiled at cold start (bytecode missing or stale), "
                        f"e.g. {compiled[:3]}")
    for path in set(code_dir.rglob("*.pyc")) - before:
        path.unlink()
    return {"function": function, "ok": not problems,
            "detail": "; ".join(problems) if problems else
            f"{expected}; {len(logs)} log lines with context, {len(metrics)} EMF blobs; import "
            f"{result.get('import_seconds')}s, invoke {result.get('invoke_seconds')}s",
            "handler": configuration["Handler"], "function_name": name,
            "import_seconds": result.get("import_seconds"), "invoke_seconds": result.get("invoke_seconds"),
            "wall_seconds": round(wall, 3), "log_lines": logs[:3], "metrics": [m.get("_aws") for m in metrics][:2],
            "stderr": proc.stderr.strip()[-800:] if problems else ""}


def _bytecode_effect(code_dir: Path, configuration: dict[str, Any], endpoint: str, queue_arn: str,
                     rounds: int = 3) -> dict[str, Any]:
    """The API handler's cold import with the package's bytecode vs without it (a read-only /var/task:
    every module compiled on every cold start), interleaved rounds, medians."""
    bare = code_dir.parent / "code-without-pyc"
    if bare.exists():
        shutil.rmtree(bare)
    shutil.copytree(code_dir, bare, ignore=shutil.ignore_patterns("__pycache__"))
    with_pyc: list[float] = []
    without: list[float] = []
    for _ in range(rounds):
        for target, sink, extra in ((code_dir, with_pyc, {}), (bare, without, {"PYTHONDONTWRITEBYTECODE": "1"})):
            entry = cold_start(API, "api", configuration, target, endpoint, queue_arn, extra_env=extra)
            if entry.get("import_seconds") is not None:
                sink.append(float(entry["import_seconds"]))
    shutil.rmtree(bare)

    def median(values: list[float]) -> float | None:
        return sorted(values)[len(values) // 2] if values else None

    a, b = median(with_pyc), median(without)
    return {"method": f"API handler import (app.app) in a fresh interpreter, {rounds} interleaved rounds, median; "
                      "without = same package minus __pycache__ and PYTHONDONTWRITEBYTECODE=1 (a read-only code "
                      "directory)",
            "import_seconds_with_pyc": a, "import_seconds_without_pyc": b,
            "speedup": round(b / a, 2) if a and b else None, "rounds_with": with_pyc, "rounds_without": without}


API = pkg.API_HANDLER


# -- the run ------------------------------------------------------------------------------------------

def _resource_env_check(report: Report, functions: dict[str, dict[str, Any]], physical: dict[str, str],
                        stack: str) -> None:
    """Every resource variable must name this stack's resource (the one its intrinsic refers to)."""
    for function, configuration in functions.items():
        variables = configuration.get("Environment", {}).get("Variables", {})
        for var, (intrinsic, _output) in RESOURCE_ENV.items():
            logical = intrinsic.get("Ref") or intrinsic["Fn::GetAtt"][0]
            value = variables.get(var)
            own = physical.get(logical, "")
            if value is None:
                report.check(f"{function} environment", False, f"{var} is not set (the app refuses to start)")
            elif not own or own.rstrip("/").split("/")[-1].split(":")[-1] not in value:
                report.check(f"{function} {var}", False,
                             f"{value!r} is not a resource of stack {stack} (expected {logical}: {own})")


def rehearse(stage: str, *, fault: str | None = None, checkov: str | None = None, bytecode_rounds: int = 3,
             chalice_path: bool = True, with_checkov: bool = True, out_dir: Path | None = None) -> Report:
    started = time.monotonic()
    report = Report(stage=stage)
    out = out_dir or pkg.BUILD_DIR / stage
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    sam_file = pkg.fresh_build(stage, out)
    if sam_file is None or not (out / "deployment.zip").exists():
        result = pkg.package(stage, out)
        report.steps.append({"step": "package", "status": "OK", "detail": f"cfn-lint {result.lint.splitlines()[0]}, "
                             f"{result.zip_bytes} bytes, {result.pyc_files} .pyc"})
    else:
        report.steps.append({"step": "package", "status": "OK", "detail": "reused the fresh build/<stage>"})
    template = json.loads((out / "sam.json").read_text())
    zip_path = out / "deployment.zip"
    rehearsal_dir = out / "rehearsal"
    if rehearsal_dir.exists():
        shutil.rmtree(rehearsal_dir)
    rehearsal_dir.mkdir()

    if with_checkov:
        ok, detail, info = run_checkov(out / "sam.json", checkov)
        report.steps.append({"step": "checkov", "status": "OK" if ok else "FAILED", "detail": detail, **info})
        report.check("checkov", ok, detail)

    stack = f"eval-runner-{stage}-rehearsal"
    with moto_server() as endpoint:
        from devstack import moto_patches

        report.moto_patches = dict(moto_patches.PATCHES)
        s3 = _client("s3", endpoint)
        s3.create_bucket(Bucket=ARTIFACT_BUCKET)
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        code_key = f"{stage}/{digest}.zip"
        s3.upload_file(str(zip_path), ARTIFACT_BUCKET, code_key)
        parameters = {k: v for k, v in REHEARSAL_PARAMETERS.items() if k in template.get("Parameters", {})}
        expanded = expand(template, f"s3://{ARTIFACT_BUCKET}/{code_key}", parameters)
        seeded = seed_fault(expanded, fault) if fault else None
        expanded_file = rehearsal_dir / "expanded.json"
        expanded_file.write_text(json.dumps(expanded, indent=1))
        lint_code, lint_output = pkg.run_cfn_lint(expanded_file)
        report.steps.append({"step": "cfn-lint expanded", "status": "OK" if not lint_code & 3 else "FAILED",
                             "detail": lint_output[-1500:]})
        report.check("cfn-lint of the expanded template", not lint_code & 3, lint_output[-1500:])
        template_key = f"{stage}/{digest}.template.json"
        s3.put_object(Bucket=ARTIFACT_BUCKET, Key=template_key, Body=expanded_file.read_bytes())
        template_url = f"{endpoint}/{ARTIFACT_BUCKET}/{template_key}"

        cfn = _client("cloudformation", endpoint)
        cfn.create_stack(StackName=stack, TemplateURL=template_url, Capabilities=["CAPABILITY_IAM"],
                         Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
        created = _wait(cfn, stack)
        report.steps.append({"step": "create", "status": created["StackStatus"],
                             "detail": _failure_events(cfn, stack) if "FAILED" in created["StackStatus"] else ""})
        report.check("create", created["StackStatus"] == "CREATE_COMPLETE", created.get("StackStatusReason", ""))
        if created["StackStatus"] != "CREATE_COMPLETE":
            return _finish(report, out, started, seeded)

        physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
                    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack)
                    for r in page["StackResourceSummaries"] if "LogicalResourceId" in r}
        lam = _client("lambda", endpoint)
        functions = {n: lam.get_function_configuration(FunctionName=physical[n])
                     for n, r in expanded["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
        _resource_env_check(report, functions, physical, stack)
        queue_url = physical.get(pkg.QUEUE, "")
        queue_arn = _client("sqs", endpoint).get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"] if queue_url else ""

        code_dir = rehearsal_dir / "code"
        replaced = extract_code(zip_path, code_dir)
        report.cold_start_environment = {
            "python": platform.python_version(), "machine": platform.machine(), "replaced_for_host": replaced,
            "code_dir": str(code_dir.relative_to(ROOT)) if code_dir.is_relative_to(ROOT) else str(code_dir)}
        kinds = {n: ("schedule" if any(e.get("Type") == "Schedule" for e in r["Properties"].get("Events", {}).values())
                     else pkg.function_kind(n, r))
                 for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
        for function, configuration in sorted(functions.items()):
            entry = cold_start(function, kinds.get(function, "other"), configuration, code_dir, endpoint, queue_arn)
            report.cold_started.append(entry)
            report.check(f"cold start {function}", entry["ok"], entry["detail"])
        if bytecode_rounds and API in functions and not fault:
            report.bytecode = _bytecode_effect(code_dir, functions[API], endpoint, queue_arn, bytecode_rounds)

        param, value = UPDATE_PARAMETER
        if param in parameters:
            updated = dict(parameters, **{param: value})
            cfn.update_stack(StackName=stack, TemplateURL=template_url, Capabilities=["CAPABILITY_IAM"],
                             Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in updated.items()])
            status = _wait(cfn, stack)["StackStatus"]
            env_after = lam.get_function_configuration(FunctionName=physical[API])["Environment"]["Variables"]
            followed = env_after.get(PARAMETER_ENV[param]) == value
            report.steps.append({"step": "update", "status": status,
                                 "detail": f"{param}={value}: APIHandler {PARAMETER_ENV[param]}="
                                           f"{env_after.get(PARAMETER_ENV[param])!r}"})
            report.check("update", status == "UPDATE_COMPLETE" and followed,
                         f"{status}; environment followed the parameter: {followed}")

        if chalice_path and not fault:
            from devstack.infra import rehearse_chalice_deploy

            report.chalice_deploy = rehearse_chalice_deploy(stage, endpoint, parameters, rehearsal_dir)
            report.check("chalice deploy path", bool(report.chalice_deploy.get("ok")),
                         str(report.chalice_deploy.get("detail", "")))

        cfn.delete_stack(StackName=stack)
        deleted = _wait(cfn, stack)
        report.steps.append({"step": "delete", "status": deleted["StackStatus"]})
        report.check("delete", deleted["StackStatus"] == "DELETE_COMPLETE", deleted.get("StackStatusReason", ""))
    return _finish(report, out, started, seeded)


def _finish(report: Report, out: Path, started: float, seeded: str | None) -> Report:
    report.seconds = round(time.monotonic() - started, 1)
    data = report.as_json()
    if seeded:
        data["seeded_fault"] = seeded
    (out / "rehearsal.json").write_text(json.dumps(data, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--fault", choices=FAULTS, help="seed a fault the rehearsal must catch")
    parser.add_argument("--checkov", help="the checkov executable (default: $CHECKOV, then PATH)")
    parser.add_argument("--bytecode-rounds", type=int, default=3,
                        help="rounds of the with/without bytecode import comparison (0 skips it)")
    parser.add_argument("--no-chalice", action="store_true", help="skip the `chalice deploy` path")
    args = parser.parse_args(argv)
    try:
        report = rehearse(args.stage, fault=args.fault, checkov=args.checkov,
                          bytecode_rounds=args.bytecode_rounds, chalice_path=not args.no_chalice)
    except (pkg.PackagingError, RehearsalFailed) as exc:
        print(f"deploy-rehearsal: {exc}", file=sys.stderr)
        return 1
    rel = os.path.relpath(pkg.BUILD_DIR / args.stage / "rehearsal.json", Path.cwd())
    for step in report.steps:
        print(f"  {step['step']:<18} {step['status']}")
    for entry in report.cold_started:
        print(f"  cold start {entry['function']:<20} {'ok' if entry['ok'] else 'FAILED'}: {entry['detail']}")
    if report.chalice_deploy:
        print(f"  chalice deploy      {report.chalice_deploy.get('summary', '')}")
    if report.failures:
        print(f"deploy-rehearsal FAILED ({report.seconds}s, {rel}):", file=sys.stderr)
        for failure in report.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(f"deploy-rehearsal ok ({report.seconds}s): {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
