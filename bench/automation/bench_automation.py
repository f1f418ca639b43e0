"""Online and bulk evaluation against the real local stack (`python -m devstack.run` on free ports).

1. Upload latency with 20 enabled rules versus none. Two tenants; one has 20 enabled rules whose filter
   matches every session (sample rate 0, so the worker matches all 20 and creates no runs that would load
   the two cores while uploads are timed), the other none. Rounds run one PUT /sessions/{id} per
   tenant, in swapped order every other round (the same Claude Code fixture, a fresh session id and
   user each time, so the per-user upload rate limit never bites); the first round per tenant warms its
   containers' caches and is dropped.
   Median and p90 per case, and the ratio of the medians.
2. Cost of N sessions x 13 questions in `now` versus `batch` mode, from the runs' recorded cost, and the
   50-session figure as 50 times the median run (every session is the same size), for each
   vendor (Anthropic Message Batches through `client.messages.batches.*`, OpenAI Batch through `client.files`
   + `client.batches.*`, both SDKs talking to the fake vendor): one eval batch per (vendor, mode) over N
   distinct sessions (each session's task text carries its own ticket number, so no two sessions share a
   prompt prefix and each run's prompt cache starts cold, as with real traffic), the fake vendor answering
   as fast as it can. The figure is the sum of the runs' settled `cost.usd` (the project's price table at
   the model's default price, `batch_discount` applied to batch-mode runs), read once every run of the
   batch is finalized; the token classes show where the discount and the cache come from.

Prints one markdown section on stdout.

Usage: .venv/bin/python bench/automation/bench_automation.py [--rounds 30] [--sessions 12] [--vendors anthropic,openai]

The defaults keep the run under three minutes on the shared 2-core machine (the worker loop judges one
now-mode run at a time); `--sessions 50 --vendors anthropic,openai` measures the issue's 50 sessions directly, for both
vendors (moto serves one DynamoDB request at a time; under a load average above ~5 it answers the
worker in more than 10 s and runs stall, so run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness import (
    interleaved,
    local_stack,
    machine_load,
    median,
    percentile,
    table,
    token,
    vendor_settings,
)
from tests.e2e.stack import LocalStack

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "sessions" / "claude-code-full.jsonl"
API_KEY = "sk-ant-automation-bench-0123456789"
OPENAI_KEY = "sk-proj-automation-bench-0123456789"
MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-5.4"}
TASK = b"Plan first, then implement it with tests."
RULES = 20
BATCH_TIMEOUT = 900.0


def _progress(message: str) -> None:
    print(f"[automation] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _admin(tenant: str) -> str:
    return token(tenant, "root", ["admin"])


def _configure(stack: LocalStack, tenant: str, vendor: str = "anthropic") -> None:
    if vendor == "anthropic":
        body = vendor_settings(stack.fake_vendor_url, API_KEY, model=MODELS["anthropic"])
    else:
        body = {"openai": {"api_key": OPENAI_KEY, "model": MODELS["openai"], "base_url": f"{stack.fake_vendor_url}/v1"}}
    with stack.http(_admin(tenant)) as http:
        http.put("/admin/settings/eval-runner", json=body).raise_for_status()


def _upload(stack: LocalStack, tenant: str, session_id: str, user: str, ticket: str | None = None) -> float:
    body = FIXTURE.read_bytes()
    if ticket is not None:  # a distinct task text early in the trace: no prompt prefix shared with another session
        body = body.replace(TASK, TASK[:-1] + f" (ticket {ticket}).".encode(), 1)
    with stack.http(token(tenant, user)) as http:
        started = time.perf_counter()
        resp = http.put(f"/sessions/{session_id}", params={"format": "claude-code"}, content=body,
                        headers={"Content-Type": "application/x-ndjson"})
        took = time.perf_counter() - started
    resp.raise_for_status()
    return took


def upload_latency(stack: LocalStack, rounds: int) -> str:
    plain, ruled = f"bench-norules-{uuid.uuid4().hex[:6]}", f"bench-rules-{uuid.uuid4().hex[:6]}"
    for tenant in (plain, ruled):
        _configure(stack, tenant)
    with stack.http(_admin(ruled)) as http:
        for i in range(RULES):
            http.post("/admin/eval-rules", json={"name": f"rule {i}", "sample_rate": 0.0,
                                                 "filter": {"format": ["claude-code"]}}).raise_for_status()
    counter = iter(range(10**6))

    def case(tenant: str) -> Any:
        def run() -> float:
            n = next(counter)
            return _upload(stack, tenant, f"up-{n}", f"user-{n}")
        return run

    # The worker matches an upload's rules while the next upload is timed, so each round swaps the order:
    # both cases follow each other equally often (with a fixed order, the upload right after the ruled one
    # would always pay for the worker's matching).
    cases = {"no rules": case(plain), f"{RULES} enabled rules": case(ruled)}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for round_no in range(rounds + 1):
        for name, values in interleaved(dict(reversed(cases.items())) if round_no % 2 else cases, 1).items():
            samples[name] += values
    rows = []
    medians = {}
    for name, values in samples.items():
        kept = sorted(values[1:])
        medians[name] = median(kept)
        rows.append((name, len(kept), f"{median(kept) * 1000:.1f}", f"{percentile(kept, 0.9) * 1000:.1f}"))
    ratio = medians[f"{RULES} enabled rules"] / medians["no rules"]
    expected = RULES * len(samples[f"{RULES} enabled rules"])
    deadline = time.monotonic() + 60
    with stack.http(_admin(ruled)) as http:
        while True:  # the worker matches the notices after the uploads answered; wait for the last ones
            matched = sum(r["stats"]["matched"] for r in http.get("/admin/eval-rules").json()["items"])
            if matched >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return (table(("tenant", "uploads", "median ms", "p90 ms"), rows, "lrrr")
            + f"\n\nRatio of the medians (20 rules / none): **{ratio:.2f}**. The worker matched {matched} of "
              f"{expected} (upload, rule) pairs for the ruled tenant after the uploads had answered (sample rate 0: "
              "no runs); the upload itself only sends one job message.\n")


def _settled_runs(http: httpx.Client, batch_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The batch once it is finished (every run finalized, so every cost settled), and its runs."""
    deadline = time.monotonic() + BATCH_TIMEOUT
    while time.monotonic() < deadline:
        resp = http.get(f"/eval-batches/{batch_id}")
        if resp.status_code >= 500:  # the local API answers 503 when moto is too slow for it; ask again
            _progress(f"GET /eval-batches: {resp.status_code} {resp.text[:200]}")
            time.sleep(2.0)
            continue
        resp.raise_for_status()
        view: dict[str, Any] = resp.json()
        if view["status"] in ("finished", "cancelled"):
            runs = [http.get(f"/eval-runs/{r}").json() for r in view["run_ids"]]
            if all((r.get("cost") or {}).get("usd") is not None for r in runs):
                return view, runs
        time.sleep(2.0)
    raise RuntimeError(f"batch {batch_id} did not finish in {BATCH_TIMEOUT:.0f} s")


