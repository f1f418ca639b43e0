"""Tool-using judges: billed input tokens and wall time of a 13-question run with session tools on versus off,
on the same session, through the real anthropic/openai SDKs against the fake vendor in its own process.

What is measured is the runner's machinery (`chalicelib.services.judge_runner.judge_run` with
`RunTools`): every tool round re-sends the run's shared prefix (tool definitions + system prompt with the
trace), and must read it from the vendor's prompt cache instead of paying for it again. Target: the run's
billed input with tools on ≤ 1.3 x with tools off. How many rounds a judge makes is the judge's choice, so
five judge behaviours are measured (the fake vendor answers each of the 4 `needs_tools` questions with):
- "1 call": fetch the output the trace shows truncated (by the call_id on its marker), then answer — what
  the prompt asks for and the fake's default; the answer is the stored output's opening and end (~4 KB);
- "1 short call": fetch a short output the trace shows whole (~0.5 KB): what one round costs by itself;
- "2 calls": the default fetch and a search, in two rounds;
- "3 calls": the outline, a search and the default fetch, in three rounds;
- "whole output": the default fetch, then the rest of the stored output (~16 KB in all) in two more reads
  by `offset` — a judge that reads everything.
"Tools off" judges the same 13 questions with `needs_tools` false (the text path, no tool definitions).

Billed-equivalent input tokens: Anthropic uncached x 1 + cache write x 1.25 + cache read x 0.1; OpenAI
(gpt-4.1) uncached x 1 + cached x 0.25 (OpenAI does not bill cache writes). The fake counts chars / 4.

Usage: .venv/bin/python bench/tools/bench_tools.py [--latency 0.4] [--repeats 3] [--trace-kb 150]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.judging import LOCAL_OUTBOUND, MODELS, NoAws, Vendor
from chalicelib.adapters.judge_models import build_judge_model
from chalicelib.domain.evaluation import QuestionOutcome, TokenUsage
from chalicelib.judges.catalog import QUESTIONS, Question
from chalicelib.judges.evidence import number_entries
from chalicelib.judges.tools import RESULT_PAGE_MAX_BYTES, TOOL_RESULT_MAX_BYTES, VIEW_HEAD_BYTES
from chalicelib.services.judge_runner import (
    Deadline,
    JudgeRunInput,
    JudgeRunResult,
    QuestionJob,
    RunnerTuning,
    judge_run,
)
from chalicelib.services.session_tools import FullOutputs, RunTools, truncated_positions
from devstack.fake_vendor import FakeVendorOptions, FakeVendorProcess

RATES: dict[Vendor, tuple[float, float, float]] = {"anthropic": (1.0, 1.25, 0.1), "openai": (1.0, 1.0, 0.25)}
TOOL_QUESTIONS = [q.id for q in QUESTIONS if q.needs_tools]


def session(trace_kb: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the compacted eval context at 2000 bytes, numbered; the stored entries with the whole outputs)."""
    stored: list[dict[str, Any]] = [{"kind": "user_message", "timestamp": "2025-06-01T10:00:00.000Z",
                                     "text": "Fix the failing build and add a regression test for the parser."}]
    i = 0
    while sum(len(str(e)) for e in stored) < trace_kb * 1024:
        ts = f"2025-06-01T10:{(i // 60) % 60:02d}:{i % 60:02d}.000Z"
        big = i % 10 == 3  # every tenth result is a long test/build log, truncated in the context
        output = ("tests/test_parser.py ....\n" * 800 + "FAILED tests/test_parser.py::test_nested - KeyError\n"
                  if big else f"tests/test_module_{i}.py ........ [100%]\n" * 12)
        stored.append({"kind": "tool_invocation", "timestamp": ts, "tool": "Bash", "call_id": f"c{i}",
                       "arguments": {"command": f"pytest tests/test_module_{i}.py -q"}})
        stored.append({"kind": "tool_result", "timestamp": ts, "tool": "Bash", "call_id": f"c{i}", "output": output,
                       "is_error": big, "truncated": False, "output_bytes": len(output)})
        i += 1
    trace = [dict(e, output=f"<truncated: {len(e['output'])} bytes, kind=Bash>", truncated=True)
             if e["kind"] == "tool_result" and len(e["output"]) > 2000 else dict(e) for e in stored]
    doc = number_entries({"session_id": "bench", "session_chain": ["bench"], "trace": trace,
                          "compaction": {"threshold_bytes": 2000, "entries": len(trace)}})
    return doc, stored


