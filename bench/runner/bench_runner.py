"""Judge runner: wall time of a 13-question run in units of one judge call's latency L, and the billed-equivalent
input tokens, for the sequential reference design and the parallel strategies (warm-then-fan-out vs
all-at-once, at several concurrency bounds).

Runs the real judge phase (`chalicelib.services.judge_runner.judge_run`: context fit, fan-out, repair
logic, progress coalescing) through the real anthropic/openai SDKs against the in-process FakeVendor,
whose every judge call takes L seconds and which simulates the vendors' prompt caches (a prefix is
readable only once the request that wrote it has completed). No AWS: progress writes are no-ops.

Billed-equivalent input tokens use Anthropic's multipliers of the base input price: uncached 1x,
cache write 1.25x, cache read 0.1x. The reference design (kapacitor-evals §8.1/§8.4) sends the full
prompt 13 times, sequentially, without a cache: 13 x prompt tokens at 1x and 13 x L.

A second table runs the default strategy on a tenant's custom catalog of 20 questions (built-ins
and tenant questions with rubrics, made by the catalog's own rules): custom questions live in the
per-question suffix, so the run must still write the shared prefix once and read it 19 times.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chalicelib.adapters.judge_models import build_judge_model
from chalicelib.adapters.outbound_http import OutboundGuard
from chalicelib.domain.base_url import BaseUrlPolicy
from chalicelib.domain.catalog import CatalogUpdate, CatalogVersion, plan_catalog
from chalicelib.domain.evaluation import QuestionOutcome, TokenUsage
from chalicelib.judges.catalog import QUESTIONS, Question
from chalicelib.services.judge_runner import (
    Deadline,
    JudgeRunInput,
    JudgeRunResult,
    QuestionJob,
    RunnerTuning,
    judge_run,
)
from devstack.fake_vendor import FakeVendor, FakeVendorOptions

# The fake vendor listens on 127.0.0.1 over http: the local stack's outbound policy.
LOCAL_OUTBOUND = OutboundGuard(BaseUrlPolicy(allowed_hosts=("127.0.0.1",), allow_http=True))

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1"}

# socketserver's default listen backlog is 5: 13 simultaneous connects overflow it and the kernel drops
# SYNs, which the client retransmits after 1 s, so the fake itself would serialise the fan-out.
# Real vendor endpoints have no such limit.
if getattr(http.server.ThreadingHTTPServer, "request_queue_size", 5) < 128:
    http.server.ThreadingHTTPServer.request_queue_size = 128
WRITE, READ = 1.25, 0.1


@dataclass(frozen=True)
class Strategy:
    name: str
    concurrency: int
    warm_up: Literal["first", "none"]
    note: str = ""


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("sequential, c=1 (the reference's schedule, with our cache)", 1, "none", "one judge at a time"),
    Strategy("all at once, c=13", 13, "none"),
    Strategy("all at once, c=8", 8, "none"),
    Strategy("warm first, then fan out, c=8", 8, "first"),
    Strategy("warm first, then fan out, c=12 (default)", 12, "first"),
)


class NoAws:
    """RunPorts without AWS: progress writes succeed, nothing is cancelled, keys never rotate."""

    def __init__(self) -> None:
        self.flushes = 0

    async def flush(self, outcomes: Sequence[QuestionOutcome], usage: TokenUsage, context: Any) -> bool:
        self.flushes += 1
        return True

    async def is_cancelled(self) -> bool:
        return False

    async def refresh_model(self) -> Any:
        return None


def eval_context(trace_kb: int) -> dict[str, Any]:
    """A synthetic compacted trace of about `trace_kb` KB (JSON), tool calls citing files."""
    trace: list[dict[str, Any]] = [{"kind": "user_message", "timestamp": "2025-06-01T10:00:00.000Z",
                                    "text": "Fix the flaky login test and add a regression test."}]
    i = 0
    while sum(len(str(e)) for e in trace) < trace_kb * 1024:
        ts = f"2025-06-01T10:{(i // 60) % 60:02d}:{i % 60:02d}.000Z"
        trace.append({"kind": "tool_invocation", "timestamp": ts, "tool": "Bash", "call_id": f"c{i}",
                      "arguments": {"command": f"pytest tests/test_module_{i}.py -q"}})
        trace.append({"kind": "tool_result", "timestamp": ts, "tool": "Bash", "call_id": f"c{i}",
                      "output": f"tests/test_module_{i}.py ........ [100%]\n" * 12, "is_error": False,
                      "truncated": False, "output_bytes": 600})
        i += 1
    return {"session_id": "bench", "session_chain": ["bench"], "trace": trace,
            "compaction": {"threshold_bytes": 2000, "entries": len(trace), "tool_results_total": i,
                           "tool_results_truncated": 0, "bytes_saved": 0}}


CUSTOM_CATALOG_SIZE = 20


def custom_catalog() -> list[Question]:
    """A tenant catalog of 20 enabled questions: 8 built-ins (5 disabled) and 12 of the tenant's own in
    three new categories, each with a rubric, saved through the catalog's own rules and resolved as a run
    resolves it."""
    keep = {"sensitive_files", "destructive_commands", "security_vulnerabilities", "followed_plan",
            "completed_items", "tests_written", "broken_tests", "direct_approach"}
    topics = {"docs": ["changelog_updated", "readme_updated", "docstrings_current", "adr_written"],
              "data_safety": ["migrations_reversible", "backfill_batched", "pii_not_logged", "schema_versioned"],
              "release": ["feature_flagged", "rollback_noted", "deps_pinned", "api_compatible"]}
    tenant = [{"id": qid, "category": category,
               "text": f"Team standard {qid.replace('_', ' ')}: did the agent's change meet it, judging from the "
                       "edits and commands in the trace?",
               "rubric": f"5: {qid} fully met, with evidence in the trace\n4: met with a minor gap\n3: partly met"
                         "\n2: mostly not met\n1: ignored although the change clearly required it"}
              for category, ids in topics.items() for qid in ids]
    body = {"questions": [*({"id": q.id, "enabled": q.id in keep} for q in QUESTIONS), *tenant]}
    catalog = CatalogVersion(version=1, entries=plan_catalog(CatalogUpdate.model_validate(body))).resolved()
    assert len(catalog.questions) == CUSTOM_CATALOG_SIZE
    return list(catalog.questions)


async def one_run(fake: FakeVendor, vendor: Literal["anthropic", "openai"], strategy: Strategy, latency: float,
                  doc: dict[str, Any], run_id: str,
                  questions: Sequence[Question] = QUESTIONS) -> tuple[float, JudgeRunResult]:
    base_url = fake.anthropic_base_url if vendor == "anthropic" else fake.openai_base_url
    model = build_judge_model(vendor, api_key="sk-bench-not-a-real-key-000", base_url=base_url, max_retries=2,
                              timeout_seconds=60, outbound=LOCAL_OUTBOUND)
    jobs = [QuestionJob(question=q, prior=QuestionOutcome(question_id=q.id, category=q.category)) for q in questions]
    tuning = RunnerTuning(concurrency=strategy.concurrency, warm_up=strategy.warm_up, retrospective=False,
                          progress_flush_seconds=max(latency, 0.1))
    run_input = JudgeRunInput(eval_run_id=run_id, session_id="bench", model_name=MODELS[vendor],
                              questions=list(questions), jobs=jobs, prior_verdicts={}, context_doc=doc,
                              reload_context=lambda _t: doc, requested_threshold=2000,
                              deadline=Deadline(len(questions) * latency * 4 + 60))
    started = time.perf_counter()
    result = await judge_run(run_input, model, NoAws(), tuning)
    return time.perf_counter() - started, result


def measure(vendor: Literal["anthropic", "openai"], strategy: Strategy, latency: float, doc: dict[str, Any],
            repeats: int, questions: Sequence[Question] = QUESTIONS) -> dict[str, Any]:
    walls: list[float] = []
    result: JudgeRunResult | None = None
    with FakeVendor(options=FakeVendorOptions(latency=latency)) as fake:
        for n in range(repeats):
            fake.reset()
            fake.configure(latency=latency)
            wall, result = asyncio.run(one_run(fake, vendor, strategy, latency, doc, f"evr_bench_{n}", questions))
            walls.append(wall)
            if result.stop != "done" or result.result is None or len(result.result.verdicts()) != len(questions):
                raise SystemExit(f"{strategy.name}: run did not judge all questions ({result.stop})")
        judges = [r for r in fake.requests if r["endpoint"] == "generate"]
        max_inflight = fake.stats()["max_inflight"]
    assert result is not None
    usage = result.usage
    full_prompt = [r["input_tokens"] + r["cache_read_input_tokens"] + r["cache_creation_input_tokens"]
                   for r in judges]
    billed = usage.input_tokens + WRITE * usage.cache_creation_input_tokens + READ * usage.cache_read_input_tokens
    return {
        "wall": statistics.median(walls),
        "writes": sum(1 for r in judges if r["cache"] == "write"),
        "reads": sum(1 for r in judges if r["cache"] == "read"),
        "billed": billed,
        "baseline": sum(full_prompt),
        "max_inflight": max_inflight,
        "prompt_tokens": statistics.median(full_prompt),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per judge call (L)")
    parser.add_argument("--trace-kb", type=int, default=200, help="size of the synthetic trace")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vendor", choices=sorted(MODELS), default="anthropic")
    args = parser.parse_args()
    latency = args.latency
    doc = eval_context(args.trace_kb)

    rows = [
        "| strategy | wall time / L | speed-up vs sequential | cache writes / reads | max in flight "
        "| billed-equivalent input tokens | vs full prompt x 13 |",
        "|---|---|---|---|---|---|---|",
    ]
    results = [(s, measure(args.vendor, s, latency, doc, args.repeats)) for s in STRATEGIES]
    sequential_wall = results[0][1]["wall"]
    baseline = results[0][1]["baseline"]
    rows.append(f"| reference as shipped: sequential, no prompt cache | 13 (by construction) | - | 0 / 0 | 1 "
                f"| {baseline:,} | 100% |")
    for strategy, m in results:
        rows.append(
            f"| {strategy.name} | {m['wall'] / latency:.2f} | {sequential_wall / m['wall']:.1f}x "
            f"| {m['writes']} / {m['reads']} | {m['max_inflight']} | {m['billed']:,.0f} "
            f"| {m['billed'] / baseline:.0%} |")
    print("## Judge runner: parallel judges and prompt caching (bench/runner)\n")
    print(f"13 questions, {args.vendor} wire format through the real SDK, fake vendor latency L = {latency:g} s "
          f"per judge call, a {args.trace_kb} KB trace (~{results[0][1]['prompt_tokens']:,.0f} prompt tokens per "
          f"call), median of {args.repeats} runs, retrospective off (it adds one more L after the judges).\n")
    print("\n".join(rows))
    warm = results[-1][1]
    burst = results[1][1]
    print(f"\nBilled-equivalent = uncached x 1 + cache write x 1.25 + cache read x 0.1 of the base input price; "
          "100% = the full prompt sent 13 times uncached, as the reference did. Judges started before the first "
          "one completes cannot read its prefix, so every judge of an all-at-once wave pays a cache write. "
          f"Trade-off measured here: warming first costs {(warm['wall'] - burst['wall']) / latency:.1f} L of wall "
          f"time against all-at-once and saves {1 - warm['billed'] / burst['billed']:.0%} of the input bill; "
          "with c=12 the other 12 judges run in a single wave after the warm-up (about 2 L in total, vs 13 L "
          "sequential).")
    print_custom_catalog(args.vendor, latency, doc, args.repeats, STRATEGIES[-1], warm)


def print_custom_catalog(vendor: Literal["anthropic", "openai"], latency: float, doc: dict[str, Any], repeats: int,
                         strategy: Strategy, builtin: dict[str, Any]) -> None:
    questions = custom_catalog()
    custom = measure(vendor, strategy, latency, doc, repeats, questions)
    if custom["writes"] != 1:
        raise SystemExit(f"custom catalog: {custom['writes']} cache writes; the shared prefix must be written once")
    n = len(questions)

    def expected(count: int) -> float:
        # One write of the shared prefix, the other judges read it (per-question suffixes are small).
        return (WRITE + READ * (count - 1)) / count

    print(f"\n### Custom catalog: {n} questions, the same cache behaviour\n")
    print(f"The default strategy ({strategy.name}) on the 13 built-ins and on a tenant catalog of {n} "
          "(8 built-ins, 12 tenant questions with rubrics in 3 new categories), same trace, vendor and L, "
          f"median of {repeats} runs. 'vs full prompt x N' divides by the run's own N calls sent uncached; the "
          "expected value for one write and N - 1 reads of the prefix is (1.25 + 0.1 (N - 1)) / N.\n")
    print("| catalog | questions | wall time / L | cache writes / reads | billed-equivalent input tokens "
          "| vs full prompt x N | expected (1.25 + 0.1 (N-1)) / N |")
    print("|---|---|---|---|---|---|---|")
    for label, m, count in (("built-in", builtin, len(QUESTIONS)), ("custom", custom, n)):
        print(f"| {label} | {count} | {m['wall'] / latency:.2f} | {m['writes']} / {m['reads']} | {m['billed']:,.0f} "
              f"| {m['billed'] / m['baseline']:.1%} | {expected(count):.1%} |")
    print(f"\nBoth runs write the shared prefix once and every other judge reads it: a custom catalog changes only "
          f"the per-question suffix, so the billed ratio follows the same formula (it falls with N: "
          f"{expected(len(QUESTIONS)):.1%} for 13, {expected(n):.1%} for {n}); with c=12 the {n - 1} judges after "
          "the warm-up take two waves.")


if __name__ == "__main__":
    main()
