"""Online evaluation rules (pure): a rule's filter, its deterministic sampling, what triggered a run,
and the rule records and views the admin API speaks.

A rule judges new sessions automatically: a session revision that passes the rule's `filter` and
falls inside its `sample_rate` gets one run (see `services/eval_rules.py`). Sampling is decided by
the (tenant, session id) pair alone, so every rule with the same rate picks the same sessions, and a
lower rate picks a subset of what a higher one picks (Langfuse's deterministic sampling).
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from chalicelib.domain.evaluation import VendorName
from chalicelib.domain.glob import Glob, GlobError, compile_glob

RunMode = Literal["now", "batch"]
SessionFormatName = Literal["native", "claude-code", "codex"]

MAX_RULES_PER_TENANT = 50
MAX_RULE_NAME_CHARS = 100
MAX_FILTER_USERS = 100
MAX_RULE_QUESTIONS = 64
MAX_MIN_ENTRIES = 10_000_000
RECENT_MATCHES = 10
RULE_BODY_MAX_BYTES = 32 * 1024
# `rule:<id>` is the user a rule's runs are admitted and billed as (quota, budgets, usage rows).
RULE_USER_PREFIX = "rule:"

UserName = Annotated[str, Field(min_length=1, max_length=128)]
SelectionToken = Annotated[str, Field(min_length=1, max_length=200)]


# ------------------------------------------------------------------------------------ sampling

@lru_cache(maxsize=512)
def cached_glob(pattern: str) -> Glob:
    """Rules are matched against every upload: compile each pattern once per container."""
    return compile_glob(pattern)


def sample_position(tenant: str, session_id: str) -> float:
    """Where a session falls in [0, 1): the first 64 bits of sha256(tenant NUL session id)."""
    digest = hashlib.sha256(f"{tenant}\x00{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_sampled(rate: float, tenant: str, session_id: str) -> bool:
    """Inside the rate: position < rate (so 1 takes every session and 0 none)."""
    return sample_position(tenant, session_id) < rate


# ------------------------------------------------------------------------------------ triggers

class ManualTrigger(BaseModel):
    """A user started the run (the eval dialog, the API)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["manual"] = "manual"


class RuleTrigger(BaseModel):
    """An online evaluation rule started the run for a session it matched."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["rule"] = "rule"
    rule_id: str


class BatchTrigger(BaseModel):
    """A bulk request (`POST /eval-batches`) started the run."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["batch"] = "batch"
    batch_id: str


RunTrigger = Annotated[ManualTrigger | RuleTrigger | BatchTrigger, Field(discriminator="kind")]
MANUAL = ManualTrigger()


def rule_of(trigger: ManualTrigger | RuleTrigger | BatchTrigger) -> str | None:
    """The rule that started a run, if one did."""
    return trigger.rule_id if isinstance(trigger, RuleTrigger) else None


# ------------------------------------------------------------------------------------ filters

# The rule models below are built on first use (`defer_build`): dispatch imports this module for the run
# triggers above only (bench/coldstart).

class SessionFacts(BaseModel):
    """What a rule filter looks at on a stored session revision."""

    model_config = ConfigDict(defer_build=True)

    session_id: str
    repository: str | None = None
    format: str
    uploaded_by: str
    entries: int
    revision: int = 1
    sha256: str = ""


