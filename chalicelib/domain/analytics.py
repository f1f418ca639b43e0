"""Score analytics: what one finished run adds to the tenant's daily aggregates, and how daily rows
become the day or week series of `GET /analytics/scores`.

A run contributes, on the UTC day it was created, to four dimensions:
- `category`: one unit per category in its result (the category score and verdict);
- `question`: one unit per scored question (the verdict's score and verdict);
- `repository` and `user`: one unit for the run (its overall score and the verdict of that score).
Each unit adds `runs` 1, its score to `score_sum` and `score_count`, and 1 to `pass`, `warn` or
`fail`. Runs without a result (failed, cancelled, still running) add nothing. The contribution is
stored with the run's aggregates so it can be subtracted exactly when the run is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.evaluation import SessionEvalCompleted, verdict_for_score
from chalicelib.domain.history import parse_instant

AnalyticsDimension = Literal["category", "question", "repository", "user"]
DIMENSIONS: tuple[str, ...] = ("category", "question", "repository", "user")
INTERVALS: tuple[str, ...] = ("day", "week")
NO_REPOSITORY = "(none)"
DEFAULT_DAYS = 30
MAX_DAYS = {"day": 400, "week": 1100}


@dataclass(frozen=True)
class AggregateDelta:
    """What one run adds to one aggregate (dimension, day, key); negated to subtract it."""

    dimension: str
    day: str
    key: str
    runs: int
    score_sum: int
    score_count: int
    passed: int
    warned: int
    failed: int

    @property
    def is_zero(self) -> bool:
        return not any((self.runs, self.score_sum, self.score_count, self.passed, self.warned, self.failed))

    def negated(self) -> AggregateDelta:
        return AggregateDelta(self.dimension, self.day, self.key, -self.runs, -self.score_sum, -self.score_count,
                              -self.passed, -self.warned, -self.failed)


# Counter updates per DynamoDB transaction when a contribution is applied or removed (100 items at
# most, less the contribution record and the check that the run still exists).
CONTRIBUTION_CHUNK = 98


@dataclass(frozen=True)
class Contribution:
    """What one run added to the aggregates (recorded with them), and how much of it is applied."""

    run_id: str
    stamp: str
    deltas: list[AggregateDelta]
    applied: int = 0

    @property
    def chunks(self) -> int:
        return max(1, (len(self.deltas) + CONTRIBUTION_CHUNK - 1) // CONTRIBUTION_CHUNK)

    def chunk(self, i: int) -> list[AggregateDelta]:
        return self.deltas[i * CONTRIBUTION_CHUNK:(i + 1) * CONTRIBUTION_CHUNK]


def _unit(dimension: str, day: str, key: str, score: int) -> AggregateDelta:
    verdict = verdict_for_score(score)
    return AggregateDelta(dimension, day, key, 1, score, 1, int(verdict == "pass"), int(verdict == "warn"),
                          int(verdict == "fail"))


def merge_deltas(deltas: Iterable[AggregateDelta]) -> list[AggregateDelta]:
    """One delta per aggregate (dimension, day, key): the sum of those given."""
    totals: dict[tuple[str, str, str], AggregateDelta] = {}
    for d in deltas:
        k = (d.dimension, d.day, d.key)
        prev = totals.get(k)
        totals[k] = d if prev is None else AggregateDelta(
            d.dimension, d.day, d.key, prev.runs + d.runs, prev.score_sum + d.score_sum,
            prev.score_count + d.score_count, prev.passed + d.passed, prev.warned + d.warned,
            prev.failed + d.failed)
    return list(totals.values())


def run_contribution(*, created_at: str, created_by: str, repository: str | None,
                     result: SessionEvalCompleted | None) -> list[AggregateDelta]:
    """The aggregate deltas of one finished run (empty without a result)."""
    if result is None:
        return []
    day = created_at[:10]
    deltas = [_unit("category", day, c.name, c.score) for c in result.categories]
    deltas += [_unit("question", day, v.question_id, v.score) for v in result.verdicts()]
    if result.overall_score >= 1:
        deltas.append(_unit("repository", day, repository or NO_REPOSITORY, result.overall_score))
        deltas.append(_unit("user", day, created_by, result.overall_score))
    return merge_deltas(deltas)


# -- the query ----------------------------------------------------------------------------------------

class ScoresQuery(BaseModel):
    """`GET /analytics/scores`: an empty value is refused like an unknown one (`?by=` is not the default)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str | None = Field(default=None, alias="from", min_length=1, max_length=40,
                              description=f"First day (YYYY-MM-DD or an ISO instant, UTC); default {DEFAULT_DAYS} "
                                          "days before 'to'")
    to: str | None = Field(default=None, min_length=1, max_length=40,
                           description="Last day, included (default today, UTC)")
    interval: str | None = Field(default=None, min_length=1, max_length=10,
                                 description="day (default) or week (ISO weeks, Monday first)",
                                 json_schema_extra={"enum": list(INTERVALS)})
    by: str | None = Field(default=None, min_length=1, max_length=20,
                           description="category (default), question, repository or user",
                           json_schema_extra={"enum": list(DIMENSIONS)})


