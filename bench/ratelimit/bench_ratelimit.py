"""Vendor rate limits (issue 7, item 4): 30 runs dispatched at once against a vendor key limited to R
requests a minute, with the fleet-wide limiter (`VENDOR_RATE_LIMITER=shared`, the default) and without it.

Each mode starts the real local stack (`tests.e2e.stack.start_stack`: moto server, the API, the fake
vendor and the worker loop, which runs up to 8 runs at once in threads like 8 concurrent Lambdas that
share the tenant's key), configures the tenant's Anthropic vendor with the stack's fake vendor as
base URL, sets the fake's `rate_limit_per_minute` = R (a token bucket holding R calls that refills at
R/60 per second; past it, 429 with the exact retry-after) and a fixed latency per call, uploads one
session, dispatches all runs at once through the API and polls every run to its end. Loopback only;
the stack is stopped at the end of each mode.

Goodput is successful generate calls per minute. Because the fake's bucket starts full (R calls of
burst), the sustained figure leaves the burst out: (successes - R) per minute of the busy period (first
call to last success), as a share of R, i.e. how much of the refill rate the fleet turned into answers.
DynamoDB calls of the limiter are taken from the worker's per-run log line (reads, writes, conflicts).

Modes (`VENDOR_RATE_LIMITER`): `shared` (the limiter, paced by the vendor's advertised budget before
any 429, + waiting out 429s until the deadline), `reactive` (the limiter paced only after 429s), `retry`
(only the waiting, no coordination), `off` (the SDK's own few retries only, the behaviour before).

Usage: .venv/bin/python bench/ratelimit/bench_ratelimit.py [--runs 30] [--rpm 120] [--latency 1.0]
       [--modes shared,reactive,retry,off]
       (BENCH_RATELIMIT_DUMP=<dir> keeps each mode's vendor request log and the stack's log)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness import local_stack, sample_trace, vendor_settings
from tests.e2e.stack import LocalStack, mint_token

TENANT = "ratelimit"
SESSION = "sess-ratelimit"
MODEL = "claude-sonnet-4-6"
API_KEY = "sk-ant-bench-ratelimit-not-a-real-key-0000"
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
# How often every open run is read regardless of the worker's log (runs that end without their job).
FALLBACK_POLL_SECONDS = 15.0
MODE_NOTES = {
    "shared": "fleet-wide limiter on DynamoDB, paced by the advertised budget before any 429, + 429s waited "
              "out until the deadline (default)",
    "reactive": "the same limiter paced only after 429s (before the advertised budget was read)",
    "retry": "429s waited out until the deadline, no coordination between workers",
    "off": "the SDK's own retries only (2-4 per call, honouring retry-after)",
}


def _epoch(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


@dataclass
class ModeResult:
    mode: str
    runs: int
    statuses: Counter[str] = field(default_factory=Counter)
    failed_429: int = 0
    failed_other: Counter[str] = field(default_factory=Counter)
    timed_out_questions: int = 0
    scored: int = 0
    generate_ok: int = 0
    generate_429: int = 0
    generate_other: int = 0
    busy_seconds: float = 0.0
    wall_seconds: float = 0.0
    run_seconds: list[float] = field(default_factory=list)
    limiter: list[dict[str, Any]] = field(default_factory=list)
    unfinished: int = 0


def _configure(stack: LocalStack, admin: str, *, rpm: float, latency: float, timeout: int, runs: int) -> None:
    with stack.http(admin) as api:
        resp = api.put("/admin/settings/eval-runner", json=vendor_settings(
            stack.fake_vendor_url, API_KEY, model=MODEL, run_timeout_seconds=timeout))
        resp.raise_for_status()
        # All runs dispatched at once by one user: above the default active-run quotas (3 a user, 20 a
        # tenant), which would refuse most of them (429) before the vendor's limit is ever met; and 30 runs'
        # worst-case cost is over the default budgets (402). The fake vendor charges nothing: no caps here.
        api.put("/admin/settings/eval-runner/limits", json={
            "max_active_runs_per_user": runs, "max_active_runs_per_tenant": runs,
            "tenant_monthly_usd": None, "user_daily_usd": None}).raise_for_status()
    httpx.post(f"{stack.fake_vendor_url}/_fake/options", timeout=10,
               json={"rate_limit_per_minute": rpm, "latency": latency}).raise_for_status()


def _dispatch_all(stack: LocalStack, member: str, runs: int) -> list[str]:
    def one(_: int) -> str:
        with stack.http(member) as api:
            resp = api.post(f"/sessions/{SESSION}/eval-runs", json={"threshold": 2000},
                            headers={"Idempotency-Key": str(uuid.uuid4())})
            resp.raise_for_status()
            return str(resp.json()["eval_run_id"])

    with ThreadPoolExecutor(max_workers=runs) as pool:
        return list(pool.map(one, range(runs)))


def _ended_in_log(log_path: Path, offset: int) -> tuple[set[str], int]:
    """Run ids whose worker logged the end of their job since `offset` (and the new offset)."""
    with log_path.open("rb") as log:
        log.seek(offset)
        chunk = log.read()
    complete = chunk[:chunk.rfind(b"\n") + 1]
    ended = set()
    for raw in complete.decode(errors="replace").splitlines():
        if '"eval job processed"' in raw or '"eval job failed' in raw:
            try:
                ended.add(str(json.loads(raw[raw.index("{"):])["eval_run_id"]))
            except (ValueError, KeyError):
                continue
    return ended, offset + len(complete)


def _poll(stack: LocalStack, member: str, run_ids: list[str], limit_seconds: float) -> dict[str, dict[str, Any]]:
    """Every run's final view. A run is read when its worker logs the end of its job, and every run still
    open is read every `FALLBACK_POLL_SECONDS` (runs ended elsewhere: a sweep, a reader, a deadline).
    Reading all 30 open runs every second, as this bench did before, kept moto's DynamoDB (one request
    at a time, see devstack/moto_server.py) busy most of the time with 25 KB run items, so the fleet's
    own DynamoDB calls queued behind the bench's: the measurement slowed what it measured."""
    views: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + limit_seconds
    offset, ended = 0, set()
    next_full = time.monotonic() + FALLBACK_POLL_SECONDS
    with stack.http(member) as api:
        while time.monotonic() < deadline:
            logged, offset = _ended_in_log(stack.log_path, offset)
            ended |= logged
            full = time.monotonic() >= next_full
            if full:
                next_full = time.monotonic() + FALLBACK_POLL_SECONDS
            for run_id in run_ids:
                if run_id in views and views[run_id]["status"] in TERMINAL:
                    continue
                if not full and run_id not in ended:
                    continue
                try:
                    resp = api.get(f"/eval-runs/{run_id}")
                except httpx.TimeoutException:
                    continue  # a busy shared machine: the next poll asks again
                resp.raise_for_status()
                views[run_id] = resp.json()
            if all(v["status"] in TERMINAL for v in views.values()) and len(views) == len(run_ids):
                break
            time.sleep(1.0)
    return views