def batch_cost(stack: LocalStack, sessions: int, vendors: list[str]) -> str:
    rows = []
    costs: dict[tuple[str, str], float] = {}
    per_session: dict[tuple[str, str], float] = {}
    ids = [f"cost-{i:03d}" for i in range(sessions)]
    for vendor in vendors:
        for mode in ("now", "batch"):
            tenant = f"bench-{vendor}-{mode}-{uuid.uuid4().hex[:6]}"
            _configure(stack, tenant, vendor)
            with stack.http(_admin(tenant)) as http:  # every run of the batch may be active at once
                http.put("/admin/settings/eval-runner/limits", json={
                    "max_active_runs_per_tenant": sessions, "max_active_runs_per_user": sessions}).raise_for_status()
            for i, session_id in enumerate(ids):
                _upload(stack, tenant, session_id, f"uploader-{i}", ticket=f"{tenant}-{i}")
            with stack.http(token(tenant, "bob")) as http:
                # moto serves one DynamoDB request at a time: while the worker judges the runs, a progress
                # read can wait for long on a loaded machine.
                http.timeout = httpx.Timeout(180.0)
                started = time.monotonic()
                resp = http.post("/eval-batches", json={"session_ids": ids, "mode": mode})
                resp.raise_for_status()
                view, runs = _settled_runs(http, resp.json()["batch_id"])
                took = time.monotonic() - started
            _progress(f"{vendor} {mode}: settled in {took:.0f} s")
            usage = {k: sum(r["usage"][k] for r in runs) for k in (
                "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")}
            scored = sum(r["progress"]["completed"] for r in runs)
            run_costs = [float(r["cost"]["usd"]) for r in runs]
            costs[(vendor, mode)] = sum(run_costs)
            per_session[(vendor, mode)] = median(run_costs)
            shown = view["cost"]["usd"]
            rows.append((f"{vendor} ({MODELS[vendor]})", mode, view["counts"].get("succeeded", 0), scored,
                         f"{usage['input_tokens']:,}", f"{usage['cache_creation_input_tokens']:,}",
                         f"{usage['cache_read_input_tokens']:,}", f"{usage['output_tokens']:,}",
                         f"{sum(run_costs):.4f}", f"{shown:.4f}" if isinstance(shown, float) else "null",
                         f"{per_session[(vendor, mode)]:.5f}", f"{50 * per_session[(vendor, mode)]:.3f}",
                         f"{took:.0f}"))
    ratios = ", ".join(f"{vendor} **{costs[(vendor, 'batch')] / costs[(vendor, 'now')]:.2f}**"
                       for vendor in vendors if costs[(vendor, "now")])
    return (table(("vendor (model)", "mode", "runs succeeded", "questions scored", "input", "cache write",
                   "cache read", "output", "runs' cost USD", "batch view USD", "median run USD",
                   "x 50 sessions USD", "wall s"), rows, "llrrrrrrrrrrr")
            + f"\n\nCost ratio batch / now (sum of the runs' settled cost): {ratios}. Both modes judge every "
              "question once per session. The discount alone would give 0.50; the rest is the token mix (see "
              "the columns): a now-mode run makes a warm-up call, 12 parallel calls and a retrospective, and "
              "pays full price for its cache writes and uncached input, while a batch-mode run sends its 13 "
              "questions in one vendor batch with the trace as a cached prefix (Anthropic: `cache_control` on "
              "the system block; OpenAI: `prompt_cache_key`), every token class at the batch discount. "
              "`batch view USD` is what `GET /eval-batches/{id}` shows (`cost.usd`, the same sum). The sessions "
              "differ only in their ticket number, so every run of a mode costs the same: `x 50 sessions` is "
              "50 times the median run (`--sessions 50` measures it directly, in several minutes on this "
              "machine). `wall s` is from the POST to the last run settled (batch mode includes the poller's "
              "interval).\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--vendors", default="anthropic")
    args = parser.parse_args()
    vendors = [v for v in args.vendors.split(",") if v]
    load_before = machine_load()
    started = time.monotonic()
    with local_stack("bench-automation-") as stack:
        _progress("stack up")
        try:
            uploads = upload_latency(stack, args.rounds)
            _progress("upload latency done")
            cost = batch_cost(stack, args.sessions, vendors)
        except Exception:
            kept = Path(tempfile.gettempdir()) / "bench-automation-stack.log"
            shutil.copyfile(stack.log_path, kept)  # the stack's own log goes with its temporary directory
            _progress(f"failed; the local stack's log is kept in {kept}")
            raise
    took = time.monotonic() - started
    print("## automation\n")
    print("Command: `.venv/bin/python -m bench.run_all --only automation` (the real local stack, `python -m "
          "devstack.run`, on loopback: API server, worker loop with the automation poller every 3 s, moto, the "
          f"fake vendor answering at once). Load average (1 min) {load_before:.1f} at the start, "
          f"{machine_load():.1f} at the end, on 2 cores shared with other engineers' tests and benches: read "
          f"the ratios, not the absolute times. Took {took:.0f} s.\n")
    print(f"### Upload latency with {RULES} enabled rules versus none\n")
    print(uploads)
    print(f"### Cost of {args.sessions} sessions x 13 questions, now versus batch mode\n")
    print(cost)


if __name__ == "__main__":
    main()
