"""Pure history rules: list filters, cursors, analytics contributions and series, compare, export
encoding and retention stamps."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime

import pytest

from chalicelib.domain.analytics import (
    AggregateRow,
    ScoresQuery,
    build_series,
    parse_scores_query,
    run_contribution,
)
from chalicelib.domain.errors import InvalidRequest
from chalicelib.domain.export import COLUMNS, RowEncoder, verdict_rows
from chalicelib.domain.history import (
    CursorSigner,
    EvalRunSummary,
    RunFilters,
    RunListQuery,
    list_scope,
    parse_run_filters,
)
from chalicelib.domain.retention import effective_retention_days, retention_stamp
from chalicelib.domain.run_compare import compare_runs
from tests.history_support import new_run, result_for


def _filters(**params: str) -> RunFilters:
    return parse_run_filters(RunListQuery.model_validate(params))


# -- filters -----------------------------------------------------------------------------------------

def test_day_bounds_cover_whole_days_and_instants_are_exact() -> None:
    f = _filters(**{"from": "2026-11-01", "to": "2026-11-03"})
    assert (f.created_from, f.created_to) == ("2026-11-01T00:00:00.000Z", "2026-11-04T00:00:00.000Z")
    f = _filters(**{"from": "2026-11-01T10:00:00+02:00", "to": "2026-11-01T12:30:00Z"})
    assert (f.created_from, f.created_to) == ("2026-11-01T08:00:00.000Z", "2026-11-01T12:30:00.000Z")


def test_a_same_day_range_is_valid_and_an_empty_instant_range_is_not() -> None:
    assert _filters(**{"from": "2026-11-01", "to": "2026-11-01"}).created_to == "2026-11-02T00:00:00.000Z"
    with pytest.raises(InvalidRequest) as err:
        _filters(**{"from": "2026-11-01T10:00:00Z", "to": "2026-11-01T10:00:00Z"})
    assert err.value.code == "invalid_date_range"


def test_lists_of_values_and_their_errors() -> None:
    assert _filters(status="failed, timed_out").statuses == {"failed", "timed_out"}
    with pytest.raises(InvalidRequest) as err:
        _filters(status="failed,,")
    assert err.value.details == {"field": "status", "value": "", "allowed": [
        "queued", "running", "succeeded", "failed", "timed_out", "cancelled"]}


def test_the_filter_set_matches_a_summary_on_every_dimension() -> None:
    s = EvalRunSummary(eval_run_id="evr_1", session_id="s", status="succeeded", runner="server", vendor="openai",
                       created_by="bob", repository="r", trigger={"kind": "rule", "rule_id": "x"}, batch_id="b",
                       created_at="2026-11-01T10:00:00.000Z", overall_score=3)
    assert _filters(status="succeeded", runner="server", vendor="openai", user="bob", repository="r",
                    trigger="rule", batch_id="b", min_score="3", max_score="3", **{"from": "2026-11-01",
                                                                                  "to": "2026-11-01"}).matches(s)
    for miss in ({"status": "failed"}, {"runner": "daemon"}, {"vendor": "anthropic"}, {"user": "al"},
                 {"repository": "q"}, {"trigger": "manual"}, {"batch_id": "c"}, {"min_score": "4"},
                 {"max_score": "2"}, {"from": "2026-11-02"}, {"to": "2026-10-31"}):
        assert not _filters(**miss).matches(s), miss


# -- cursors -----------------------------------------------------------------------------------------

def test_cursors_round_trip_only_in_their_scope() -> None:
    signer = CursorSigner(b"k" * 32)
    scope = list_scope("acme", _filters(user="bob"))
    cursor = signer.encode(scope, "2026-11-01T10:00:00.000Z#evr_1")
    assert signer.decode(scope, cursor) == "2026-11-01T10:00:00.000Z#evr_1"
    for other in (list_scope("globex", _filters(user="bob")), list_scope("acme", _filters(user="carol"))):
        with pytest.raises(InvalidRequest):
            signer.decode(other, cursor)
    with pytest.raises(InvalidRequest):
        CursorSigner(b"j" * 32).decode(scope, cursor)
    for broken in ("", ".", "abc", cursor + "x", cursor.replace(".", ".A"), "é.é"):
        with pytest.raises(InvalidRequest):
            signer.decode(scope, broken)


# -- analytics ---------------------------------------------------------------------------------------

def test_a_run_contributes_one_unit_per_category_question_repository_and_user() -> None:
    result = result_for("evr_1", {"tests_written": 1})
    deltas = run_contribution(created_at="2026-11-01T23:59:59.000Z", created_by="bob", repository=None,
                              result=result)
    assert len(deltas) == 4 + 13 + 1 + 1
    assert {d.day for d in deltas} == {"2026-11-01"}
    tests = next(d for d in deltas if d.key == "tests_written")
    assert (tests.runs, tests.score_sum, tests.failed) == (1, 1, 1)
    assert next(d for d in deltas if d.dimension == "repository").key == "(none)"
    assert run_contribution(created_at="2026-11-01T00:00:00.000Z", created_by="bob", repository=None,
                            result=None) == []


def test_series_merge_days_into_iso_weeks_and_skip_emptied_rows() -> None:
    rows = [AggregateRow("2026-11-02", "safety", 2, 7, 2, 1, 1, 0),     # Monday
            AggregateRow("2026-11-08", "safety", 1, 5, 1, 1, 0, 0),     # Sunday, same week
            AggregateRow("2026-11-09", "safety", 0, 0, 0, 0, 0, 0)]     # deleted
    request = parse_scores_query(ScoresQuery.model_validate({"from": "2026-11-01", "to": "2026-11-10",
                                                            "interval": "week"}), date(2026, 12, 4))
    body = build_series(rows, request).model_dump(mode="json")
    assert body["series"] == [{"key": "safety", "points": [
        {"t": "2026-11-02", "runs": 3, "mean_score": 4.0, "pass": 2, "warn": 1, "fail": 0}]}]
    assert (body["from"], body["to"], body["interval"], body["by"]) == ("2026-11-01", "2026-11-10", "week",
                                                                       "category")


def test_analytics_defaults_to_the_last_30_days() -> None:
    request = parse_scores_query(ScoresQuery(), date(2026, 12, 4))
    assert (request.first_day, request.last_day, request.interval, request.by) == (
        date(2026, 11, 5), date(2026, 12, 4), "day", "category")


# -- compare -----------------------------------------------------------------------------------------

def test_compare_lists_questions_present_on_one_side_only() -> None:
    a = new_run("evr_a").model_copy(update={"result": result_for("evr_a", 4)})
    b = new_run("evr_b", session_id="other")
    comparison = compare_runs(a, b)
    assert comparison.overall_delta is None and comparison.same_session is False
    assert all(q.b is None and q.delta is None and q.verdict_changed for q in comparison.questions)
    assert len(comparison.changed_questions) == 13


# -- export ------------------------------------------------------------------------------------------

def test_csv_rows_neutralise_formulas_and_keep_numbers() -> None:
    summary = EvalRunSummary(eval_run_id="evr_1", session_id="s", status="succeeded", runner="server",
                             created_by="bob", created_at="2026-11-01T10:00:00.000Z", cost={"usd": 0.12})
    result = result_for("evr_1", 2, finding="+cmd|' /C calc'!A0")
    encoder = RowEncoder("csv")
    text = encoder.header() + "".join(encoder.encode(r) for r in verdict_rows(summary, result))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 13
    assert rows[0]["finding"].startswith("'+cmd") and rows[0]["score"] == "2" and rows[0]["run_cost_usd"] == "0.12"


def test_jsonl_rows_are_one_object_per_line() -> None:
    summary = EvalRunSummary(eval_run_id="evr_1", session_id="s", status="succeeded", runner="daemon",
                             created_by="bob", created_at="2026-11-01T10:00:00.000Z")
    encoder = RowEncoder("jsonl")
    lines = [encoder.encode(r) for r in verdict_rows(summary, result_for("evr_1", 5, finding="line\nbreak"))]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert json.loads(lines[0])["finding"].startswith("line\nbreak") and encoder.header() == ""


# -- retention ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("days", "effective"), [(None, None), (1, 1), (4, 3), (30, 30), (89, 60), (100000, 3650),
                                                 (0, 1)])
def test_retention_rounds_down_to_the_ladder(days: int | None, effective: int | None) -> None:
    assert effective_retention_days(days) == effective


def test_a_stamp_carries_the_tag_and_the_ttl() -> None:
    stamp = retention_stamp(31, datetime(2026, 12, 1, tzinfo=UTC))
    assert stamp is not None and stamp.days == 30 and stamp.object_tags == {"retention-days": "30"}
    assert stamp.expires_at == int(datetime(2026, 12, 31, tzinfo=UTC).timestamp())
    assert retention_stamp(None, datetime(2026, 12, 1, tzinfo=UTC)) is None
