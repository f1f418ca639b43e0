"""The daemon process: register, heartbeat, long-poll for jobs and cancels (optionally also listen on
the WebSocket API), and run each claimed job in its own thread.

Judge processes are limited daemon-wide by `concurrency` (one semaphore shared by every job), and
at most `max_jobs` jobs run at once: at capacity the daemon keeps long-polling with `claim=false`,
which only delivers cancel notices, so cancellation always gets through.
"""

from __future__ import annotations

import platform as _platform
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.client import ApiClient, ApiError
from daemon.judges import CliJudge, JudgeName
from daemon.runner import JobOutcome, JobRunner
from daemon.sandbox import JudgeSandbox, Unsandboxed

VERSION = "1.0.0"
Log = Callable[[str], None]


def default_platform() -> str:
    return f"{_platform.system().lower()}-{_platform.machine().lower()}"


@dataclass
class DaemonConfig:
    name: str
    judges: list[JudgeName]
    platform: str = field(default_factory=default_platform)
    concurrency: int = 4
    max_jobs: int = 2
    poll_wait: int = 20
    model: str | None = None
    judge_timeout: float = 300.0
    retrospective: bool = True
    ws_url: str | None = None
    # OS isolation for every judge call (`python -m daemon run` picks bubblewrap when it can).
    sandbox: JudgeSandbox = field(default_factory=Unsandboxed)


class Daemon:
    def __init__(self, config: DaemonConfig, api: ApiClient, *, log: Log = print,
                 on_job_done: Callable[[JobOutcome], None] | None = None) -> None:
        self.config = config
        self.api = api
        self._log = log
        self._on_job_done = on_job_done
        self._slots = threading.Semaphore(config.concurrency)
        self._lock = threading.Lock()
        self._runners: dict[str, JobRunner] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._poll_now = threading.Event()
        self.daemon_id: str | None = None
        self.heartbeat_interval = 20.0
        self.outcomes: list[JobOutcome] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def register(self) -> str:
        info = self.api.register(self.config.name, self.config.platform, list(self.config.judges),
                                 version=VERSION, concurrency=self.config.concurrency)
        with self._lock:
            self.daemon_id = str(info["daemon_id"])
        self.heartbeat_interval = float(info.get("heartbeat_interval_seconds", 20))
        self._log(f"registered as {self.daemon_id} ({', '.join(self.config.judges)})")
        return self.daemon_id

    def start(self, *, register: bool = True) -> None:
        """Register (unless already done), then run heartbeat, poll (and WebSocket) loops in threads."""
        if register or self.daemon_id is None:
            self.register()
        self._spawn(self._heartbeat_loop, "heartbeat")
        self._spawn(self._poll_loop, "poll")
        if self.config.ws_url:
            from daemon.ws import WebSocketListener

            listener = WebSocketListener(self.config.ws_url, self.api.token, self, log=self._log)
            self._spawn(listener.run, "websocket")

    def stop(self, reason: str = "daemon stopped") -> None:
        self._stop.set()
        self._poll_now.set()
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.cancel(reason)

    def join(self, timeout: float | None = None) -> None:
        for t in list(self._threads):
            t.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def active_jobs(self) -> list[str]:
        with self._lock:
            return list(self._runners)

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=f"daemon-{name}", daemon=True)
        self._threads.append(t)
        t.start()
        return t

    # -- loops ---------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            try:
                self.api.heartbeat(self.daemon_id or "")
            except ApiError as exc:
                if exc.status == 404:
                    self._log("presence expired; registering again")
                    self._safe_register()
                else:
                    self._log(f"heartbeat refused: {exc}")
            except OSError as exc:
                self._log(f"heartbeat failed: {exc}")

    def _safe_register(self) -> None:
        try:
            self.register()
        except (ApiError, OSError) as exc:
            self._log(f"registration failed: {exc}")

    def _poll_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self.poll_once(self.config.poll_wait)
                backoff = 1.0
            except ApiError as exc:
                if exc.status == 404:
                    self._safe_register()
                else:
                    self._log(f"poll refused: {exc}")
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
            except OSError as exc:
                self._log(f"poll failed: {exc}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def poll_once(self, wait: int) -> dict[str, Any] | None:
        """One long poll; handles what it returns. At capacity only cancels are asked for."""
        claim = len(self.active_jobs()) < self.config.max_jobs
        message = self.api.poll(self.daemon_id or "", wait=wait, claim=claim)
        if message is not None:
            self.handle(message)
        return message

    # -- messages (poll responses and WebSocket pushes) ----------------------------------------
    def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "job":
            self._start_job(message)
        elif kind == "cancel":
            run_id = str(message.get("eval_run_id", ""))
            with self._lock:
                runner = self._runners.get(run_id)
            if runner is not None:
                self._log(f"[{run_id}] cancel requested: killing its judges")
                runner.cancel("cancelled")
        elif kind == "job_offer" and len(self.active_jobs()) < self.config.max_jobs:
            # Pushed offer: claim it through the poll endpoint right away (the one claim path).
            try:
                self.poll_once(0)
            except (ApiError, OSError) as exc:
                self._log(f"claim after push failed: {exc}")

    def _judge_for(self, job: dict[str, Any]) -> CliJudge:
        name = self.config.judges[0]
        model = self.config.model or (job.get("model") if name == "claude" else None)
        return CliJudge(name=name, model=model, timeout_seconds=self.config.judge_timeout,
                        sandbox=self.config.sandbox)

    def _start_job(self, job: dict[str, Any]) -> None:
        run_id = str(job["eval_run_id"])
        runner = JobRunner(job, api=self.api, judge=self._judge_for(job), slots=self._slots,
                           retrospective=self.config.retrospective, log=self._log)
        with self._lock:
            if run_id in self._runners:
                return
            self._runners[run_id] = runner
        self._log(f"[{run_id}] claimed: {len(runner.questions)} questions with {runner.judge.name}")

        def work() -> None:
            try:
                outcome = runner.run()
            finally:
                with self._lock:
                    self._runners.pop(run_id, None)
            self._log(f"[{run_id}] {outcome.status}: {outcome.detail}")
            self.outcomes.append(outcome)
            if self._on_job_done is not None:
                self._on_job_done(outcome)

        self._spawn(work, f"job-{run_id[-6:]}")