class RuleFilter(BaseModel):
    """Every given condition must hold; an empty filter matches every session."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    repository: str | None = Field(
        default=None, max_length=200,
        description="A glob over the session's repository, case-insensitive, whole text: '*' any characters "
                    "(also '/'), '?' one character, '[a-z]' / '[!a-z]' a set, '\\' escapes. A session without a "
                    "repository never matches a repository filter.")
    format: list[SessionFormatName] | None = Field(default=None, min_length=1, max_length=3,
                                                   description="Session formats to judge.")
    users: list[UserName] | None = Field(default=None, min_length=1, max_length=MAX_FILTER_USERS,
                                         description="Only sessions uploaded by these users.")
    min_entries: StrictInt | None = Field(default=None, ge=0, le=MAX_MIN_ENTRIES,
                                          description="Only sessions with at least this many trace entries.")

    @field_validator("repository")
    @classmethod
    def _valid_glob(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_glob(value)
            except GlobError as exc:
                raise PydanticCustomError("invalid_glob", "invalid glob: {reason}", {"reason": str(exc)}) from None
        return value

    def matches(self, facts: SessionFacts) -> bool:
        if self.format is not None and facts.format not in self.format:
            return False
        if self.users is not None and facts.uploaded_by not in self.users:
            return False
        if self.min_entries is not None and facts.entries < self.min_entries:
            return False
        if self.repository is not None:
            return facts.repository is not None and cached_glob(self.repository).matches(facts.repository)
        return True


# ------------------------------------------------------------------------------------ rules

def _finite_rate(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("sample_rate is a number from 0 to 1, not a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("sample_rate must be a finite number from 0 to 1")
    return value


class EvalRuleInput(BaseModel):
    """`POST /admin/eval-rules` and `PUT /admin/eval-rules/{rule_id}` (the whole rule)."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_RULE_NAME_CHARS)
    enabled: StrictBool = True
    filter: RuleFilter = Field(default_factory=RuleFilter)
    sample_rate: float = Field(ge=0, le=1, description="The share of matching sessions judged, 0..1; sampling "
                                                       "is deterministic on (tenant, session_id).")
    vendor: VendorName | None = Field(default=None, description="The server vendor to judge with (default: "
                                                                "the tenant's only enabled vendor).")
    questions: list[SelectionToken] | None = Field(
        default=None, min_length=1, max_length=MAX_RULE_QUESTIONS,
        description="Question ids or category names of the tenant's enabled judge catalog (default: all).")
    mode: RunMode = Field(default="now", description="'now': judged at once; 'batch': through the vendor's "
                                                     "batch API at its discount, within 24 h.")

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        return _finite_rate(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the name must not be blank")
        if any(c < " " for c in value):
            raise ValueError("the name must not contain control characters")
        return value.strip()


class RuleMatch(BaseModel):
    """One recent decision of a rule on a session revision."""

    model_config = ConfigDict(defer_build=True)

    session_id: str
    revision: int
    at: str
    outcome: Literal["run", "skipped"]
    eval_run_id: str | None = None
    reason: str | None = None


class RuleStats(BaseModel):
    """What a rule did: sessions its filter matched, runs it created, what it skipped and why."""

    model_config = ConfigDict(defer_build=True, extra="ignore")

    matched: int = 0
    sampled_out: int = 0
    runs: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    last_matches: list[RuleMatch] = Field(default_factory=list)
    last_matched_at: str | None = None

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


class EvalRule(EvalRuleInput):
    """The stored rule."""

    model_config = ConfigDict(defer_build=True, extra="ignore")

    rule_id: str
    tenant: str
    created_at: str
    created_by: str
    updated_at: str
    updated_by: str
    version: int = 1

    @property
    def run_user(self) -> str:
        return RULE_USER_PREFIX + self.rule_id


class EvalRuleView(BaseModel):
    """`GET /admin/eval-rules/{rule_id}`: the rule, as the contract names it, and what it did."""

    model_config = ConfigDict(defer_build=True)

    rule_id: str
    name: str
    enabled: bool
    filter: RuleFilter
    sample_rate: float
    vendor: VendorName | None
    questions: list[str] | None
    mode: RunMode
    created_at: str
    created_by: str
    updated_at: str
    updated_by: str
    version: int
    stats: RuleStats = Field(description="Sessions matched, runs created, runs skipped by reason, last matches.")
    skipped_total: int = Field(description="Runs the rule did not create (all reasons).")


class EvalRuleList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    items: list[EvalRuleView]
    max_rules: int = MAX_RULES_PER_TENANT


def rule_view(rule: EvalRule, stats: RuleStats | None) -> EvalRuleView:
    stats = stats or RuleStats()
    return EvalRuleView(rule_id=rule.rule_id, name=rule.name, enabled=rule.enabled, filter=rule.filter,
                        sample_rate=rule.sample_rate, vendor=rule.vendor, questions=rule.questions, mode=rule.mode,
                        created_at=rule.created_at, created_by=rule.created_by, updated_at=rule.updated_at,
                        updated_by=rule.updated_by, version=rule.version, stats=stats,
                        skipped_total=stats.skipped_total)


class SessionStoredNotice(BaseModel):
    """The job message a stored session revision sends (SQS), so rules are matched in the worker and
    never inside the upload request. Ids only; the worker reads the session record."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    job: Literal["session_stored"] = "session_stored"
    tenant: str
    session_id: str
    revision: int
    sha256: str
