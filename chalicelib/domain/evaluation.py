"""Evaluation domain models: verdicts, the SessionEvalCompleted payload, run/question state and daemon events.

These are the wire shapes shared by the server runner and the daemon runner (snake_case, explicit
nulls when dumped), plus the one scoring rule both must agree on, `verdict_for_score`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, field_validator, model_validator

from chalicelib.domain.errors import DomainError

Verdict = Literal["pass", "warn", "fail"]
EvalRunStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]
VendorName = Literal["anthropic", "openai"]
RunnerKind = Literal["server", "daemon"]

# Per-question lifecycle. `timed_out` / `cancelled` mark questions that never produced a verdict
# because the run hit its deadline or was cancelled; `failed` means the judge was asked and the
# question could not be scored (vendor error, unusable output after the repair re-ask).
QuestionStatus = Literal["queued", "running", "scored", "failed", "timed_out", "cancelled"]
TERMINAL_QUESTION_STATUSES: frozenset[str] = frozenset({"scored", "failed", "timed_out", "cancelled"})
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "cancelled"})

# Why a question produced no verdict. A superset of `chalicelib.domain.judging.VendorErrorKind`
# (the first five are the contract's test-connection kinds), so a vendor error's kind can be
# recorded as-is, plus the run-level reasons: `timed_out` (the run deadline passed, as opposed to
# one vendor call's `timeout`), `cancelled`, `internal` and `budget_exhausted` (the spend guard stopped
# the run before this judge: its next call could have passed what the run reserved).
FailureKind = Literal[
    "auth",
    "model_not_found",
    "rate_limited",
    "network",
    "invalid_output",
    "context_overflow",
    "overloaded",
    "server",
    "timeout",
    "bad_request",
    "timed_out",
    "cancelled",
    "internal",
    # A batch-mode run's request the vendor did not process within its 24 h window, or answered with
    # an error (chalicelib/domain/vendor_batches.py).
    "batch_expired",
    "batch_errored",
    "budget_exhausted",
]

MIN_SCORE = 1
MAX_SCORE = 5
RETRO_MAX_STRENGTHS = 3
RETRO_MAX_ISSUES = 3
RETRO_MAX_SUGGESTIONS = 5

Score = Annotated[StrictInt, Field(ge=MIN_SCORE, le=MAX_SCORE)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]


def verdict_for_score(score: int) -> Verdict:
    """The reference's VerdictForScore: >=4 pass, >=2 warn, else fail (a judge's own verdict is ignored)."""
    if score >= 4:
        return "pass"
    if score >= 2:
        return "warn"
    return "fail"


class AllJudgesFailed(DomainError):
    """No question produced a usable verdict, so there is nothing to aggregate (the run fails)."""

    status = 422
    code = "all_judges_failed"


class _Wire(BaseModel):
    # Inbound and outbound alike: a daemon's posted payload is validated with these same models,
    # so unknown keys are rejected rather than silently dropped. Built on first use (`defer_build`):
    # most API requests import these models through their services but validate none of them, and
    # building all of them cost a cold container ~7% of its first settings request (bench/coldstart).
    model_config = ConfigDict(extra="forbid", defer_build=True)


MAX_EVIDENCE_ENTRIES = 12
# A retained fact is one sentence or two; longer ones are cut when parsed (`judges.verdicts`).
MAX_FACT_CHARS = 600
MAX_TOOL_USES = 6
_TOOL_ARGUMENT_CHARS = 200
_TOOL_NAME = r"^[A-Za-z0-9_\-]{1,64}$"


class ToolUse(_Wire):
    """One session-tool call a judge made (`chalicelib.judges.tools`): its name, its arguments as the
    judge sent them (bounded), and whether it answered with an error."""

    tool: str = Field(pattern=_TOOL_NAME)
    arguments: dict[Annotated[str, Field(max_length=64)],
                    Annotated[str, Field(max_length=_TOOL_ARGUMENT_CHARS)] | StrictInt | None] = Field(
        default_factory=dict, max_length=4)
    is_error: bool = False


class JudgeVerdict(_Wire):
    """One scored question as persisted and shown (the reference's 8-key verdict minus retain_fact).

    `evidence_entries` are the trace positions (0-based `pos` of the eval context's entries) the finding
    rests on, validated against the trace's length; `tools_used` lists the session-tool calls of a
    tool-using judge (null for a judge without tools). A reference daemon posts `tools_used` as a count:
    that is read as that many calls of an unrecorded tool, so the shape stays one list for readers.
    """

    category: str = Field(min_length=1)
    question_id: str = Field(min_length=1)
    score: Score
    verdict: Verdict
    finding: str
    evidence: str | None
    recommendation: str | None
    tools_used: list[ToolUse] | None = Field(default=None, max_length=MAX_TOOL_USES)
    evidence_entries: list[NonNegativeInt] = Field(default_factory=list, max_length=MAX_EVIDENCE_ENTRIES)

    @field_validator("tools_used", mode="before")
    @classmethod
    def _count_from_a_reference_daemon(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOOL_USES:
            return [{"tool": "unrecorded"} for _ in range(value)]
        return value

    @field_validator("evidence_entries")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


class CategoryResult(_Wire):
    name: str = Field(min_length=1)
    score: Score
    verdict: Verdict
    questions: list[JudgeVerdict] = Field(min_length=1)


class Retrospective(_Wire):
    overall: str
    strengths: list[str] = Field(max_length=RETRO_MAX_STRENGTHS)
    issues: list[str] = Field(max_length=RETRO_MAX_ISSUES)
    suggestions: list[str] = Field(max_length=RETRO_MAX_SUGGESTIONS)


class SessionEvalCompleted(_Wire):
    """The run's result: identical shape for both runners (reference §4.2)."""

    eval_run_id: str = Field(min_length=1)
    judge_model: str = Field(min_length=1)
    categories: list[CategoryResult]
    overall_score: Annotated[StrictInt, Field(ge=0, le=MAX_SCORE)]
    summary: str
    retrospective: Retrospective | None

    def verdicts(self) -> list[JudgeVerdict]:
        """All verdicts in category order, then verdict order within each category."""
        return [v for category in self.categories for v in category.questions]


class TokenUsage(_Wire):
    input_tokens: NonNegativeInt = 0
    output_tokens: NonNegativeInt = 0
    cache_read_input_tokens: NonNegativeInt = 0
    cache_creation_input_tokens: NonNegativeInt = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        if not isinstance(other, TokenUsage):
            return NotImplemented
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )


class FailureReason(_Wire):
    kind: FailureKind
    message: str


class QuestionOutcome(_Wire):
    """Per-question progress state of one run.

    Invariants (checked on construction): a `scored` outcome has a score (taken from
    `judge_verdict` when present; a daemon's question event carries only score/verdict) and its
    verdict is derived from it; `failed` / `timed_out` / `cancelled` carry a `failure_reason`;
    only `scored` carries a score, verdict or judge_verdict.
    """

    question_id: str = Field(min_length=1)
    category: str = Field(min_length=1)
    status: QuestionStatus = "queued"
    score: Score | None = None
    verdict: Verdict | None = None
    judge_verdict: JudgeVerdict | None = None
    failure_reason: FailureReason | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    # False when the runner reported no token counts (a daemon whose CLI gives none): the run's cost is
    # then unknown (null), never a made-up zero.
    usage_reported: bool = True
    latency_ms: NonNegativeInt | None = None
    attempts: NonNegativeInt = 0
    # A scored judge's `retain_fact` (never part of the verdict): kept until the run lifecycle's
    # finalizer stores it as a judge fact of the session's repository (`services/judge_facts.py`).
    retain_fact: str | None = Field(default=None, max_length=MAX_FACT_CHARS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.status == "scored":
            jv = self.judge_verdict
            if jv is not None:
                if jv.question_id != self.question_id or jv.category != self.category:
                    raise ValueError("judge_verdict belongs to a different question")
                if self.score is not None and self.score != jv.score:
                    raise ValueError("score disagrees with judge_verdict")
                self.score = jv.score
            if self.score is None:
                raise ValueError("a scored outcome needs a score")
            self.verdict = verdict_for_score(self.score)
            if self.failure_reason is not None:
                raise ValueError("a scored outcome has no failure_reason")
        else:
            if self.judge_verdict is not None or self.score is not None or self.verdict is not None:
                raise ValueError(f"a {self.status} outcome has no score or verdict")
            if self.status in ("failed", "timed_out", "cancelled") and self.failure_reason is None:
                raise ValueError(f"a {self.status} outcome needs a failure_reason")
            if self.retain_fact is not None:
                raise ValueError(f"a {self.status} outcome retains no fact")
        return self

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_QUESTION_STATUSES


# ---------------------------------------------------------------------------------------------
# Daemon progress events (reference §5), posted one per request to POST /eval-runs/{id}/events.
# `session_id` is optional here because the run id already identifies the session.


class _EventBase(_Wire):
    eval_run_id: str = Field(min_length=1)
    session_id: str | None = None


class _QuestionEventBase(_EventBase):
    index: Annotated[StrictInt, Field(ge=1)]
    total: Annotated[StrictInt, Field(ge=1)]
    category: str = Field(min_length=1)
    question_id: str = Field(min_length=1)

    @model_validator(mode="after")
    def _index_within_total(self) -> Self:
        if self.index > self.total:
            raise ValueError("index must not exceed total")
        return self


_REASON_MAX = 4000


class EvalStarted(_EventBase):
    type: Literal["eval_started"] = "eval_started"
    judge_model: str = Field(min_length=1)
    total_questions: NonNegativeInt


class EvalQuestionStarted(_QuestionEventBase):
    type: Literal["eval_question_started"] = "eval_question_started"


class EvalQuestionCompleted(_QuestionEventBase):
    """A scored question. The verdict string is re-derived from the score, like every verdict."""

    type: Literal["eval_question_completed"] = "eval_question_completed"
    score: Score
    verdict: Verdict
    # Optional so reference daemons (which send no tokens) still validate; ours report them.
    input_tokens: NonNegativeInt | None = None
    output_tokens: NonNegativeInt | None = None
    cache_read_input_tokens: NonNegativeInt | None = None
    cache_creation_input_tokens: NonNegativeInt | None = None
    # Our daemon reports the judge's `retain_fact` here (the verdict never carries it); the service
    # keeps it with the question until the run is finalized. Reference daemons post their facts elsewhere.
    retain_fact: str | None = Field(default=None, max_length=MAX_FACT_CHARS)

    @model_validator(mode="after")
    def _verdict_from_score(self) -> Self:
        self.verdict = verdict_for_score(self.score)
        return self

    def usage(self) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens or 0,
            output_tokens=self.output_tokens or 0,
            cache_read_input_tokens=self.cache_read_input_tokens or 0,
            cache_creation_input_tokens=self.cache_creation_input_tokens or 0,
        )


class EvalQuestionFailed(_QuestionEventBase):
    type: Literal["eval_question_failed"] = "eval_question_failed"
    reason: str = Field(max_length=_REASON_MAX)


class EvalRetrospectiveStarted(_EventBase):
    type: Literal["eval_retrospective_started"] = "eval_retrospective_started"


class EvalRetrospectiveCompleted(_EventBase):
    type: Literal["eval_retrospective_completed"] = "eval_retrospective_completed"


class EvalRetrospectiveFailed(_EventBase):
    type: Literal["eval_retrospective_failed"] = "eval_retrospective_failed"
    reason: str = Field(max_length=_REASON_MAX)


class EvalFinished(_EventBase):
    type: Literal["eval_finished"] = "eval_finished"
    overall_score: Annotated[StrictInt, Field(ge=0, le=MAX_SCORE)]
    summary: str


class EvalFailed(_EventBase):
    type: Literal["eval_failed"] = "eval_failed"
    reason: str = Field(max_length=_REASON_MAX)


EvalProgressEvent = Annotated[
    EvalStarted
    | EvalQuestionStarted
    | EvalQuestionCompleted
    | EvalQuestionFailed
    | EvalRetrospectiveStarted
    | EvalRetrospectiveCompleted
    | EvalRetrospectiveFailed
    | EvalFinished
    | EvalFailed,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[str, ...] = (
    "eval_started",
    "eval_question_started",
    "eval_question_completed",
    "eval_question_failed",
    "eval_retrospective_started",
    "eval_retrospective_completed",
    "eval_retrospective_failed",
    "eval_finished",
    "eval_failed",
)
TERMINAL_EVENT_TYPES: frozenset[str] = frozenset({"eval_finished", "eval_failed"})

_EVENT_ADAPTER: TypeAdapter[EvalProgressEvent] = TypeAdapter(EvalProgressEvent, config=ConfigDict(defer_build=True))


def parse_progress_event(data: Any) -> EvalProgressEvent:
    """Validate one posted event body (a dict). Raises pydantic.ValidationError on a bad body."""
    return _EVENT_ADAPTER.validate_python(data)