def script(name: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls each tool question makes, one per round, before it answers."""
    first = next(e["call_id"] for e in doc["trace"] if e.get("truncated"))
    short = next(e["call_id"] for e in doc["trace"] if e["kind"] == "tool_result" and not e.get("truncated"))
    fetch = {"name": "get_tool_result", "arguments": {"call_id": first}}
    search = {"name": "search_session", "arguments": {"query": "FAILED test_parser", "limit": 5}}
    summary = {"name": "get_session_summary", "arguments": {}}
    pages = [{"name": "get_tool_result", "arguments": {"call_id": first, "offset": offset,
                                                       "max_bytes": RESULT_PAGE_MAX_BYTES}}
             for offset in range(VIEW_HEAD_BYTES, TOOL_RESULT_MAX_BYTES, RESULT_PAGE_MAX_BYTES)]
    return {"1": [fetch], "short": [{"name": "get_tool_result", "arguments": {"call_id": short}}],
            "2": [fetch, search], "3": [summary, search, fetch], "whole": [fetch, *pages]}[name]


def behaviour(name: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Fake-vendor rules: each tool question makes the calls of `script(name)`, then answers."""
    return [{"match": qid, "times": None, "tool_calls": script(name, doc)} for qid in TOOL_QUESTIONS]


async def one_run(fake: FakeVendorProcess, vendor: Vendor, doc: dict[str, Any], stored: list[dict[str, Any]],
                  *, tools: bool, run_id: str, latency: float) -> tuple[float, JudgeRunResult]:
    base_url = fake.anthropic_base_url if vendor == "anthropic" else fake.openai_base_url
    model = build_judge_model(vendor, api_key="sk-bench-not-a-real-key-000", base_url=base_url, max_retries=2,
                              timeout_seconds=60, outbound=LOCAL_OUTBOUND)
    questions: list[Question] = [q if tools else q.model_copy(update={"needs_tools": False}) for q in QUESTIONS]
    jobs = [QuestionJob(question=q, prior=QuestionOutcome(question_id=q.id, category=q.category)) for q in questions]
    run_tools = None
    if tools:
        outputs = FullOutputs(truncated_positions(doc["trace"]))
        outputs.wait_with(lambda: 60.0)
        outputs.load(stored)
        run_tools = RunTools(doc["trace"], session_id="bench", session_chain=["bench"], outputs=outputs)
    run_input = JudgeRunInput(eval_run_id=run_id, session_id="bench", model_name=MODELS[vendor], questions=questions,
                              jobs=jobs, prior_verdicts={}, context_doc=doc, reload_context=lambda _t: doc,
                              requested_threshold=2000, deadline=Deadline(120 + 40 * latency), tools=run_tools)
    tuning = RunnerTuning(retrospective=False, progress_flush_seconds=max(latency, 0.1))
    started = time.perf_counter()
    result = await judge_run(run_input, model, NoAws(), tuning)
    return time.perf_counter() - started, result


def billed(vendor: Vendor, usage: TokenUsage) -> float:
    plain, write, read = RATES[vendor]
    return plain * usage.input_tokens + write * usage.cache_creation_input_tokens + read * usage.cache_read_input_tokens


Case = tuple[str, bool, str]  # (label, tools on, the tool questions' script)
CASES: tuple[Case, ...] = (("tools off", False, ""), ("tools on, 1 call (default)", True, "1"),
                           ("tools on, 1 short call", True, "short"), ("tools on, 2 calls", True, "2"),
                           ("tools on, 3 calls", True, "3"), ("tools on, whole output (3 calls)", True, "whole"))


def measure(vendor: Vendor, latency: float, trace_kb: int, repeats: int) -> dict[str, dict[str, Any]]:
    doc, stored = session(trace_kb)
    samples: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in CASES}
    with FakeVendorProcess(FakeVendorOptions(latency=latency, ttft=latency / 4)) as fake:
        for n in range(repeats):
            for label, tools, name in CASES:  # interleaved: a busy machine slows every case alike
                fake.reset()
                calls = len(script(name, doc)) if tools else 0
                if tools:
                    fake.script(*behaviour(name, doc))
                wall, result = asyncio.run(one_run(fake, vendor, doc, stored, tools=tools, latency=latency,
                                                   run_id=f"evr_tools_{n}_{name or 'off'}"))
                if result.stop != "done" or result.result is None or len(result.result.verdicts()) != 13:
                    raise SystemExit(f"{vendor} {label}: the run did not judge all 13 questions ({result.stop})")
                used = [v.tools_used for v in result.result.verdicts() if v.tools_used is not None]
                if tools and [len(u) for u in used] != [calls] * len(TOOL_QUESTIONS):
                    raise SystemExit(f"{vendor} {label}: unexpected tool calls {used}")
                requests = [r for r in fake.requests if r["endpoint"] == "generate"]
                samples[label].append({"wall": wall, "billed": billed(vendor, result.usage), "usage": result.usage,
                                       "requests": len(requests),
                                       "writes": sum(r["cache"] == "write" for r in requests),
                                       "reads": sum(r["cache"] == "read" for r in requests),
                                       "prompt": statistics.median(r["input_tokens"] + r["cache_read_input_tokens"]
                                                                   + r["cache_creation_input_tokens"]
                                                                   for r in requests)})
    return {label: {**runs[0], "wall": statistics.median(r["wall"] for r in runs),
                    "billed": statistics.median(r["billed"] for r in runs)} for label, runs in samples.items()}


