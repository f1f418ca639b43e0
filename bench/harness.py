"""The shared benchmark harness: what every `bench/*` script needs besides its own measurement.

- The Lambda package: `package_build(stage)` (build/<stage>/deployment.zip, reused while fresh).
- AWS and the vendor: `aws_and_vendor()` (moto server + fake vendor as their own processes, the stack's
  resources provisioned, the service's environment), `local_stack()` (the whole `make run` stack),
  `hermetic_aws_env()` (in-process moto), tokens, the fake vendor's settings body, a sample trace.
- The worker: `sqs_record`/`drain_queue` (a queued job as the Lambda SQS event the worker gets) and
  `worker_context` (a Lambda context with a real countdown).
- Timing: `fresh_python` (one fresh interpreter's wall and CPU time), `interleaved` (rounds that run
  every case once, in turn, so load from other processes hits all cases alike), `median`,
  `percentile`, `rss_mb` and `peak_rss_mb` (a child's own memory), `process_cpu_seconds`, `machine_load`.
- Output: `table` (a markdown table) and `quiet_stdout` (the service's log lines and EMF metrics
  kept out of the section a bench prints).

A bench script is run as `python bench/<name>/bench_<name>.py` (by `python -m bench.run_all --only
<name>`, which puts the repository on `PYTHONPATH`); one run directly puts it there itself before
importing this module:

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.harness import ...  # noqa: E402
"""

from __future__ import annotations

import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from devstack.sample_sessions import sample_trace as sample_trace  # the benches' session, shared with tests

if TYPE_CHECKING:
    from devstack.lambda_context import LocalLambdaContext
    from tests.e2e.stack import LocalStack

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:000000000000:eval-runner-jobs"
FAKE_MODEL = "claude-sonnet-4-6"
T = TypeVar("T")


# -- output -------------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A markdown table. `align` has one letter per column: `l` (`---`) or `r` (`---:`); default all `l`."""
    marks = [("---:" if a == "r" else "---") for a in (align or "l" * len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 (Powertools binds its handler to the stdout of import time), so only the
    markdown section reaches stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# -- timing -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One measurement: wall seconds and CPU seconds (user + system)."""

    wall: float
    cpu: float


def fresh_python(args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path = ROOT,
                 stdin: str | None = None, timeout: float = 600) -> tuple[Sample, str]:
    """Runs `python <args>` in a fresh interpreter; returns its wall and CPU time (from the children's
    rusage) and its stdout. Fails with the child's stderr when it exits non-zero."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=dict(env) if env is not None else None,
                          input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)[:200]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Sample(wall, cpu), proc.stdout


def interleaved(cases: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Runs every case once per round, in turn, `rounds` times: a burst of load from other processes
    then hits all cases alike instead of one of them."""
    out: dict[str, list[T]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            out[name].append(case())
    return out


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0-1) of already sorted values; NaN when there are none."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mb() -> float:
    """This process's resident set size now (`VmRSS`), in MiB."""
    return _status_mib("VmRSS")


def peak_rss_mb() -> float:
    """This process's peak resident set size (`VmHWM`), in MiB. Not `ru_maxrss`: Linux carries a parent's
    peak over fork and exec into the child's `ru_maxrss`, so a fresh child of a large benchmark process
    would report the parent's size."""
    return _status_mib("VmHWM")


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_load() -> float:
    """The 1-minute load average (this machine is shared: say how busy it was next to the figures)."""
    return os.getloadavg()[0]


# -- AWS, the vendor, the stack -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Polls `url` until it answers below 500; fails if `proc` exits first."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def hermetic_aws_env() -> None:
    """Fake credentials, no endpoint override: everything stays inside in-process moto (mirrors
    tests/conftest.py)."""
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION})
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        os.environ.pop(var, None)


@dataclass(frozen=True)
class Services:
    """What `aws_and_vendor()` started: the service's environment and the two endpoints."""

    env: dict[str, str]
    aws_url: str
    vendor_url: str


# The local stack's dev settings: HS256 tokens and a vendor base URL on loopback over http.
DEV_JWT_SECRET = "bench-dev-secret-0123456789abcdef0123456789"
SERVICE_ENV = {"STAGE": "dev", "AUTH_MODE": "hs256", "DEV_JWT_SECRET": DEV_JWT_SECRET,
               "ALLOWED_BASE_URL_HOSTS": "127.0.0.1,localhost", "ALLOW_HTTP_BASE_URLS": "true",
               "MAX_RUN_TIMEOUT_SECONDS": "840", "WORKER_GRACE_SECONDS": "60",
               "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_METRICS_DISABLED": "true"}


