"""Scheduling the judges of one run: the warm-up judge (streamed) and the fan-out of the other questions
as soon as its answer begins, the per-run concurrency bound, one question's ask (with its tool rounds for a
`needs_tools` question) and repair re-ask, coalesced progress writes, and supervision by the deadline and the
cancel poll.

Why the warm-up is streamed: a vendor's prompt cache holds the shared trace once the answer that
writes it has begun (Anthropic documents it; OpenAI's prefix cache likewise), so the other 12 judges
fan out at the warm-up's first token and read the trace from the cache: wall time ≈ TTFT + L, input
billed once at the write price and 12 times at the read price. Waiting for the whole warm-up answer
would cost 2 L; fanning out at once would pay 13 cache writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from chalicelib.domain.evaluation import FailureKind, FailureReason, QuestionOutcome, TokenUsage
from chalicelib.domain.json_depth import loads_bounded
from chalicelib.domain.judging import FirstToken, JudgeReply, ToolChoice, ToolRound, VendorCallError
from chalicelib.judges.catalog import Question
from chalicelib.judges.prompts import PROMPT_SEPARATOR, build_question_prompt, build_repair_prompt
from chalicelib.judges.schema import VERDICT_SCHEMA_NAME, verdict_json_schema
from chalicelib.judges.tools import MAX_TOOL_ROUNDS, ToolConversation
from chalicelib.judges.verdicts import VerdictFailure, VerdictParse, parse_verdict, strip_fences
from chalicelib.observability import logger
from chalicelib.services.judge_ports import RunPorts
from chalicelib.services.judge_session import Deadline, JudgeSession, RunAborted
from chalicelib.services.session_tools import echoed_round, tools_used

T = TypeVar("T")
Stop = Literal["done", "deadline", "cancelled", "aborted"]


# ------------------------------------------------------------------------------------ one question


@dataclass(frozen=True)
class QuestionJob:
    question: Question
    prior: QuestionOutcome  # what the run record holds for it (attempts and usage carry over)


def _failed(job: QuestionJob, kind: FailureKind, message: str, usage: TokenUsage, calls: int,
            started: float, status: Literal["failed", "timed_out", "cancelled"] = "failed") -> QuestionOutcome:
    return QuestionOutcome(
        question_id=job.question.id, category=job.question.category, status=status,
        failure_reason=FailureReason(kind=kind, message=message[:1000]), usage=job.prior.usage + usage,
        latency_ms=int((time.monotonic() - started) * 1000), attempts=job.prior.attempts + calls)


def _score_out_of_range(raw: str) -> bool:
    """A well-formed verdict whose score is an integer outside 1..5: a judge error, not a format
    error, so it fails the question without a repair re-ask."""
    try:
        data = loads_bounded(strip_fences(raw))
    except ValueError:
        return False
    score = data.get("score") if isinstance(data, dict) else None
    return isinstance(score, int) and not isinstance(score, bool) and not 1 <= score <= 5


class _Ask:
    """One question's requests: the usage and count of every round (tool rounds and the repair included)."""

    def __init__(self, session: JudgeSession, prompt: str) -> None:
        self.session = session
        self.prompt = prompt
        self.usage = TokenUsage()
        self.calls = 0

    async def send(self, prompt: str, *, tool_choice: ToolChoice = "none", rounds: tuple[ToolRound, ...] = (),
                   on_first_token: FirstToken | None = None) -> JudgeReply:
        reply = await self.session.judge(prompt, schema=verdict_json_schema(), schema_name=VERDICT_SCHEMA_NAME,
                                         on_first_token=on_first_token, tool_choice=tool_choice, rounds=rounds)
        self.calls += 1
        self.usage = self.usage + reply.usage
        return reply

    async def with_tools(self, conversation: ToolConversation | None,
                         on_first_token: FirstToken | None) -> JudgeReply:
        """Ask, answering the judge's tool calls round after round until it answers with its verdict. After six
        calls the tools are withdrawn (`tool_choice="none"`), so the judge must answer; a call past the limit
        gets a tool error it can read, and at most MAX_TOOL_ROUNDS rounds are answered."""
        toolbox = self.session.toolbox
        allowed = conversation is not None and toolbox is not None
        reply = await self.send(self.prompt, tool_choice="auto" if allowed else "none", on_first_token=on_first_token)
        rounds: list[ToolRound] = []
        while reply.tool_calls and conversation is not None and toolbox is not None and len(rounds) < MAX_TOOL_ROUNDS:
            text, calls = echoed_round(reply)
            if not calls:
                break
            results = tuple([await toolbox.answer(conversation, call) for call in calls])
            rounds.append(ToolRound(text=text, calls=calls, results=results))
            choice: ToolChoice = "none" if conversation.exhausted else "auto"
            reply = await self.send(self.prompt, tool_choice=choice, rounds=tuple(rounds))
        return reply


