"""Judge runner: wall time of a 13-question run in units of one judge call's latency L, with the vendor's
time to first token (TTFT) modelled apart from L, and the billed-equivalent input tokens, for the
sequential reference design and the parallel schedules.

Runs the real judge phase (`chalicelib.services.judge_runner.judge_run`: context fit, fan-out, repair
logic, progress coalescing) through the real anthropic/openai SDKs against the fake vendor in its own
process (`FakeVendorProcess`: like a remote vendor, its CPU does not compete with the runner's),
whose every judge call takes L seconds, begins its answer (first streamed event) at TTFT, and which
simulates the vendors' prompt caches (a prefix is readable once the answer that writes it has begun).
No AWS: progress writes are no-ops. The schedules are measured side by side, in interleaved rounds.

Billed-equivalent input tokens use Anthropic's multipliers of the base input price: uncached 1x,
cache write 1.25x, cache read 0.1x. The reference design (kapacitor-evals §8.1/§8.4) sends the full
prompt 13 times, sequentially, without a cache: 13 x prompt tokens at 1x and 13 x L.

A second table runs the default strategy on a tenant's custom catalog of 20 questions (built-ins
and tenant questions with rubrics, made by the catalog's own rules): custom questions live in the
per-question suffix, so the run must still write the shared prefix once and read it 19 times.

Usage: .venv/bin/python bench/runner/bench_runner.py [--latency 1.0] [--ttft-share 0.25] [--repeats 3]
       [--vendors anthropic,openai] [--trace-kb 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.judging import LOCAL_OUTBOUND, MODELS, NoAws, Vendor
from chalicelib.adapters.judge_models import build_judge_model
from chalicelib.domain.catalog import CatalogUpdate, CatalogVersion, plan_catalog
from chalicelib.domain.evaluation import QuestionOutcome
from chalicelib.judges.catalog import QUESTIONS, Question
from chalicelib.services.judge_runner import (
    Deadline,
    JudgeRunInput,
    JudgeRunResult,
    QuestionJob,
    RunnerTuning,
    judge_run,
)
from devstack.fake_vendor import FakeVendorOptions, FakeVendorProcess

WRITE, READ = 1.25, 0.1


@dataclass(frozen=True)
class Strategy:
    name: str
    concurrency: int
    warm_up: Literal["first", "whole", "none"]


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("sequential, c=1 (the reference's schedule, with our cache)", 1, "none"),
    Strategy("all at once, c=13", 13, "none"),
    Strategy("warm-up judge, fan out after its whole answer (before)", 13, "whole"),
    Strategy("warm-up judge streamed, fan out at its first token (default)", RunnerTuning().concurrency, "first"),
)


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


async def one_run(fake: FakeVendorProcess, vendor: Vendor, tuning: RunnerTuning, doc: dict[str, Any], run_id: str, *,
                  deadline_seconds: float, ports: NoAws | None = None, learned: int | None = None,
                  questions: Sequence[Question] = QUESTIONS) -> tuple[float, JudgeRunResult]:
    """One judge phase through the real SDK against `fake`; (wall seconds, result)."""
    base_url = fake.anthropic_base_url if vendor == "anthropic" else fake.openai_base_url
    model = build_judge_model(vendor, api_key="sk-bench-not-a-real-key-000", base_url=base_url, max_retries=2,
                              timeout_seconds=60, outbound=LOCAL_OUTBOUND)
    jobs = [QuestionJob(question=q, prior=QuestionOutcome(question_id=q.id, category=q.category)) for q in questions]
    run_input = JudgeRunInput(eval_run_id=run_id, session_id="bench", model_name=MODELS[vendor],
                              questions=list(questions), jobs=jobs, prior_verdicts={}, context_doc=doc,
                              reload_context=lambda _t: doc, requested_threshold=2000,
                              deadline=Deadline(deadline_seconds), learned_context_limit=learned)
    started = time.perf_counter()
    result = await judge_run(run_input, model, ports or NoAws(), tuning)
    return time.perf_counter() - started, result


def _summarise(judges: list[dict[str, Any]], result: JudgeRunResult, wall: float) -> dict[str, Any]:
    usage = result.usage
    full_prompt = [r["input_tokens"] + r["cache_read_input_tokens"] + r["cache_creation_input_tokens"]
                   for r in judges]
    return {"wall": wall, "writes": sum(1 for r in judges if r["cache"] == "write"),
            "reads": sum(1 for r in judges if r["cache"] == "read"),
            "billed": usage.input_tokens + WRITE * usage.cache_creation_input_tokens
            + READ * usage.cache_read_input_tokens,
            "baseline": sum(full_prompt), "prompt_tokens": statistics.median(full_prompt)}


def measure(vendor: Vendor, latency: float, ttft: float, doc: dict[str, Any], repeats: int,
            strategies: Sequence[Strategy] = STRATEGIES,
            questions: Sequence[Question] = QUESTIONS) -> dict[str, dict[str, Any]]:
    """Every strategy `repeats` times, in interleaved rounds (noise from a shared machine hits all alike)."""
    samples: dict[str, list[dict[str, Any]]] = {s.name: [] for s in strategies}
    with FakeVendorProcess(FakeVendorOptions(latency=latency, ttft=ttft)) as fake:
        for n in range(repeats):
            for strategy in strategies:
                fake.reset()
                tuning = RunnerTuning(concurrency=strategy.concurrency, warm_up=strategy.warm_up,
                                      retrospective=False, progress_flush_seconds=max(latency, 0.1))
                wall, result = asyncio.run(one_run(fake, vendor, tuning, doc, f"evr_bench_{n}_{strategy.warm_up}",
                                                   deadline_seconds=len(questions) * latency * 4 + 60,
                                                   questions=questions))
                if result.stop != "done" or result.result is None or len(result.result.verdicts()) != len(questions):
                    raise SystemExit(f"{strategy.name}: run did not judge all questions ({result.stop})")
                judges = [r for r in fake.requests if r["endpoint"] == "generate"]
                samples[strategy.name].append({**_summarise(judges, result, wall),
                                               "max_inflight": fake.stats()["max_inflight"]})
    out: dict[str, dict[str, Any]] = {}
    for name, runs in samples.items():
        first = runs[0]
        out[name] = {**first, "wall": statistics.median(r["wall"] for r in runs),
                     "max_inflight": max(r["max_inflight"] for r in runs)}
    return out


def table(vendor: Vendor, results: Mapping[str, dict[str, Any]], latency: float) -> list[str]:
    rows = ["| strategy | wall time / L | speed-up vs sequential | cache writes / reads | max in flight "
            "| billed-equivalent input tokens | vs full prompt x 13 |", "|---|---|---|---|---|---|---|"]
    first = next(iter(results.values()))
    sequential_wall, baseline = first["wall"], first["baseline"]
    rows.append(f"| reference as shipped: sequential, no prompt cache | 13 (by construction) | - | 0 / 0 | 1 "
                f"| {baseline:,} | 100% |")
    for name, m in results.items():
        rows.append(f"| {name} | {m['wall'] / latency:.2f} | {sequential_wall / m['wall']:.1f}x "
                    f"| {m['writes']} / {m['reads']} | {m['max_inflight']} | {m['billed']:,.0f} "
                    f"| {m['billed'] / baseline:.0%} |")
    return [f"**{vendor}** wire format (~{first['prompt_tokens']:,.0f} prompt tokens per call):", "", *rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per judge call (L)")
    parser.add_argument("--ttft-share", type=float, default=0.25, help="time to first token as a share of L")
    parser.add_argument("--trace-kb", type=int, default=200, help="size of the synthetic trace")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vendors", default="anthropic,openai")
    args = parser.parse_args()
    latency, ttft = args.latency, args.latency * args.ttft_share
    doc = eval_context(args.trace_kb)
    vendors: list[Vendor] = [v for v in ("anthropic", "openai") if v in args.vendors.split(",")]
    measured = {vendor: measure(vendor, latency, ttft, doc, args.repeats) for vendor in vendors}

    print("## Judge runner: parallel judges, streamed warm-up and prompt caching (bench/runner)\n")
    print(f"13 questions through the real SDKs, fake vendor L = {latency:g} s per judge call with its first token "
          f"at TTFT = {ttft:g} s (L/{1 / args.ttft_share:g}); a {args.trace_kb} KB trace; median of "
          f"{args.repeats} interleaved rounds; retrospective off (it adds one more L after the judges). "
          "Command: `.venv/bin/python -m bench.run_all --only runner`.\n")
    for vendor in vendors:
        print("\n".join(table(vendor, measured[vendor], latency)))
    default = STRATEGIES[-1].name
    before = STRATEGIES[-2].name
    lines = []
    for vendor in vendors:
        m = measured[vendor]
        billed = m[default]["billed"] / m[default]["baseline"]
        lines.append(f"{vendor}: {m[default]['wall'] / latency:.2f} L (target ≤ 1.5 L; TTFT + L = "
                     f"{(ttft + latency) / latency:.2f} L) against {m[before]['wall'] / latency:.2f} L when the "
                     f"fan-out waits for the whole warm-up answer, billed input {billed:.0%} of 13 x the full "
                     "prompt (target ≤ 20 %)")
    print("Billed-equivalent = uncached x 1 + cache write x 1.25 + cache read x 0.1 of the base input price; 100% = "
          "the full prompt sent 13 times uncached, as the reference did. Judges started before the first answer "
          "begins cannot read its prefix, so every judge of an all-at-once wave pays a cache write; fanning out at "
          "the warm-up's first token keeps the single write and saves the rest of the warm-up's L. Measured: "
          + "; ".join(lines) + ".")
    print_custom_catalog(vendors[0], latency, ttft, doc, args.repeats, measured[vendors[0]][default])


def print_custom_catalog(vendor: Vendor, latency: float, ttft: float, doc: dict[str, Any], repeats: int,
                         builtin: dict[str, Any]) -> None:
    questions = custom_catalog()
    strategy = STRATEGIES[-1]
    custom = measure(vendor, latency, ttft, doc, repeats, (strategy,), questions)[strategy.name]
    if custom["writes"] != 1:
        raise SystemExit(f"custom catalog: {custom['writes']} cache writes; the shared prefix must be written once")
    n = len(questions)

    def expected(count: int) -> float:
        # One write of the shared prefix, the other judges read it (per-question suffixes are small).
        return (WRITE + READ * (count - 1)) / count

    print(f"\n### Custom catalog: {n} questions, the same cache behaviour\n")
    print(f"The default strategy ({strategy.name}) on the 13 built-ins and on a tenant catalog of {n} "
          f"(8 built-ins, 12 tenant questions with rubrics in 3 new categories), same trace, {vendor} wire format "
          f"and L, median of {repeats} rounds. 'vs full prompt x N' divides by the run's own N calls sent uncached; "
          "the expected value for one write and N - 1 reads of the prefix is (1.25 + 0.1 (N - 1)) / N.\n")
    print("| catalog | questions | wall time / L | cache writes / reads | billed-equivalent input tokens "
          "| vs full prompt x N | expected (1.25 + 0.1 (N-1)) / N |")
    print("|---|---|---|---|---|---|---|")
    for label, m, count in (("built-in", builtin, len(QUESTIONS)), ("custom", custom, n)):
        print(f"| {label} | {count} | {m['wall'] / latency:.2f} | {m['writes']} / {m['reads']} | {m['billed']:,.0f} "
              f"| {m['billed'] / m['baseline']:.1%} | {expected(count):.1%} |")
    print(f"\nBoth runs write the shared prefix once and every other judge reads it: a custom catalog changes only "
          f"the per-question suffix, so the billed ratio follows the same formula (it falls with N: "
          f"{expected(len(QUESTIONS)):.1%} for 13, {expected(n):.1%} for {n}); the {n - 1} judges after the "
          "warm-up go out in one wave at its first token, so the wall time stays about TTFT + L.")


if __name__ == "__main__":
    main()