@dataclass(frozen=True)
class ScoresRequest:
    first_day: date
    last_day: date
    interval: str
    by: str


def parse_scores_query(query: ScoresQuery, today: date) -> ScoresRequest:
    interval = query.interval if query.interval is not None else "day"
    if interval not in INTERVALS:
        raise InvalidRequest(f"Unknown interval {interval[:20]!r}; use day or week.", code="invalid_filter",
                             details={"field": "interval", "allowed": list(INTERVALS)})
    by = query.by if query.by is not None else "category"
    if by not in DIMENSIONS:
        raise InvalidRequest(f"Unknown dimension {by[:20]!r}; use one of: {', '.join(DIMENSIONS)}.",
                             code="invalid_filter", details={"field": "by", "allowed": list(DIMENSIONS)})
    if query.to is None:
        last = today
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", query.to.strip()):
        last = parse_instant("to", query.to, end_of_day=False).date()   # a day bound: the last day shown
    else:
        # An instant bound is exclusive, as in the run list.
        last = (parse_instant("to", query.to, end_of_day=False) - timedelta(microseconds=1)).date()
    first = (parse_instant("from", query.from_, end_of_day=False).date() if query.from_ is not None
             else last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise InvalidRequest("'from' must not be after 'to'.", code="invalid_date_range",
                             details={"from": first.isoformat(), "to": last.isoformat()})
    span = (last - first).days + 1
    if span > MAX_DAYS[interval]:
        raise InvalidRequest(f"A {interval} series covers at most {MAX_DAYS[interval]} days; narrow 'from'/'to'.",
                             code="invalid_date_range", details={"days": span, "max_days": MAX_DAYS[interval]})
    return ScoresRequest(first, last, interval, by)


@dataclass(frozen=True)
class AggregateRow:
    """One stored daily aggregate, as read back."""

    day: str
    key: str
    runs: int
    score_sum: int
    score_count: int
    passed: int
    warned: int
    failed: int


class ScorePoint(BaseModel):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    t: str = Field(description="The day, or the Monday starting the ISO week (YYYY-MM-DD)")
    runs: int
    mean_score: float | None
    # `pass` is a Python keyword; the wire name is the contract's.
    pass_: int = Field(serialization_alias="pass", validation_alias="pass")
    warn: int
    fail: int


class ScoreSeries(BaseModel):
    key: str
    points: list[ScorePoint]


class ScoreAnalytics(BaseModel):
    """`GET /analytics/scores`. Points only for periods with scored runs; keys sorted."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    series: list[ScoreSeries]
    by: str
    interval: str
    from_: str = Field(serialization_alias="from", validation_alias="from")
    to: str


def period_start(day: str, interval: str) -> str:
    if interval == "day":
        return day
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


def build_series(rows: Iterable[AggregateRow], request: ScoresRequest) -> ScoreAnalytics:
    buckets: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        if row.runs <= 0:
            continue  # everything it held was deleted
        t = period_start(row.day, request.interval)
        acc = buckets.setdefault(row.key, {}).setdefault(t, [0, 0, 0, 0, 0, 0])
        for i, v in enumerate((row.runs, row.score_sum, row.score_count, row.passed, row.warned, row.failed)):
            acc[i] += v
    series = []
    for key in sorted(buckets):
        points = [ScorePoint(t=t, runs=a[0], mean_score=round(a[1] / a[2], 3) if a[2] else None,
                             pass_=a[3], warn=a[4], fail=a[5])
                  for t, a in sorted(buckets[key].items())]
        series.append(ScoreSeries(key=key, points=points))
    return ScoreAnalytics(series=series, by=request.by, interval=request.interval,
                          from_=request.first_day.isoformat(), to=request.last_day.isoformat())


def utc_today(now: datetime) -> date:
    return now.astimezone(UTC).date()
