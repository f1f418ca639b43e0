"""Online and bulk evaluation against the real local stack (`python -m devstack.run` on free ports).

1. Upload latency with 20 enabled rules versus none. Two tenants; one has 20 enabled rules whose filter
   matches every session (sample rate 0, so the worker matches all 20 and creates no runs that would load
   the two cores while uploads are timed), the other none. Rounds alternate one PUT /sessions/{id} per
   tenant (the same Claude Code fixture, a fresh session id and user each time, so the per-user upload
   rate limit never bites); the first round per tenant warms its containers' caches and is dropped.
   Median and p90 per case, and the ratio of the medians.
2. Cost of 50 sessions x 13 questions in `now` versus `batch` mode, from the runs' recorded cost: one
   eval batch per mode over the same 50 sessions (separate tenants, so each mode's prompt cache starts
   cold), the fake vendor answering as fast as it can; the batch's `cost.usd` (the sum of its runs'
   settled cost, at the default price of the model, `batch_discount` applied to batch-mode runs) and
   the runs' token classes.

Prints one markdown section on stdout.

Usage: .venv/bin/python bench/automation/bench_automation.py [--rounds 40] [--sessions 50]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness import interleaved, local_stack, median, percentile, table, token, vendor_settings
from tests.e2e.stack import LocalStack

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "sessions" / "claude-code-full.jsonl"
API_KEY = "sk-ant-automation-bench-0123456789"
RULES = 20
BATCH_TIMEOUT = 900.0


def _admin(tenant: str) -> str:
    return token(tenant, "root", ["admin"])


def _configure(stack: LocalStack, tenant: str) -> None:
    with stack.http(_admin(tenant)) as http:
        http.put("/admin/settings/eval-runner", json=vendor_settings(stack.fake_vendor_url, API_KEY)).raise_for_status()


def _upload(stack: LocalStack, tenant: str, session_id: str, user: str) -> float:
    body = FIXTURE.read_bytes()
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

    samples = interleaved({"no rules": case(plain), f"{RULES} enabled rules": case(ruled)}, rounds + 1)
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


def _wait_for_batch(http: httpx.Client, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + BATCH_TIMEOUT
    while time.monotonic() < deadline:
        view: dict[str, Any] = http.get(f"/eval-batches/{batch_id}").json()
        if view["status"] in ("finished", "cancelled"):
            return view
        time.sleep(1.0)
    raise RuntimeError(f"batch {batch_id} did not finish in {BATCH_TIMEOUT:.0f} s")


def batch_cost(stack: LocalStack, sessions: int) -> str:
    rows = []
    costs: dict[str, float | None] = {}
    for mode in ("now", "batch"):
        tenant = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
        _configure(stack, tenant)
        ids = [f"cost-{i:03d}" for i in range(sessions)]
        for i, session_id in enumerate(ids):
            _upload(stack, tenant, session_id, f"uploader-{i}")
        member = token(tenant, "bob")
        with stack.http(member) as http:
            started = time.monotonic()
            resp = http.post("/eval-batches", json={"session_ids": ids, "mode": mode})
            resp.raise_for_status()
            view = _wait_for_batch(http, resp.json()["batch_id"])
            took = time.monotonic() - started
            runs = [http.get(f"/eval-runs/{r}").json() for r in view["run_ids"]]
        usage = {k: sum(r["usage"][k] for r in runs) for k in ("input_tokens", "cache_read_input_tokens",
                                                               "cache_creation_input_tokens", "output_tokens")}
        scored = sum(r["progress"]["completed"] for r in runs)
        costs[mode] = view["cost"]["usd"]
        rows.append((mode, view["counts"].get("succeeded", 0), scored, f"{usage['input_tokens']:,}",
                     f"{usage['cache_creation_input_tokens']:,}", f"{usage['cache_read_input_tokens']:,}",
                     f"{usage['output_tokens']:,}",
                     f"{costs[mode]:.4f}" if isinstance(costs[mode], float) else "null", f"{took:.0f}"))
    now, batch = costs["now"], costs["batch"]
    ratio = f"**{batch / now:.2f}**" if isinstance(now, float) and isinstance(batch, float) and now else "n/a"
    return (table(("mode", "runs succeeded", "questions scored", "input", "cache write", "cache read", "output",
                   "cost USD", "wall s"), rows, "lrrrrrrrr")
            + f"\n\nCost ratio batch / now: {ratio}. Both modes run every question once per session (a batch-mode "
              "run has no retrospective; a now-mode run adds one small call without the trace).\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    with local_stack("bench-automation-") as stack:
        uploads = upload_latency(stack, args.rounds)
        cost = batch_cost(stack, args.sessions)
    print("## automation\n")
    print("Command: `python -m bench.run_all --only automation` (the local stack on loopback; the fake vendor "
          "answers at once; other engineers' processes share the two cores, so read the ratios, not the "
          "absolute times).\n")
    print(f"### Upload latency with {RULES} enabled rules versus none\n")
    print(uploads)
    print(f"### Cost of {args.sessions} sessions x 13 questions, now versus batch mode\n")
    print(cost)


if __name__ == "__main__":
    main()