def _limiter_lines(log_path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in log_path.read_text(errors="replace").splitlines():
        if "limiter_writes" not in raw:
            continue
        try:
            lines.append(json.loads(raw[raw.index("{"):]))
        except ValueError:
            continue
    return lines


def run_mode(mode: str, *, runs: int, rpm: float, latency: float, timeout: int, limit_seconds: float) -> ModeResult:
    os.environ["VENDOR_RATE_LIMITER"] = mode
    # The limiter's DynamoDB calls are read from the worker's per-run INFO line in the stack's log file
    # (bench.run_all quiets the service to WARNING for the benches that print its output).
    os.environ["POWERTOOLS_LOG_LEVEL"] = "INFO"
    result = ModeResult(mode=mode, runs=runs)
    with local_stack("bench-ratelimit-") as stack:
        admin = mint_token(TENANT, "root", "admin")
        member = mint_token(TENANT, "bob", "member")
        _configure(stack, admin, rpm=rpm, latency=latency, timeout=timeout, runs=runs)
        with stack.http(member) as api:
            api.put(f"/sessions/{SESSION}", json={"trace": sample_trace()}).raise_for_status()
        started = time.monotonic()
        run_ids = _dispatch_all(stack, member, runs)
        views = _poll(stack, member, run_ids, limit_seconds)
        result.wall_seconds = time.monotonic() - started
        requests = httpx.get(f"{stack.fake_vendor_url}/_fake/requests", timeout=60).json()["requests"]
        if os.environ.get("BENCH_RATELIMIT_DUMP"):
            Path(os.environ["BENCH_RATELIMIT_DUMP"], f"{mode}.json").write_text(json.dumps(requests))
        time.sleep(0.5)  # the last run's log line
        result.limiter = _limiter_lines(stack.log_path)
        if os.environ.get("BENCH_RATELIMIT_DUMP"):
            # The stack's log (worker INFO lines: started, succeeded, finalized) for the timeline.
            Path(os.environ["BENCH_RATELIMIT_DUMP"], f"{mode}-stack.log").write_bytes(stack.log_path.read_bytes())
    for run_id in run_ids:
        view = views.get(run_id)
        if view is None or view["status"] not in TERMINAL:
            result.unfinished += 1
            continue
        result.statuses[view["status"]] += 1
        if view.get("started_at") and view.get("finished_at"):
            result.run_seconds.append(_epoch(view["finished_at"]) - _epoch(view["created_at"]))
        for q in view["progress"]["questions"]:
            if q["status"] == "scored":
                result.scored += 1
            elif q["status"] == "timed_out":
                result.timed_out_questions += 1
            elif q.get("failure_reason"):
                kind = q["failure_reason"]["kind"]
                if kind == "rate_limited":
                    result.failed_429 += 1
                else:
                    result.failed_other[kind] += 1
    generate = [r for r in requests if r["endpoint"] == "generate"]
    ok = [r for r in generate if r["status"] == 200]
    result.generate_ok = len(ok)
    result.generate_429 = sum(1 for r in generate if r["status"] == 429)
    result.generate_other = len(generate) - result.generate_ok - result.generate_429
    if ok:
        first = min(_epoch(r["at"]) for r in generate)
        last = max(_epoch(r["at"]) + r["duration_ms"] / 1000 for r in ok)
        result.busy_seconds = last - first
    return result


def _pct(value: float) -> str:
    return f"{value:.0f} %"


def report(results: list[ModeResult], *, runs: int, rpm: float, latency: float, timeout: int) -> str:
    out = ["## Vendor rate limits (`bench/ratelimit`)", ""]
    out.append(f"{runs} runs (13 questions + retrospective each) dispatched at once through the API of the real "
               f"local stack; its worker loop judges up to 8 runs at a time (8 concurrent \"Lambdas\", one vendor "
               f"key). Fake vendor limited to R = {rpm:g} generate calls/minute (token bucket: {rpm:g} calls of "
               f"burst, refilled at {rpm / 60:g}/s; 429 with retry-after past it), {latency:g} s per call. "
               f"Tenant run timeout {timeout} s ("
               + ("the default, not raised" if timeout == 300 else "raised from the default 300 s")
               + "; each run's deadline counts from its dispatch, and the last runs queue behind the others). "
               "Each mode starts a fresh stack (a full vendor bucket, no learned pace).")
    out.append("")
    out.append("| mode | runs succeeded | questions failed from 429 | other failed / timed out | 429s at the vendor "
               "| 429s / vendor calls | successful calls | busy period | goodput "
               "| sustained goodput (beyond the burst) | wall time | run p50 / max (dispatch → end) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        minutes = r.busy_seconds / 60 if r.busy_seconds else float("nan")
        goodput = r.generate_ok / minutes if r.busy_seconds else 0.0
        sustained = (r.generate_ok - rpm) / minutes if r.busy_seconds else 0.0
        others = sum(r.failed_other.values())
        other_txt = f"{others}" + (f" ({', '.join(f'{k} {v}' for k, v in r.failed_other.items())})" if others else "")
        p50 = statistics.median(r.run_seconds) if r.run_seconds else 0.0
        mx = max(r.run_seconds) if r.run_seconds else 0.0
        out.append(f"| `{r.mode}`: {MODE_NOTES[r.mode]} | {r.statuses.get('succeeded', 0)}/{r.runs}"
                   + (f" ({r.unfinished} unfinished)" if r.unfinished else "")
                   + f" | {r.failed_429} | {other_txt} / {r.timed_out_questions} | {r.generate_429} "
                   f"| {_pct(100 * r.generate_429 / max(r.generate_ok + r.generate_429 + r.generate_other, 1))} "
                   f"| {r.generate_ok} | {r.busy_seconds:.0f} s | {goodput:.0f}/min ({_pct(100 * goodput / rpm)} of R) "
                   f"| {sustained:.0f}/min ({_pct(100 * sustained / rpm)} of R) | {r.wall_seconds:.0f} s "
                   f"| {p50:.0f} s / {mx:.0f} s |")
    out.append("")
    for r in results:
        if r.mode not in ("shared", "reactive") or not r.limiter:
            continue
        n = len(r.limiter)

        def stat(key: str, lines: list[dict[str, Any]] = r.limiter) -> tuple[float, float]:
            values = [float(line.get(key, 0)) for line in lines]
            return sum(values) / len(values), max(values)

        reads, writes, conflicts = stat("limiter_reads"), stat("limiter_writes"), stat("limiter_conflicts")
        seen, waited = stat("rate_limited_answers"), stat("rate_wait_seconds")
        total = [float(line.get("limiter_reads", 0)) + float(line.get("limiter_writes", 0)) for line in r.limiter]
        updates, released = stat("budget_updates"), stat("released_slots")
        out.append(f"Extra DynamoDB calls of the limiter (`{r.mode}`, from the worker's per-run log line, {n} runs): "
                   f"{sum(total) / n:.1f} per run on average (max {max(total):.0f}): GetItem {reads[0]:.1f} "
                   f"(max {reads[1]:.0f}), conditional PutItem {writes[0]:.1f} (max {writes[1]:.0f}) of which "
                   f"lost races {conflicts[0]:.1f} (max {conflicts[1]:.0f}); store errors "
                   f"{sum(int(line.get('limiter_store_errors', 0)) for line in r.limiter)}. A run that meets no "
                   f"429 makes at most one GetItem per wave of calls (every 2 s at most) and no write. 429 "
                   f"answers per run {seen[0]:.1f} "
                   f"(max {seen[1]:.0f}); time its calls waited for their slots {waited[0]:.0f} s per run on "
                   f"average (max {waited[1]:.0f} s; summed over calls); advertised budgets written "
                   f"{updates[0]:.1f} per run (max {updates[1]:.0f}); slots handed back {released[0]:.1f} per run.")
        out.append("")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    # 120 a minute: what binds a fleet of 8 local workers on a 2-core machine (it judges ~5 calls a second
    # at most, so a 240 limit would hardly be reached); a longer run timeout for the queue behind it.
    parser.add_argument("--rpm", type=float, default=120.0)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--timeout", type=int, default=600, help="the tenant's run_timeout_seconds")
    parser.add_argument("--modes", default="shared,reactive,retry,off")
    parser.add_argument("--limit-seconds", type=float, default=660.0, help="stop polling a mode after this")
    args = parser.parse_args()
    results = []
    for mode in [m for m in args.modes.split(",") if m]:
        print(f"[ratelimit] mode {mode} …", file=sys.stderr, flush=True)
        results.append(run_mode(mode, runs=args.runs, rpm=args.rpm, latency=args.latency, timeout=args.timeout,
                                limit_seconds=args.limit_seconds))
    print(report(results, runs=args.runs, rpm=args.rpm, latency=args.latency, timeout=args.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
