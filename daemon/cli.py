"""Command line: `python -m daemon run --api-url URL --token TOKEN [--name] [--judges claude,codex]
[--concurrency 4] [--ws-url wss://…] [--sandbox auto|bwrap|off] [--sandbox-share PATH]`. SIGINT/SIGTERM
cancel running jobs (their judge processes are killed and the runs reported) and exit."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

from daemon.agent import Daemon, DaemonConfig
from daemon.client import ApiClient, UrllibTransport
from daemon.judges import JudgeName
from daemon.sandbox import SandboxUnavailable, choose_sandbox

_JUDGES: tuple[JudgeName, ...] = ("claude", "codex")


def _log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] [daemon] {message}", file=sys.stderr, flush=True)


def parse_judges(value: str) -> list[JudgeName]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in _JUDGES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"judges must be a comma list of {', '.join(_JUDGES)}")
    return list(dict.fromkeys(names))  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m daemon", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="register and run evaluations until stopped")
    run.add_argument("--api-url", default=os.environ.get("EVAL_RUNNER_API_URL"),
                     help="the eval-runner REST API (env EVAL_RUNNER_API_URL)")
    run.add_argument("--token", default=os.environ.get("EVAL_RUNNER_TOKEN"),
                     help="your bearer token (env EVAL_RUNNER_TOKEN; never passed on to the judges)")
    run.add_argument("--name", default=socket.gethostname(), help="how this daemon is listed (default: host name)")
    run.add_argument("--judges", type=parse_judges, default=None,
                     help="judge CLIs to offer, first one used: claude,codex (default: those on PATH)")
    run.add_argument("--concurrency", type=int, default=4, help="judge processes in parallel (default 4)")
    run.add_argument("--max-jobs", type=int, default=2, help="evaluations in parallel (default 2)")
    run.add_argument("--model", default=None, help="judge model (default: sonnet for claude, codex's own)")
    run.add_argument("--judge-timeout", type=float, default=300.0, help="seconds per judge call (default 300)")
    run.add_argument("--poll-wait", type=int, default=20, help="long-poll seconds, at most 25 (default 20)")
    run.add_argument("--no-retrospective", action="store_true", help="skip the retrospective judge call")
    run.add_argument("--ws-url", default=None, help="wss://… WebSocket API URL for pushed jobs and cancels")
    run.add_argument("--sandbox", choices=("auto", "bwrap", "off"), default="auto",
                     help="OS isolation of each judge call: bubblewrap if available (auto, the default; warns "
                          "when it is not), bubblewrap or refuse to start (bwrap), or none (off)")
    run.add_argument("--sandbox-share", action="append", default=[], metavar="PATH",
                     help="a host path judges may use inside the sandbox (read-write, same place), e.g. a CA "
                          "bundle or cloud credentials; repeatable")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.api_url or not args.token:
        _log("--api-url and --token (or EVAL_RUNNER_API_URL / EVAL_RUNNER_TOKEN) are required")
        return 2
    judges: list[JudgeName] = args.judges or [j for j in _JUDGES if shutil.which(j)]
    if not judges:
        _log("no judge CLI found on PATH: install claude or codex, or pass --judges")
        return 2
    if not 1 <= args.concurrency <= 64 or not 0 <= args.poll_wait <= 25 or args.max_jobs < 1:
        _log("--concurrency must be 1-64, --max-jobs at least 1 and --poll-wait 0-25")
        return 2
    try:
        sandbox = choose_sandbox(args.sandbox, share=args.sandbox_share)
    except SandboxUnavailable as exc:
        _log(f"--sandbox bwrap: {exc}")
        return 2
    _log(sandbox.describe())
    config = DaemonConfig(name=args.name[:100], judges=judges, concurrency=args.concurrency,
                          max_jobs=args.max_jobs, poll_wait=args.poll_wait, model=args.model,
                          judge_timeout=args.judge_timeout, retrospective=not args.no_retrospective,
                          ws_url=args.ws_url, sandbox=sandbox)
    daemon = Daemon(config, ApiClient(UrllibTransport(args.api_url), args.token), log=_log)

    def on_signal(signum: int, _frame: Any) -> None:
        _log("stopping: cancelling running jobs")
        daemon.stop("daemon stopped")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        daemon.start()
    except Exception as exc:
        _log(f"could not register with {args.api_url}: {exc}")
        return 1
    _log(f"polling {args.api_url} for jobs (concurrency {config.concurrency}); Ctrl-C stops")
    while not daemon.stopping:
        time.sleep(0.5)
    # Give running jobs a moment to report their cancellation.
    deadline = time.monotonic() + 10
    while daemon.active_jobs() and time.monotonic() < deadline:
        time.sleep(0.2)
    return 0
