"""What the judge-runner tests share: an in-memory judge model scripted per question, the runner's ports,
FAST tuning, a context document, and `run`, which drives judge_run over them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.context_limits import StatedLimit
from chalicelib.domain.evaluation import QuestionOutcome, TokenUsage
from chalicelib.domain.judging import FirstToken, JudgeCall, JudgeReply, VendorCallError
from chalicelib.judges.catalog import QUESTIONS, Question
from chalicelib.services.judge_runner import (
    Deadline,
    JudgeRunInput,
    JudgeRunResult,
    QuestionJob,
    RunnerTuning,
    judge_run,
)

_ID = re.compile(r"^ID: (\S+)$", re.M)
FAST = RunnerTuning(concurrency=13, cancel_poll_seconds=0.02, progress_flush_seconds=0.05,
                    retrospective_min_seconds=0.0)


@dataclass
class Step:
    latency: float = 0.0
    error: VendorCallError | None = None
    text: str | None = None
    hang: bool = False


@dataclass
class ScriptedModel:
    """A JudgeModel whose answers are scripted per question id; records concurrency and cancellations."""

    script: dict[str, list[Step]] = field(default_factory=dict)
    default_latency: float = 0.01
    ttft: float | None = None  # seconds to the first token (the prefix is readable from then); None → latency
    window: int = 200_000  # what the model table says
    limit: int | None = None  # what the vendor enforces (a gateway's lower limit), stated when refusing
    counts: bool = True
    starts: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    contexts: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0
    cached_prefixes: set[str] = field(default_factory=set)
    closed: bool = False

    def _refusal(self, shared: str, prompt: str) -> VendorCallError | None:
        tokens = (len(shared) + len(prompt)) // 4
        if self.limit is None or tokens <= self.limit:
            return None
        return VendorCallError("context_overflow", f"prompt is too long: {tokens} tokens > {self.limit} maximum",
                               status=400, stated_limit=StatedLimit(self.limit, tokens))

    async def judge(self, call: JudgeCall, *, on_first_token: FirstToken | None = None) -> JudgeReply:
        found = _ID.search(call.prompt)
        qid = found.group(1) if found else "retrospective"
        self.starts.append(qid)
        self.contexts.append(len(call.shared_context))
        if (refusal := self._refusal(call.shared_context, call.prompt)) is not None:
            self.refused.append(qid)
            await asyncio.sleep(0.005)  # vendors refuse these up front, after a round trip
            raise refusal
        read = call.shared_context in self.cached_prefixes  # readable only once a writer's answer began
        step = self.script.get(qid, [Step(self.default_latency)])
        current = step.pop(0) if len(step) > 1 else step[0]
        first = current.latency if self.ttft is None else min(self.ttft, current.latency)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(3600 if current.hang else first)
            if current.error is None:
                if call.shared_context:
                    self.cached_prefixes.add(call.shared_context)
                if on_first_token is not None:
                    on_first_token()
            await asyncio.sleep(current.latency - first)
        except asyncio.CancelledError:
            self.cancelled.append(qid)
            raise
        finally:
            self.inflight -= 1
        if current.error is not None:
            raise current.error
        self.finished.append(qid)
        prefix = len(call.shared_context) // 4
        usage = TokenUsage(input_tokens=len(call.prompt) // 4, output_tokens=20,
                           cache_read_input_tokens=prefix if read else 0,
                           cache_creation_input_tokens=0 if read else prefix)
        return JudgeReply(text=current.text or verdict_json(qid), usage=usage, latency_ms=int(current.latency * 1000),
                          model=call.model, request_id=None)

    async def count_tokens(self, model: str, shared_context: str, prompt: str) -> int | None:
        if not self.counts:
            return None
        if (refusal := self._refusal(shared_context, prompt)) is not None:
            raise refusal
        return (len(shared_context) + len(prompt)) // 4

    def context_window(self, model: str) -> int:
        return self.window

    async def aclose(self) -> None:
        self.closed = True


# A tenant's own questions, on top of the 13 built-ins (a catalog can have up to 53).
TEAM = [Question(category="team", id=f"team_standard_{i}", text=f"Team standard {i}",
                 prompt=f"Did the change meet team standard {i}?") for i in range(7)]


def verdict_json(qid: str, score: int = 4) -> str:
    if qid == "retrospective":
        return json.dumps({"overall": "Fine.", "strengths": ["a"], "issues": [], "suggestions": []})
    q = next(q for q in [*QUESTIONS, *TEAM] if q.id == qid)
    return json.dumps({"category": q.category, "question_id": q.id, "score": score, "verdict": "pass",
                       "finding": f"finding for {qid}", "evidence": "src/app.py", "recommendation": None,
                       "retain_fact": None})


@dataclass
class Ports:
    cancel_when: Any = None  # callable(model) -> bool
    refreshed_model: Any = None
    flushes: list[list[str]] = field(default_factory=list)
    flushed_contexts: list[Any] = field(default_factory=list)
    refreshes: int = 0
    model: ScriptedModel | None = None
    remembered: list[tuple[StatedLimit, str]] = field(default_factory=list)

    async def flush(self, outcomes: Sequence[QuestionOutcome], usage: TokenUsage, context: Any) -> bool:
        if await self.is_cancelled():
            return False
        self.flushes.append([o.question_id for o in outcomes])
        self.flushed_contexts.append(context)
        return True

    async def is_cancelled(self) -> bool:
        return bool(self.cancel_when and self.cancel_when(self.model))

    async def refresh_model(self) -> Any:
        self.refreshes += 1
        return self.refreshed_model

    async def remember_context_limit(self, stated: StatedLimit, source: str) -> None:
        self.remembered.append((stated, source))


def doc(n: int = 30) -> dict[str, Any]:
    trace = [{"kind": "user_message", "timestamp": "2025-06-01T10:00:00.000Z", "text": "Fix the bug"}]
    trace += [{"kind": "assistant_message", "timestamp": "2025-06-01T10:00:01.000Z", "text": f"step {i} " * 20}
              for i in range(n)]
    return {"session_id": "s1", "session_chain": ["s1"], "trace": trace,
            "compaction": {"threshold_bytes": 2000, "tool_results_total": 0, "tool_results_truncated": 0}}


def run(model: ScriptedModel, ports: Ports | None = None, *, tuning: RunnerTuning = FAST, seconds: float = 10.0,
        questions: Sequence[Any] = QUESTIONS, context: dict[str, Any] | None = None,
        learned: int | None = None) -> tuple[JudgeRunResult, Ports]:
    ports = ports or Ports()
    ports.model = model
    jobs = [QuestionJob(question=q, prior=QuestionOutcome(question_id=q.id, category=q.category)) for q in questions]
    document = context or doc()
    run_input = JudgeRunInput(eval_run_id="evr_1", session_id="s1", model_name="claude-sonnet-4-6",
                              questions=list(questions), jobs=jobs, prior_verdicts={}, context_doc=document,
                              reload_context=lambda _t: document, requested_threshold=2000,
                              deadline=Deadline(seconds), log_fields={"eval_run_id": "evr_1"},
                              learned_context_limit=learned)
    return asyncio.run(judge_run(run_input, model, ports, tuning)), ports