async def judge_question(session: JudgeSession, job: QuestionJob, *,
                         on_first_token: FirstToken | None = None) -> QuestionOutcome:
    """Ask one question (a `needs_tools` one with the run's session tools); at most one repair re-ask on unusable
    output. Raises RunAborted only. `on_first_token` (the warm-up judge) streams the first ask and reports when
    its answer begins. Every round counts toward the run's deadline and usage like any call."""
    started = time.monotonic()
    question = job.question
    prompt = build_question_prompt(question)
    ask = _Ask(session, prompt)
    conversation = session.toolbox.conversation() if question.needs_tools and session.toolbox else None

    def parse(text: str) -> VerdictParse:
        used = tools_used(conversation) if conversation is not None else None
        return parse_verdict(text, question, tools_used=used, trace_entries=session.trace_entries)

    try:
        reply = await ask.with_tools(conversation, on_first_token)
        parsed = parse(reply.text)
        if isinstance(parsed, VerdictFailure):
            if _score_out_of_range(reply.text):
                return _failed(job, "invalid_output", parsed.reason, ask.usage, ask.calls, started)
            # The re-ask quotes the unusable answer; the tools stay offered (one cached prefix) but not allowed.
            reply = await ask.send(prompt + PROMPT_SEPARATOR + build_repair_prompt(reply.text, parsed.reason))
            parsed = parse(reply.text)
            if isinstance(parsed, VerdictFailure):
                return _failed(job, "invalid_output", f"after one repair re-ask: {parsed.reason}", ask.usage,
                               ask.calls, started)
    except VendorCallError as exc:
        if exc.kind == "timeout" and session.deadline.remaining() <= session.tuning.call_timeout_slack_seconds:
            return _failed(job, "timed_out", "The run reached its deadline before this judge answered.", ask.usage,
                           ask.calls + 1, started, status="timed_out")
        return _failed(job, exc.kind, exc.message, ask.usage, ask.calls + 1, started)
    return QuestionOutcome(question_id=question.id, category=question.category, status="scored",
                           judge_verdict=parsed.verdict, usage=job.prior.usage + ask.usage,
                           latency_ms=int((time.monotonic() - started) * 1000),
                           attempts=job.prior.attempts + ask.calls, retain_fact=parsed.retain_fact)


# ------------------------------------------------------------------------------------ supervision


@dataclass
class Guarded:
    stop: Stop
    value: Any = None
    error: BaseException | None = None