def print_table(vendor: Vendor, trace_kb: int, results: dict[str, dict[str, Any]], latency: float) -> list[float]:
    off = results["tools off"]
    print(f"**{vendor}** wire format, {trace_kb} KB trace (~{off['prompt']:,.0f} prompt tokens per request):\n")
    print("| run | requests | cache writes / reads | input: uncached / cache write / cache read "
          "| billed-equivalent input | vs tools off | wall time / L |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for label, m in results.items():
        u = m["usage"]
        ratio = m["billed"] / off["billed"]
        ratios.append(ratio)
        print(f"| {label} | {m['requests']} | {m['writes']} / {m['reads']} | {u.input_tokens:,} / "
              f"{u.cache_creation_input_tokens:,} / {u.cache_read_input_tokens:,} | {m['billed']:,.0f} "
              f"| {ratio:.2f}x | {m['wall'] / latency:.2f} |")
    print()
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=0.4, help="seconds per judge request (L)")
    parser.add_argument("--trace-kb", default="2000,600,150", help="stored trace sizes in KB, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(kb) for kb in args.trace_kb.split(",")]
    print("## Tool-using judges: billed input and wall time with tools on versus off (bench/tools)\n")
    print(f"13 built-in questions (4 `needs_tools`), the same session per table ({' and '.join(map(str, sizes))} KB "
          "traces, every tenth tool output a 21 KB log the context truncates), real SDKs against the fake vendor in "
          f"its own process, every request L = {args.latency:g} s with its first token at L/4; warm-up judge "
          f"streamed, the rest fanned out at its first token; retrospective off; median of {args.repeats} "
          "interleaved rounds. Command: `.venv/bin/python -m bench.run_all --only tools`.\n")
    summary = []
    for kb in sizes:
        for vendor in ("anthropic", "openai"):
            ratios = print_table(vendor, kb, measure(vendor, args.latency, kb, args.repeats), args.latency)
            summary.append(f"{vendor} at {kb} KB: **{ratios[1]:.2f}x** with the default single fetch "
                           f"({ratios[2]:.2f}x for a round with a short answer), {ratios[3]:.2f}x with 2 calls, "
                           f"{ratios[4]:.2f}x with 3, {ratios[5]:.2f}x reading the whole stored output")
    print("Billed-equivalent input: Anthropic uncached x 1 + cache write x 1.25 + cache read x 0.1; OpenAI uncached "
          "x 1 + cached x 0.25. Every tool round re-sends the run's prefix (tool definitions, instructions and the "
          "trace) and reads it from the cache, so a round costs about a tenth (Anthropic) or a quarter (OpenAI) of "
          "the prefix, plus what the judge reads (a fetch without `offset` answers at most ~4,000 bytes, ~1,000 "
          "tokens; a stored output is at most 16,000 bytes, ~4,000 tokens; paid once as new input): the ratio to "
          "tools off grows with the rounds and reads the judges choose and shrinks as the trace grows; the short-"
          "answer row is what the extra round costs by itself. Target ≤ 1.3x: " + "; ".join(summary)
          + ". Wall time: a tool question takes one more request per round after its first answer, and the run "
          "ends with its slowest question.")


if __name__ == "__main__":
    main()
