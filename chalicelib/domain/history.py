"""Tenant-wide run history: the list filters and their rules, the run summary a list shows, and
tamper-evident page cursors.

Pure: the DynamoDB access paths that serve a filter set live in `adapters/run_index.py`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.clock import iso
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.evaluation import MAX_SCORE
from chalicelib.domain.principal import SAFE_ID

RUN_STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled")
RUNNERS: tuple[str, ...] = ("server", "daemon")
VENDORS: tuple[str, ...] = ("anthropic", "openai")
# Run triggers (CONTRACT "Online and bulk evaluation"): a dispatch from the dialog or the API is
# `manual`, an upload matching a rule `rule`, a bulk request `batch`.
TRIGGER_KINDS: tuple[str, ...] = ("manual", "rule", "batch")
MIN_FILTER_SCORE = 0
DEFAULT_PAGE = 50
MAX_PAGE = 100
MAX_REPOSITORY_LENGTH = 2048
BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Dates outside this window are typos (a two-digit year, an extra digit), not history.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class RunFilterQuery(BaseModel):
    """The run filters of `GET /eval-runs` and its export: every one optional, unknown ones refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    status: str | None = Field(default=None, min_length=1, max_length=200, description=(
        "One or more of " + ", ".join(RUN_STATUSES) + ", comma-separated"))
    runner: str | None = Field(default=None, min_length=1, max_length=100,
                               description="server or daemon (comma-separated)")
    vendor: str | None = Field(default=None, min_length=1, max_length=100,
                               description="anthropic or openai (comma-separated; server runs only)")
    user: str | None = Field(default=None, min_length=1, max_length=128, description="The user who dispatched the run")
    repository: str | None = Field(default=None, min_length=1, max_length=MAX_REPOSITORY_LENGTH,
                                   description="The session's repository, exactly as uploaded")
    trigger: str | None = Field(default=None, min_length=1, max_length=100,
                                description=", ".join(TRIGGER_KINDS) + " (comma-separated)")
    batch_id: str | None = Field(default=None, min_length=1, max_length=64, description="Runs of one bulk request")
    from_: str | None = Field(default=None, alias="from", min_length=1, max_length=40, description=(
        "Runs created at or after this instant (ISO-8601) or day (YYYY-MM-DD, from its start, UTC)"))
    to: str | None = Field(default=None, min_length=1, max_length=40, description=(
        "Runs created before this instant (ISO-8601), or on or before this day (YYYY-MM-DD, UTC)"))
    min_score: str | None = Field(default=None, min_length=1, max_length=4,
                                  description=f"Overall score ≥ this (0-{MAX_SCORE})")
    max_score: str | None = Field(default=None, min_length=1, max_length=4,
                                  description=f"Overall score ≤ this (0-{MAX_SCORE})")


class RunListQuery(RunFilterQuery):
    """`GET /eval-runs`."""

    cursor: str | None = Field(default=None, min_length=1, max_length=1024,
                               description="next_cursor of the previous page")
    limit: str | None = Field(default=None, min_length=1, max_length=4,
                              description=f"Page size, 1-{MAX_PAGE} (default {DEFAULT_PAGE})")


def _invalid(field: str, message: str, code: str = "invalid_filter", **details: Any) -> InvalidRequest:
    return InvalidRequest(message, code=code, details={"field": field, **details})


def _choices(field: str, raw: str | None, allowed: tuple[str, ...]) -> frozenset[str]:
    if raw is None:
        return frozenset()
    values = [v.strip() for v in raw.split(",")]
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise _invalid(field, f"Unknown {field} {unknown[0][:40]!r}; use one of: {', '.join(allowed)}.",
                       value=unknown[0][:40], allowed=list(allowed))
    return frozenset(values)


def parse_instant(field: str, raw: str, *, end_of_day: bool) -> datetime:
    """An ISO-8601 instant, or a bare day (its start; with `end_of_day`, the start of the next day,
    so `to=2026-12-04` includes the 4th)."""
    value = raw.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = date.fromisoformat(value)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            if end_of_day:
                moment += timedelta(days=1)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError("no time zone")
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
        raise _invalid(field, f"'{field}' must be a day (YYYY-MM-DD) or an ISO-8601 instant with a time zone "
                              "(2026-12-04T10:00:00Z).", code="invalid_date", value=value[:40]) from None
    if not _EARLIEST <= moment <= _LATEST:
        raise _invalid(field, f"'{field}' is outside 2000-2200.", code="invalid_date", value=value[:40])
    return moment


def _score(field: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,2}", raw.strip()) or not MIN_FILTER_SCORE <= int(raw) <= MAX_SCORE:
        raise _invalid(field, f"'{field}' must be a whole number from {MIN_FILTER_SCORE} to {MAX_SCORE}.",
                       value=raw[:10])
    return int(raw)


