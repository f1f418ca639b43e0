"""Starts the real local stack (`python -m devstack.run`, what `make run` runs) on free ports for
end-to-end and browser tests, and proves on teardown that no process it started is left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mint_token(tenant: str, user: str, role: str) -> str:
    out = subprocess.run([sys.executable, "-m", "devstack.token", "--tenant", tenant, "--user", user,
                          "--role", role], cwd=ROOT, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out.stdout.strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@dataclass
class LocalStack:
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    stack_file: Path
    log_path: Path

    @property
    def api_url(self) -> str:
        return str(self.info["api_url"])

    @property
    def fake_vendor_url(self) -> str:
        return str(self.info["fake_vendor_url"])

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30)

    def stop(self) -> list[int]:
        """SIGTERM the supervisor like Ctrl-C would; returns pids still alive afterwards."""
        pids = [int(p) for p in self.info.get("pids", {}).values()]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        return [p for p in pids if _alive(p)]


def start_stack(tmp_dir: Path, *, timeout: float = 120) -> LocalStack:
    stack_file = tmp_dir / "stack.json"
    log_path = tmp_dir / "stack.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_PORT": str(free_port()), "PORT": str(free_port()),
           "VENDOR_PORT": str(free_port()), "EVAL_STACK_FILE": str(stack_file)}
    log = open(log_path, "wb")  # noqa: SIM115 - kept open for the process lifetime
    proc = subprocess.Popen([sys.executable, "-m", "devstack.run"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"local stack exited early:\n{log_path.read_text()[-4000:]}")
        if stack_file.exists():
            info = json.loads(stack_file.read_text())
            try:
                if httpx.get(f"{info['api_url']}/health", timeout=2).status_code == 200:
                    return LocalStack(proc=proc, info=info, stack_file=stack_file, log_path=log_path)
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"local stack not ready in {timeout}s:\n{log_path.read_text()[-4000:]}")