@contextmanager
def aws_and_vendor(stack_name: str = "eval-runner-bench", *, vendor: bool = True) -> Iterator[Services]:
    """moto server (and the fake vendor) as their own processes on free loopback ports, the stack's
    resources provisioned from the infra template; yields the environment a service process (API or
    worker) needs to use them. Both processes are stopped on exit."""
    aws_port, vendor_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update({"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": REGION,
                 "AWS_DEFAULT_REGION": REGION, "PYTHONPATH": str(ROOT)})
    quiet = {"cwd": ROOT, "env": base, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([sys.executable, "-m", "devstack.moto_server", "--port", str(aws_port)], **quiet)]
    if vendor:
        procs.append(subprocess.Popen([sys.executable, "-m", "devstack.fake_vendor", "--port", str(vendor_port)],
                                      **quiet))
    try:
        aws_url, vendor_url = f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{vendor_port}"
        wait_until_serving(f"{aws_url}/moto-api/", procs[0])
        if vendor:
            wait_until_serving(f"{vendor_url}/_fake/stats", procs[1])
        import boto3

        from devstack.resources import provision

        session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION)
        resources = provision(session, stack_name=stack_name, endpoint_url=aws_url)
        env = {**base, **resources.env(stage="dev"), "AWS_ENDPOINT_URL": aws_url, **SERVICE_ENV}
        if vendor:
            env["FAKE_VENDOR_URL"] = vendor_url
        yield Services(env=env, aws_url=aws_url, vendor_url=vendor_url)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def local_stack(prefix: str) -> Iterator[LocalStack]:
    """The real local stack (`python -m devstack.run`, what `make run` runs) on free ports in a temporary
    directory; stopped on exit, and a process it leaves running is an error."""
    from tests.e2e.stack import start_stack

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        stack = start_stack(Path(tmp))
        try:
            yield stack
        finally:
            leftovers = stack.stop()
            if leftovers:
                raise RuntimeError(f"processes left running after the stack stopped: {leftovers}")


def token(tenant: str, user: str, roles: Sequence[str] = (), *, secret: str | None = None,
          ttl_seconds: int = 3600) -> str:
    """An HS256 bearer token; by default for the local stack (its per-checkout dev secret)."""
    from chalicelib.adapters.jwt_tokens import HS256TokenVerifier
    from devstack.common import dev_jwt_secret

    return HS256TokenVerifier(secret or dev_jwt_secret()).mint(tenant=tenant, user=user, roles=list(roles),
                                                               ttl_seconds=ttl_seconds)


def vendor_settings(base_url: str, api_key: str, *, model: str = FAKE_MODEL,
                    run_timeout_seconds: int | None = None) -> dict[str, Any]:
    """The PUT /admin/settings/eval-runner body that points the tenant's anthropic vendor at a fake vendor."""
    body: dict[str, Any] = {"anthropic": {"api_key": api_key, "model": model, "base_url": base_url}}
    if run_timeout_seconds is not None:
        body["run_timeout_seconds"] = run_timeout_seconds
    return body


def package_build(stage: str, *, rebuild: bool = False) -> tuple[Path, str]:
    """`build/<stage>/` with its deployment.zip (unchecked-hash bytecode included): reused when its manifest
    fingerprint matches the current sources (the rule `make package` and the template tests use), else
    built now. Returns the directory and a sentence saying which."""
    from devstack.package import BUILD_DIR, fresh_build

    out = BUILD_DIR / stage
    if not rebuild and fresh_build(stage) is not None and (out / "deployment.zip").exists():
        return out, f"reused `build/{stage}/` (its manifest fingerprint matches the current sources)"
    cmd = [sys.executable, "-m", "devstack.package", "--stage", stage]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"`make package STAGE={stage}` failed (exit {proc.returncode})")
    return out, f"built now with `make package STAGE={stage}` (`{' '.join(['python', *cmd[1:]])}`)"


# -- the worker ---------------------------------------------------------------------------------------


def sqs_record(message: Mapping[str, Any]) -> dict[str, Any]:
    """An SQS ReceiveMessage message as the record of the Lambda SQS event the worker is invoked with."""
    return {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"], "body": message["Body"],
            "attributes": {}, "messageAttributes": {}, "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs", "awsRegion": REGION, "eventSourceARN": QUEUE_ARN}


def drain_queue(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Receives and deletes every message on the queue; returns them as Lambda SQS records."""
    records = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return records
        for message in got:
            records.append(sqs_record(message))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def worker_context(timeout_seconds: float = 900, memory_mb: int = 1024) -> LocalLambdaContext:
    """The worker Lambda's context, counting down from its timeout."""
    from devstack.lambda_context import LocalLambdaContext

    return LocalLambdaContext("eval_worker", timeout_seconds, memory_mb)