@dataclass(frozen=True)
class RunFilters:
    """A validated filter set. Empty sets and None mean "any"."""

    statuses: frozenset[str] = frozenset()
    runners: frozenset[str] = frozenset()
    vendors: frozenset[str] = frozenset()
    triggers: frozenset[str] = frozenset()
    user: str | None = None
    repository: str | None = None
    batch_id: str | None = None
    created_from: str | None = None   # inclusive, iso()
    created_to: str | None = None     # exclusive, iso()
    min_score: int | None = None
    max_score: int | None = None

    @property
    def scored_only(self) -> bool:
        return self.min_score is not None or self.max_score is not None

    def score_values(self) -> list[int]:
        low = self.min_score if self.min_score is not None else MIN_FILTER_SCORE
        high = self.max_score if self.max_score is not None else MAX_SCORE
        return list(range(high, low - 1, -1))

    def fingerprint(self) -> str:
        """A canonical form, so a cursor is bound to the filters it was issued for."""
        data = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in self.__dict__.items()}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def matches(self, summary: EvalRunSummary) -> bool:
        """The whole filter set on one run: the index that served a query covers one dimension,
        this checks the others."""
        if self.statuses and summary.status not in self.statuses:
            return False
        if self.runners and summary.runner not in self.runners:
            return False
        if self.vendors and summary.vendor not in self.vendors:
            return False
        if self.triggers and str(summary.trigger.get("kind", "manual")) not in self.triggers:
            return False
        if self.user is not None and summary.created_by != self.user:
            return False
        if self.repository is not None and summary.repository != self.repository:
            return False
        if self.batch_id is not None and summary.batch_id != self.batch_id:
            return False
        if self.created_from is not None and summary.created_at < self.created_from:
            return False
        if self.created_to is not None and summary.created_at >= self.created_to:
            return False
        return not self.scored_only or (summary.overall_score is not None
                                        and summary.overall_score in self.score_values())


def parse_run_filters(query: RunFilterQuery) -> RunFilters:
    """The list/export query → a RunFilters, or a 400 naming the first bad parameter."""
    # An empty value is a bad value, not an absent one (`?from=` is refused, as the document says).
    created_from = parse_instant("from", query.from_, end_of_day=False) if query.from_ is not None else None
    created_to = parse_instant("to", query.to, end_of_day=True) if query.to is not None else None
    if created_from and created_to and created_from >= created_to:
        raise InvalidRequest("'from' must be before 'to'.", code="invalid_date_range",
                             details={"from": query.from_, "to": query.to})
    min_score = _score("min_score", query.min_score)
    max_score = _score("max_score", query.max_score)
    if min_score is not None and max_score is not None and min_score > max_score:
        raise InvalidRequest("'min_score' must not be above 'max_score'.", code="invalid_score_range",
                             details={"min_score": min_score, "max_score": max_score})
    user = query.user
    if user is not None and not SAFE_ID.fullmatch(user):
        raise _invalid("user", "'user' is not a valid user id.", value=user[:40])
    repository = query.repository
    if repository is not None and not repository.strip():
        raise _invalid("repository", "'repository' must not be empty.")
    if query.batch_id is not None and not BATCH_ID.fullmatch(query.batch_id):
        raise _invalid("batch_id", "'batch_id' is not a valid batch id.", value=query.batch_id[:40])
    return RunFilters(
        statuses=_choices("status", query.status, RUN_STATUSES),
        runners=_choices("runner", query.runner, RUNNERS),
        vendors=_choices("vendor", query.vendor, VENDORS),
        triggers=_choices("trigger", query.trigger, TRIGGER_KINDS),
        user=user, repository=repository, batch_id=query.batch_id,
        created_from=iso(created_from) if created_from else None,
        created_to=iso(created_to) if created_to else None,
        min_score=min_score, max_score=max_score)


def parse_page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not re.fullmatch(r"\d{1,3}", raw.strip()) or not 1 <= int(raw) <= MAX_PAGE:
        raise _invalid("limit", f"'limit' must be a whole number from 1 to {MAX_PAGE}.", value=raw[:10])
    return int(raw)


class EvalRunSummary(BaseModel):
    """One run in the tenant-wide list: what the list index projects (no verdicts, no progress)."""

    eval_run_id: str
    session_id: str
    status: str
    runner: str
    vendor: str | None = None
    model: str | None = None
    created_by: str
    repository: str | None = None
    trigger: dict[str, Any] = Field(default_factory=lambda: {"kind": "manual"},
                                    description='{"kind": "manual"} or {"kind": "rule", "rule_id"} …')
    batch_id: str | None = None
    created_at: str
    finished_at: str | None = None
    trial: bool = Field(default=False, description="An admin's try-it run of one catalog question")
    overall_score: int | None = None
    category_scores: dict[str, int] = Field(default_factory=dict)
    cost: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class EvalRunPage(BaseModel):
    """`GET /eval-runs`: newest first. A page may hold fewer than `limit` runs when several filters
    combine (each request reads a bounded number of index entries); follow `next_cursor` until null."""

    items: list[EvalRunSummary]
    next_cursor: str | None = None


# -- cursors ---------------------------------------------------------------------------------------

_TAG_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorSigner:
    """Cursors carry only a position in the list (a run's `<created_at>#<id>`), MAC'd with a
    server-held key over the tenant and the filter set: a cursor edited by hand, made up, or
    issued for other filters or another tenant is refused with 400 `invalid_cursor`."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("cursor key too short")
        self._key = key

    def _tag(self, scope: str, position: str) -> bytes:
        msg = f"{scope}\n{position}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, scope: str, position: str) -> str:
        return f"{_b64(position.encode())}.{_b64(self._tag(scope, position))}"

    def decode(self, scope: str, cursor: str) -> str:
        invalid = InvalidRequest("The cursor is not valid for this list; pass next_cursor from the previous "
                                 "page unchanged, with the same filters, or start again without it.",
                                 code="invalid_cursor")
        body, sep, tag = cursor.partition(".")
        if not sep or not body or not tag:
            raise invalid
        try:
            position = _unb64(body).decode()
            given = _unb64(tag)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise invalid from None
        if not hmac.compare_digest(given, self._tag(scope, position)):
            raise invalid
        return position


def list_scope(tenant: str, filters: RunFilters) -> str:
    return f"eval-runs\n{tenant}\n{filters.fingerprint()}"
