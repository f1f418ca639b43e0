"""Judge facts ("known patterns", reference §4.4): what a judge's `retain_fact` becomes once its run is
finalized — one fact per tenant, repository and meaning, with the runs and questions that produced it.

Identity: a fact is identified by its repository and its normalised text (case, spacing and a final full
stop do not make a new fact), so the same fact retained by many runs is stored once. Its id is derived
from both (`fct_` + 40 hex), so it can be addressed (`DELETE /judge-facts/{fact_id}`) without an index.
The repository is the session's `repository` as uploaded, compared exactly (after trimming).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chalicelib.domain.errors import NotFound

FACT_ID_PATTERN = re.compile(r"^fct_[0-9a-f]{40}$")
REPOSITORY_MAX_CHARS = 2048
# Sources (runs) kept per fact: a fact retained by more runs stays, counted up to this many.
MAX_FACT_SOURCES = 50
# Facts one run can add: one per question, and no transaction grows past DynamoDB's 100 items.
MAX_FACTS_PER_RUN = 20
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 500
_REPO_KEY_HEX = 16
_FACT_HASH_HEX = 24


def normalise_repository(repository: str | None) -> str | None:
    """The repository facts are kept under, or None when the session names none."""
    if repository is None:
        return None
    repository = repository.strip()
    return repository or None


def repository_key(repository: str) -> str:
    return hashlib.sha256(repository.encode("utf-8")).hexdigest()[:_REPO_KEY_HEX]


def fact_fingerprint(text: str) -> str:
    """Two texts with the same fingerprint are the same fact."""
    canonical = " ".join(text.casefold().split()).rstrip(" .")
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:_FACT_HASH_HEX]


def fact_id(repository: str, text: str) -> str:
    return f"fct_{repository_key(repository)}{fact_fingerprint(text)}"


def split_fact_id(value: str) -> tuple[str, str]:
    """(repository key, fact fingerprint) of a fact id; NotFound for anything that is not one."""
    if not FACT_ID_PATTERN.fullmatch(value or ""):
        raise NotFound(f"No judge fact '{value[:64]}' in this tenant.", code="judge_fact_not_found")
    return value[4:4 + _REPO_KEY_HEX], value[4 + _REPO_KEY_HEX:]


class RetainedFact(BaseModel):
    """One fact a finalized run retained: from which question (and category) of which run and session."""

    model_config = ConfigDict(frozen=True)

    text: str
    question_id: str
    category: str
    eval_run_id: str
    session_id: str


class FactSource(BaseModel):
    """A run that retained the fact (stored in the fact's `sources`, keyed by run id)."""

    model_config = ConfigDict(extra="ignore")

    session_id: str
    question_id: str
    category: str
    at: str


class JudgeFactView(BaseModel):
    """One judge fact as `GET /judge-facts` lists it: the contract's fields (the run and question that first
    retained it) plus its category, how many runs retained it and when it was last retained."""

    fact_id: str
    repository: str
    text: str
    eval_run_id: str = Field(description="The run that first retained this fact.")
    question_id: str = Field(description="The question whose judge first retained it.")
    created_at: str
    category: str
    session_id: str = Field(description="The session of the run that first retained it.")
    times_retained: int = Field(description=f"Runs that retained it (counted up to {MAX_FACT_SOURCES}).")
    last_retained_at: str


class JudgeFactList(BaseModel):
    """`GET /judge-facts?repository=`: the repository's facts, oldest first within the page."""

    items: list[JudgeFactView]
    next_cursor: str | None = None


class JudgeFactQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repository: Annotated[str, StringConstraints(min_length=1, max_length=REPOSITORY_MAX_CHARS)] = Field(
        description="The repository as sessions name it (`repository` given at upload).")
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)
    cursor: str | None = Field(default=None, max_length=2048)


def view_of(item: dict[str, object]) -> JudgeFactView:
    """A stored fact item (see `chalicelib.adapters.fact_store`) as listed; the earliest source first."""
    sources = item.get("sources") or {}
    assert isinstance(sources, dict)
    ordered = sorted(((FactSource.model_validate(s), run_id) for run_id, s in sources.items()),
                     key=lambda pair: (pair[0].at, pair[1]))
    first, first_run = ordered[0] if ordered else (FactSource(session_id="", question_id="", category="",
                                                              at=str(item.get("created_at", ""))), "")
    return JudgeFactView(
        fact_id=str(item["fact_id"]), repository=str(item["repository"]), text=str(item["text"]),
        eval_run_id=first_run, question_id=first.question_id, created_at=first.at,
        category=first.category or str(item.get("category", "")), session_id=first.session_id,
        times_retained=len(ordered), last_retained_at=str(item.get("last_retained_at") or first.at))