async def _cancel_all(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    # Waiting for the cancellations is what closes the HTTP connections before we persist.
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_guarded(coro: Coroutine[Any, Any, T], *, deadline: Deadline, poll_seconds: float,
                      is_cancelled: Callable[[], Awaitable[bool]]) -> Guarded:
    """Await `coro` until it ends, the deadline passes or the run is cancelled (polled)."""
    task: asyncio.Task[T] = asyncio.ensure_future(coro)
    while True:
        remaining = deadline.remaining()
        if remaining <= 0:
            await _cancel_all([task])
            return Guarded("deadline")
        done, _ = await asyncio.wait({task}, timeout=min(poll_seconds, remaining))
        if done:
            error = task.exception()
            if isinstance(error, RunAborted):
                return Guarded("aborted", error=error)
            if error is not None:
                return Guarded("done", error=error)
            return Guarded("done", value=task.result())
        if await is_cancelled():
            await _cancel_all([task])
            return Guarded("cancelled")


@dataclass
class FanoutResult:
    stop: Stop
    outcomes: dict[str, QuestionOutcome]
    unflushed: list[QuestionOutcome]
    unfinished: list[str]
    abort: RunAborted | None = None
    flushes: int = 0




async def run_judges(jobs: Sequence[QuestionJob], session: JudgeSession, ports: RunPorts, *,
                     log_fields: Mapping[str, Any], context_report: Callable[[], Mapping[str, Any]] | None = None,
                     ) -> FanoutResult:
    """Judge every job concurrently (after the optional warm-up judge), coalescing progress writes.
    `context_report()` is the run's context report as it stands, written with the first progress batch."""
    tuning = session.tuning
    deadline = session.deadline
    semaphore = asyncio.Semaphore(max(1, tuning.concurrency))
    running: dict[asyncio.Future[QuestionOutcome], str] = {}
    waiting = list(jobs)
    outcomes: dict[str, QuestionOutcome] = {}
    unflushed: list[QuestionOutcome] = []
    first_unflushed_at = 0.0
    flushes = 0
    context_pending = context_report is not None
    index = {job.question.id: i + 1 for i, job in enumerate(jobs)}
    answer_began = asyncio.Event()

    async def guarded(job: QuestionJob, on_first_token: FirstToken | None) -> QuestionOutcome:
        async with semaphore:
            return await judge_question(session, job, on_first_token=on_first_token)

    def launch(job: QuestionJob, on_first_token: FirstToken | None = None) -> None:
        task = asyncio.create_task(guarded(job, on_first_token), name=f"judge:{job.question.id}")
        running[task] = job.question.id

    def fan_out() -> None:
        nonlocal waiting
        for job in waiting:
            launch(job)
        waiting = []

    warm_task: asyncio.Future[QuestionOutcome] | None = None
    began: asyncio.Task[Any] | None = None  # wakes the loop when the warm-up answer begins
    warm_until = 0.0
    if tuning.warm_up != "none" and len(waiting) > 1:
        launch(waiting.pop(0), answer_began.set if tuning.warm_up == "first" else None)
        warm_task = next(iter(running))
        began = asyncio.ensure_future(answer_began.wait())
        warm_until = time.monotonic() + min(tuning.warm_up_max_seconds, deadline.seconds * tuning.warm_up_share)
    else:
        fan_out()

    stop: Stop = "done"
    abort: RunAborted | None = None
    next_poll = time.monotonic() + tuning.cancel_poll_seconds
    try:
        while running or waiting:
            now = time.monotonic()
            if warm_task is not None and (answer_began.is_set() or warm_task.done() or now >= warm_until):
                aborted = warm_task.done() and not warm_task.cancelled() and isinstance(warm_task.exception(),
                                                                                        RunAborted)
                warm_task = None
                if not aborted:  # a refused key on the warm-up judge must not fan out 12 doomed calls
                    fan_out()
            if deadline.passed():
                stop = "deadline"
                break
            wake = min(deadline.remaining(), next_poll - now)
            if unflushed:
                wake = min(wake, first_unflushed_at + tuning.progress_flush_seconds - now)
            awaited: set[asyncio.Future[Any]] = set(running)
            if warm_task is not None:
                wake = min(wake, warm_until - now)
                if began is not None:
                    awaited.add(began)
            done, _ = await asyncio.wait(awaited, timeout=max(0.0, wake), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is began:
                    continue
                question_id = running.pop(task)
                error = task.exception()
                if isinstance(error, RunAborted):
                    stop, abort = "aborted", abort or error
                    continue
                if error is not None:
                    # A bug, not a vendor answer: the question fails, the run goes on.
                    logger.error("judge task crashed", extra={**log_fields, "question_id": question_id,
                                                              "error_type": type(error).__name__})
                    job = next(j for j in jobs if j.question.id == question_id)
                    outcome = _failed(job, "internal", "The judge could not be run (internal error).", TokenUsage(),
                                      0, time.monotonic())
                else:
                    outcome = task.result()
                outcomes[question_id] = outcome
                if not unflushed:
                    first_unflushed_at = time.monotonic()
                unflushed.append(outcome)
                _log_judge(outcome, index[question_id], len(jobs), log_fields)
            if stop == "aborted":
                break
            now = time.monotonic()
            # The last batch rides on the finish write; only intermediate batches are flushed here.
            if unflushed and (running or waiting) and now - first_unflushed_at >= tuning.progress_flush_seconds:
                batch, unflushed = unflushed, []
                flushes += 1
                report = dict(context_report()) if context_report is not None and context_pending else None
                if not await ports.flush(batch, session.usage, report):
                    stop = "cancelled"
                    break
                context_pending = False
            if (running or waiting) and now >= next_poll:
                if await ports.is_cancelled():
                    stop = "cancelled"
                    break
                next_poll = time.monotonic() + tuning.cancel_poll_seconds
    finally:
        if began is not None and not began.done():
            began.cancel()

    leftovers = list(running)
    await _cancel_all(leftovers)
    for task in leftovers:
        # A judge can finish in the instant between the stop decision and its cancellation; keep it
        # unless the run was cancelled (nothing is written then).
        if stop != "cancelled" and not task.cancelled() and task.exception() is None:
            outcome = task.result()
            outcomes[running[task]] = outcome
            unflushed.append(outcome)
    unfinished = [job.question.id for job in jobs if job.question.id not in outcomes]
    return FanoutResult(stop=stop, outcomes=outcomes, unflushed=unflushed, unfinished=unfinished, abort=abort,
                        flushes=flushes)

def _log_judge(outcome: QuestionOutcome, index: int, total: int, log_fields: Mapping[str, Any]) -> None:
    # Identifiers, scores and counts only: never the finding, evidence or raw output (transcript text).
    logger.info(
        f"judge {index}/{total} {outcome.question_id}: {outcome.status}"
        + (f" score {outcome.score}" if outcome.score is not None else "")
        + (f" ({outcome.failure_reason.kind})" if outcome.failure_reason else ""),
        extra={**log_fields, "question_id": outcome.question_id, "category": outcome.category,
               "status": outcome.status, "score": outcome.score, "latency_ms": outcome.latency_ms,
               "failure_kind": outcome.failure_reason.kind if outcome.failure_reason else None,
               "input_tokens": outcome.usage.input_tokens, "output_tokens": outcome.usage.output_tokens,
               "cache_read_input_tokens": outcome.usage.cache_read_input_tokens,
               "cache_creation_input_tokens": outcome.usage.cache_creation_input_tokens})


