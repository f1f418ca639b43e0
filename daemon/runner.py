"""Runs one claimed job: fetch the eval context, judge the questions in parallel with the local CLI,
relay the nine progress events, aggregate with the service's own code, post the result.

The prompts, schemas, verdict parsing and aggregation are imported from `chalicelib.judges` (the
same pure code the server runner uses), so the two runners cannot drift. Cancellation and the
run's deadline kill every judge process group of the job at once; a 409 from the service (run
cancelled, timed out or finished elsewhere) does the same.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chalicelib.domain.context_limits import ContextTooSmall
from chalicelib.domain.evaluation import JudgeVerdict, Retrospective, TokenUsage, ToolUse
from chalicelib.judges.aggregation import aggregate
from chalicelib.judges.catalog import Question
from chalicelib.judges.evidence import number_entries
from chalicelib.judges.prompts import (
    RetrospectiveMeta,
    build_full_prompt,
    build_retrospective_prompt,
    build_shared_context,
)
from chalicelib.judges.schema import retrospective_json_schema, verdict_json_schema
from chalicelib.judges.verdicts import ParsedVerdict, parse_retrospective, parse_verdict, sanitize_reason
from daemon.client import ApiClient, ApiError
from daemon.context_refit import SharedContext, threshold_of, with_threshold
from daemon.judges import CliJudge, JudgeResult, ProcessGroup
from daemon.sandbox import Bubblewrap
from daemon.session_tools import JobTools, fetch_outputs, mcp_python, needs_tools

Log = Callable[[str], None]


class RunAborted(Exception):
    """The job must stop: cancelled, past its deadline, or the service ended the run."""


@dataclass
class JobOutcome:
    eval_run_id: str
    status: str  # succeeded | failed | cancelled | timed_out | aborted
    detail: str = ""
    result: dict[str, Any] | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


class JobRunner:
    def __init__(self, job: dict[str, Any], *, api: ApiClient, judge: CliJudge, slots: threading.Semaphore,
                 retrospective: bool = True, log: Log = lambda _m: None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.job = job
        self.run_id = str(job["eval_run_id"])
        self.session_id = str(job["session_id"])
        self.questions = [Question.model_validate(q) for q in job["questions"]]
        self.deadline = _parse_time(str(job["deadline_at"]))
        self._api = api
        self.judge = judge
        self._slots = slots
        self._retrospective = retrospective
        self._log = log
        self._now = now
        self._group = ProcessGroup()
        self._stop_reason: str | None = None
        self._post_lock = threading.Lock()
        self._usage = TokenUsage()
        self._deadline_timer: threading.Timer | None = None
        self._trace_entries: int | None = None
        self._tools: JobTools | None = None
        patterns = job.get("known_patterns")  # the tenant gives judges the repository's facts
        self._known_patterns: list[str] | None = [str(p) for p in patterns] if isinstance(patterns, list) else None
        self._context_failure: ContextTooSmall | None = None

    # -- control -------------------------------------------------------------------------------
    def cancel(self, reason: str = "cancelled") -> None:
        """Stop now: kill every judge process of this job (called from other threads)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._group.kill_all()

    @property
    def stopped(self) -> bool:
        return self._stop_reason is not None

    def _seconds_left(self) -> float:
        return (self.deadline - self._now()).total_seconds()

    def _check(self) -> None:
        if self._stop_reason is None and self._seconds_left() <= 0:
            self.cancel("timeout")
        if self._stop_reason is not None:
            raise RunAborted(self._stop_reason)

    def _post(self, event: dict[str, Any]) -> None:
        """Events go out one at a time (the service applies them in order) and a 409 ends the job."""
        body = {"eval_run_id": self.run_id, "session_id": self.session_id, **event}
        with self._post_lock:
            try:
                self._api.post_event(self.run_id, body)
            except ApiError as exc:
                if exc.status in (404, 409):
                    self.cancel(f"service: {exc.code}")
                    raise RunAborted(exc.code) from exc
                self._log(f"[{self.run_id}] event {event['type']} refused: {exc}")

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> JobOutcome:
        left = self._seconds_left()
        self._deadline_timer = threading.Timer(max(left, 0.0), self.cancel, args=("timeout",))
        self._deadline_timer.daemon = True
        self._deadline_timer.start()
        try:
            return self._run()
        except RunAborted as exc:
            return self._aborted(str(exc))
        except Exception as exc:
            reason = f"internal: {type(exc).__name__}: {sanitize_reason(str(exc), 300)}"
            self._log(f"[{self.run_id}] failed: {reason}")
            with contextlib.suppress(ApiError, OSError):
                self._api.post_event(self.run_id, {"type": "eval_failed", "eval_run_id": self.run_id,
                                                   "session_id": self.session_id, "reason": reason})
            return JobOutcome(self.run_id, "failed", reason, usage=self._usage)
        finally:
            self._deadline_timer.cancel()
            self._group.kill_all()

    def _aborted(self, reason: str) -> JobOutcome:
        if reason.startswith("service:") or reason in ("run_state_conflict", "run_timed_out", "eval_run_not_found"):
            return JobOutcome(self.run_id, "aborted", reason, usage=self._usage)
        if reason == "timeout":
            status, message = "timed_out", "timeout: the run's deadline passed before the judges finished"
        elif reason == "cancelled":
            status, message = "cancelled", "cancelled"
        else:  # e.g. the daemon is shutting down
            status, message = "failed", sanitize_reason(reason, 300)
        # A 409 (the service already ended the run) or an unreachable service: nothing more to do.
        with contextlib.suppress(ApiError, OSError):
            self._api.post_event(self.run_id, {"type": "eval_failed", "eval_run_id": self.run_id,
                                               "session_id": self.session_id, "reason": message})
        return JobOutcome(self.run_id, status, message, usage=self._usage)

    def _run(self) -> JobOutcome:
        self._check()
        try:
            context = self._api.get(str(self.job["eval_context_path"]))
        except (ApiError, OSError) as exc:
            reason = f"context load failed: {sanitize_reason(str(exc), 300)}"
            self._post({"type": "eval_failed", "reason": reason})
            return JobOutcome(self.run_id, "failed", reason)
        number_entries(context)  # judges see and cite each entry's `pos`, as on the server
        self._trace_entries = len(context.get("trace") or [])
        judge_model = self.judge.judge_model
        path = str(self.job["eval_context_path"])
        self._tools = self._session_tools(context, threshold_of(path)) if needs_tools(self.questions) else None
        shared = SharedContext(
            context, session_id=self.session_id, run_id=self.run_id, model=judge_model,
            requested_threshold=threshold_of(path), questions=self.questions,
            fetch=lambda threshold: number_entries(self._api.get(with_threshold(path, threshold))),
            render=lambda context_json: build_shared_context(self.session_id, self.run_id, context_json,
                                                             self._known_patterns))
        total = len(self.questions)
        self._post({"type": "eval_started", "judge_model": judge_model, "total_questions": total})

        verdicts: dict[str, JudgeVerdict] = {}
        with ThreadPoolExecutor(max_workers=max(total, 1), thread_name_prefix=f"judge-{self.run_id[-6:]}") as pool:
            futures = [pool.submit(self._judge_question, index, q, shared)
                       for index, q in enumerate(self.questions, start=1)]
            for fut in futures:
                try:
                    parsed = fut.result()
                except RunAborted:
                    continue
                if parsed is not None:
                    verdicts[parsed.verdict.question_id] = parsed.verdict
        self._check()

        ordered = [verdicts[q.id] for q in self.questions if q.id in verdicts]
        if not ordered and self._context_failure is not None:
            reason = f"context_too_small: {sanitize_reason(self._context_failure.message, 900)}"
            self._post({"type": "eval_failed", "reason": reason})
            return JobOutcome(self.run_id, "failed", reason, usage=self._usage)
        if not ordered:
            reason = "all judge invocations failed"
            self._post({"type": "eval_failed", "reason": reason})
            return JobOutcome(self.run_id, "failed", reason, usage=self._usage)
        payload = aggregate(self.run_id, judge_model, self.questions, ordered, None)
        retro = self._run_retrospective(payload.overall_score, ordered, judge_model) if self._retrospective else None
        self._check()
        payload = aggregate(self.run_id, judge_model, self.questions, ordered, retro)
        if note := shared.report.get("note"):  # what a refit removed, and why (the service recomputes the summary)
            self._log(f"[{self.run_id}] {note}")
        body = payload.model_dump(mode="json")
        try:
            self._api.post_result(self.run_id, body)
        except ApiError as exc:
            if exc.status in (404, 409):
                return JobOutcome(self.run_id, "aborted", exc.code, usage=self._usage)
            reason = f"result refused: {exc}"
            self._post({"type": "eval_failed", "reason": sanitize_reason(reason, 1000)})
            return JobOutcome(self.run_id, "failed", reason, usage=self._usage)
        with contextlib.suppress(RunAborted):
            self._post({"type": "eval_finished", "overall_score": payload.overall_score, "summary": payload.summary})
        return JobOutcome(self.run_id, "succeeded", payload.summary, result=body, usage=self._usage)

    def _session_tools(self, context: dict[str, Any], threshold: int) -> JobTools:
        """The job's session data for its tool-using judges: the context as the judges see it and the whole
        outputs of its truncated results. If those cannot be fetched the tools still answer, from the markers."""
        python = mcp_python(isinstance(self.judge.sandbox, Bubblewrap))
        try:
            outputs = fetch_outputs(self._api.get, self.session_id, threshold=threshold,
                                    chain=bool(self.job.get("chain")))
        except (ApiError, OSError) as exc:
            self._log(f"[{self.run_id}] tool outputs not fetched ({sanitize_reason(str(exc), 200)}); "
                      "the judges' tools answer from the trace's markers")
            return JobTools.from_context(context, {}, python=python, fetch_error=str(exc))
        return JobTools.from_context(context, outputs, python=python)

    def _call_judge(self, prompt: str, schema: dict[str, Any]) -> JudgeResult:
        with self._slots:  # the daemon-wide --concurrency limit on judge processes
            self._check()
            result = self.judge.run(prompt, schema, group=self._group, timeout=self._seconds_left())
        with self._post_lock:
            self._usage = self._usage + result.usage
        return result

    def _judge_question(self, index: int, question: Question, shared: SharedContext) -> ParsedVerdict | None:
        total = len(self.questions)
        common = {"index": index, "total": total, "category": question.category, "question_id": question.id}
        self._check()
        with self._slots:
            self._check()
            self._post({"type": "eval_question_started", **common})
            while True:
                generation = shared.generation
                prompt = build_full_prompt(self.session_id, self.run_id, shared.json, question, self._known_patterns)
                result = self.judge.run(prompt, verdict_json_schema(), group=self._group,
                                        timeout=self._seconds_left(),
                                        tools=self._tools if question.needs_tools else None)
                with self._post_lock:
                    self._usage = self._usage + result.usage
                if result.cancelled or self.stopped or not (result.failure or "").startswith("context_overflow"):
                    break
                # The CLI refused the prompt as too long: one refit for every judge of the job, then ask again.
                try:
                    shared.refit(generation, result.failure or "", len(prompt))
                except ContextTooSmall as exc:
                    self._context_failure = exc
                    result = JudgeResult(text=None, failure=f"context_overflow: {exc.message}")
                    break
                self._check()
        if result.cancelled or self.stopped:
            raise RunAborted(self._stop_reason or "cancelled")
        if result.text is None:
            self._post({"type": "eval_question_failed", **common,
                        "reason": sanitize_reason(result.failure or "", 1000)})
            return None
        used = [ToolUse.model_validate(c) for c in result.tool_calls] if result.tool_calls is not None else None
        parsed = parse_verdict(result.text, question, tools_used=used, trace_entries=self._trace_entries)
        if not isinstance(parsed, ParsedVerdict):
            self._post({"type": "eval_question_failed", **common,
                        "reason": "invalid_output: " + sanitize_reason(parsed.reason, 1000)})
            return None
        for violation in parsed.violations:
            self._log(f"[{self.run_id}] {question.id}: {violation}")
        u = result.usage
        self._post({"type": "eval_question_completed", **common, "score": parsed.verdict.score,
                    "verdict": parsed.verdict.verdict, "input_tokens": u.input_tokens,
                    "output_tokens": u.output_tokens, "cache_read_input_tokens": u.cache_read_input_tokens,
                    "cache_creation_input_tokens": u.cache_creation_input_tokens,
                    "retain_fact": parsed.retain_fact})
        return parsed

    def _run_retrospective(self, overall: int, verdicts: list[JudgeVerdict], judge_model: str) -> Retrospective | None:
        self._post({"type": "eval_retrospective_started"})
        meta = RetrospectiveMeta(session_id=self.session_id, eval_run_id=self.run_id, judge_model=judge_model,
                                 overall_score=overall, questions_selected=len(self.questions))
        result = self._call_judge(build_retrospective_prompt(meta, verdicts), retrospective_json_schema())
        if result.cancelled or self.stopped:
            raise RunAborted(self._stop_reason or "cancelled")
        if result.text is None:
            self._post({"type": "eval_retrospective_failed", "reason": sanitize_reason(result.failure or "", 1000)})
            return None
        parsed = parse_retrospective(result.text)
        if not isinstance(parsed, Retrospective):
            self._post({"type": "eval_retrospective_failed", "reason": sanitize_reason(parsed.reason, 1000)})
            return None
        self._post({"type": "eval_retrospective_completed"})
        return parsed
