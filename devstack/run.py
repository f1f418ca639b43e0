"""`make run`: the whole local stack in the foreground.

Starts moto server (embedded AWS) on 127.0.0.1:$AWS_PORT, creates the stage's resources from
`infra/eval-runner.json`, starts the dev-only fake LLM vendor on 127.0.0.1:$VENDOR_PORT, the REST
API on 127.0.0.1:$PORT and the queue worker, then writes `.local/stack.json`. SIGINT/SIGTERM stops
every process it started (each runs in its own process group, so grandchildren die too).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from devstack.common import LOCAL_DIR, ROOT, STACK_FILE, chalice_stage_env, dev_jwt_secret

STAGE = "dev"


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # loopback only
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready within {timeout}s")


class Stack:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(FileNotFoundError):
            STACK_FILE.unlink()


def main() -> int:
    aws_port = int(os.environ.get("AWS_PORT", "5000"))
    api_port = int(os.environ.get("PORT", "8000"))
    vendor_port = int(os.environ.get("VENDOR_PORT", "5100"))
    region = os.environ.get("AWS_REGION", "us-east-1")
    LOCAL_DIR.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        STACK_FILE.unlink()

    stack = Stack()

    def on_signal(signum: int, _frame: Any) -> None:
        # `make run` stopped by a signal to its process group delivers it here more than once (the group's
        # signal, then make's own when it dies, or a second Ctrl-C): a repeat must not raise SystemExit in
        # the middle of the first stop, which would leave the remaining processes running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        sys.exit(0)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    py = sys.executable
    aws_url = f"http://127.0.0.1:{aws_port}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base_env.update({"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": region,
                     "AWS_DEFAULT_REGION": region, "PYTHONUNBUFFERED": "1"})
    try:
        moto = stack.spawn("moto", [py, "-m", "devstack.moto_server", "--port", str(aws_port)], base_env)
        _wait_http(f"{aws_url}/moto-api/", 30, moto)

        import boto3

        from devstack.resources import provision

        session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=region)
        resources = provision(session, stack_name=f"eval-runner-{STAGE}", endpoint_url=aws_url, region=region)

        vendor_url = f"http://127.0.0.1:{vendor_port}"
        vendor = stack.spawn("fake-vendor", [py, "-m", "devstack.fake_vendor", "--port", str(vendor_port)],
                             base_env)
        _wait_http(f"{vendor_url}/_fake/stats", 30, vendor)

        env = dict(base_env)
        env.update(chalice_stage_env(STAGE))
        # The stage's dashboard origins, unless the developer names their own dashboard's origin.
        if os.environ.get("CORS_ALLOWED_ORIGINS") is not None:
            env["CORS_ALLOWED_ORIGINS"] = os.environ["CORS_ALLOWED_ORIGINS"]
        env.update(resources.env(stage=STAGE))
        env.update({"AWS_ENDPOINT_URL": aws_url, "DEV_JWT_SECRET": dev_jwt_secret(),
                    "EVAL_LOCAL_STACK": "1"})
        api_url = f"http://127.0.0.1:{api_port}"
        api = stack.spawn("api", [py, "-m", "devstack.api_server", "--port", str(api_port), "--stage", STAGE],
                          env)
        stack.spawn("worker", [py, "-m", "devstack.worker_loop"], env)
        _wait_http(f"{api_url}/health", 60, api)

        public_env = {k: v for k, v in env.items() if k in {
            "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "EVAL_TABLE_NAME", "EVAL_BUCKET_NAME",
            "EVAL_QUEUE_URL", "EVAL_KMS_KEY_ID", "EVAL_SECRET_PREFIX", "STAGE", "AUTH_MODE",
            "ALLOWED_BASE_URL_HOSTS", "ALLOW_HTTP_BASE_URLS", "MAX_RUN_TIMEOUT_SECONDS",
            "WORKER_GRACE_SECONDS", "CORS_ALLOWED_ORIGINS"}}
        info = {
            "api_url": api_url,
            "aws_endpoint_url": aws_url,
            "region": region,
            "table_name": resources.table_name,
            "queue_url": resources.queue_url,
            "bucket": resources.bucket_name,
            "kms_key_id": resources.kms_key_id,
            "fake_vendor_url": vendor_url,
            "console_url": f"{api_url}/ui/",
            "pids": {name: p.pid for name, p in stack.procs} | {"supervisor": os.getpid()},
            "env": public_env,
        }
        tmp = STACK_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(STACK_FILE)
        print(f"eval-runner local stack ready: API {api_url}  console {api_url}/ui/  "
              f"AWS {aws_url}  fake vendor {vendor_url} (dev only)", flush=True)
        print("  token: make token TENANT=acme USER=alice ROLE=admin   stop: Ctrl-C", flush=True)

        while True:
            for name, proc in stack.procs:
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the stack", file=sys.stderr)
                    stack.stop()
                    return 1
            time.sleep(0.5)
    except Exception as exc:
        print(f"local stack failed to start: {exc}", file=sys.stderr)
        stack.stop()
        return 1


if __name__ == "__main__":
    sys.exit(main())
