"""History routes through chalice.test.Client under moto: the tenant-wide run list and its cursors,
compare, score analytics, verdict export, and deleting runs and sessions across every store."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests

from chalicelib.domain.clock import iso
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.runs import EvalRun
from tests.conftest import mint
from tests.history_support import BASE, new_run, result_for, store_run

MEMBER = mint("acme", "bob", [])
OTHER_MEMBER = mint("acme", "carol", [])
ADMIN = mint("acme", "alice", ["admin"])
OUTSIDER = mint("globex", "mallory", ["admin"])


class FrozenClock:
    def __init__(self, now: Any) -> None:
        self._now = now

    def now(self) -> Any:
        return self._now

    def monotonic(self) -> float:
        return 0.0


@pytest.fixture
def frozen(container: Any) -> Any:
    container.clock = FrozenClock(BASE + timedelta(days=3))
    return container


def _finished(container: Any, run: EvalRun, **kw: Any) -> EvalRun:
    """Store a run through start and finish, then finalize it like every runner does."""
    finished = store_run(container.run_store, run, **kw)
    final: EvalRun = container.run_lifecycle.finalize(finished)
    return final


def _upload(client: Any, session_id: str, token: str = MEMBER, repository: str = "github.com/acme/web") -> None:
    resp = client.put(f"/sessions/{session_id}", token=token, json_body={
        "trace": [{"kind": "user_message", "timestamp": "2026-11-01T09:00:00Z", "text": "Add a README"},
                  {"kind": "assistant_message", "timestamp": "2026-11-01T09:00:05Z", "text": "Added it."}],
        "repository": repository})
    assert resp.status_code in (200, 201), resp.json


def _h(resp: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in resp.headers.items()}


def _list(client: Any, token: str = MEMBER, **params: str) -> Any:
    return client.get("/eval-runs?" + urlencode(params), token=token)


# -- the list --------------------------------------------------------------------------------------

def test_members_list_the_tenants_runs_newest_first_with_stable_cursors(client: Any, frozen: Any) -> None:
    for i in range(7):
        _finished(frozen, new_run(f"evr_{i}", user="bob" if i % 2 else "carol", created_at=BASE + timedelta(hours=i)))
    _finished(frozen, new_run("evr_other", tenant="globex"))
    first = _list(client, limit="3")
    assert first.status_code == 200, first.json
    assert [r["eval_run_id"] for r in first.json["items"]] == ["evr_6", "evr_5", "evr_4"]
    assert first.json["items"][0]["created_by"] == "carol"  # another member's run, as on the dashboard
    # A run created after page 1 does not shift page 2.
    _finished(frozen, new_run("evr_new", created_at=BASE + timedelta(days=1)))
    second = _list(client, limit="3", cursor=first.json["next_cursor"])
    assert [r["eval_run_id"] for r in second.json["items"]] == ["evr_3", "evr_2", "evr_1"]
    last = _list(client, limit="3", cursor=second.json["next_cursor"])
    assert [r["eval_run_id"] for r in last.json["items"]] == ["evr_0"] and last.json["next_cursor"] is None


def test_filters_combine(client: Any, frozen: Any) -> None:
    _finished(frozen, new_run("evr_a", user="bob", created_at=BASE), scores=5)
    _finished(frozen, new_run("evr_b", user="bob", created_at=BASE + timedelta(hours=1), runner="daemon"), scores=2)
    _finished(frozen, new_run("evr_c", user="carol", created_at=BASE + timedelta(days=1), repository="r2"), scores=4)
    _finished(frozen, new_run("evr_d", user="bob", created_at=BASE + timedelta(days=2)), finish="failed", scores=None)

    def ids(**params: str) -> list[str]:
        resp = _list(client, **params)
        assert resp.status_code == 200, resp.json
        return [r["eval_run_id"] for r in resp.json["items"]]

    assert ids(user="bob") == ["evr_d", "evr_b", "evr_a"]
    assert ids(user="bob", min_score="3") == ["evr_a"]
    assert ids(status="failed,succeeded", runner="server") == ["evr_d", "evr_c", "evr_a"]
    assert ids(vendor="anthropic", max_score="4") == ["evr_c"]
    assert ids(repository="r2") == ["evr_c"]
    assert ids(**{"from": "2026-11-02", "to": "2026-11-02"}) == ["evr_c"]
    assert ids(**{"from": iso(BASE + timedelta(minutes=30))}) == ["evr_d", "evr_c", "evr_b"]
    assert ids(trigger="manual", user="carol") == ["evr_c"]
    assert ids(trigger="rule") == []
    assert ids(batch_id="evb_nothing") == []


@pytest.mark.parametrize(("params", "code", "field"), [
    ({"status": "done"}, "invalid_filter", "status"),
    ({"runner": "laptop"}, "invalid_filter", "runner"),
    ({"vendor": "google"}, "invalid_filter", "vendor"),
    ({"trigger": "cron"}, "invalid_filter", "trigger"),
    ({"min_score": "9"}, "invalid_filter", "min_score"),
    ({"min_score": "x"}, "invalid_filter", "min_score"),
    ({"limit": "0"}, "invalid_filter", "limit"),
    ({"user": "bob smith"}, "invalid_filter", "user"),
    ({"batch_id": "a/b"}, "invalid_filter", "batch_id"),
    ({"from": "yesterday"}, "invalid_date", "from"),
    ({"to": "2026-11-01T10:00:00"}, "invalid_date", "to"),
    ({"to": "9999-12-31"}, "invalid_date", "to"),
])
def test_bad_filters_are_400_with_the_contract_body(client: Any, params: dict[str, str], code: str,
                                                    field: str) -> None:
    resp = _list(client, **params)
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == code and resp.json["error"]["details"]["field"] == field
    assert resp.json["error"]["message"]


def test_inverted_ranges_and_unknown_parameters_are_400(client: Any) -> None:
    resp = _list(client, **{"from": "2026-11-05", "to": "2026-11-01"})
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "invalid_date_range")
    resp = _list(client, min_score="4", max_score="2")
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "invalid_score_range")
    resp = _list(client, colour="red")
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "invalid_query")


def test_forged_edited_and_foreign_cursors_are_400(client: Any, frozen: Any) -> None:
    for i in range(3):
        _finished(frozen, new_run(f"evr_{i}", created_at=BASE + timedelta(hours=i)))
        _finished(frozen, new_run(f"evr_g{i}", tenant="globex", created_at=BASE + timedelta(hours=i)))
    cursor = _list(client, limit="1").json["next_cursor"]
    tag = cursor.split(".")[1]
    earlier = base64.urlsafe_b64encode(b"2030-01-01T00:00:00.000Z#evr_x").decode().rstrip("=")
    attempts = {
        "made up": "eyJrIjoiMjAyNiJ9",
        "edited position": f"{earlier}.{tag}",
        "garbage": "!!!.???",
        "other filters": cursor,   # sent with different filters below
        "other tenant": _list(client, token=OUTSIDER, limit="1").json["next_cursor"],
    }
    for name, forged in attempts.items():
        params = {"limit": "1", "cursor": forged}
        if name == "other filters":
            params["user"] = "bob"
        resp = _list(client, **params)
        assert resp.status_code == 400, name
        assert resp.json["error"]["code"] == "invalid_cursor", name
    assert _list(client, limit="1", cursor=cursor).status_code == 200


# -- compare ---------------------------------------------------------------------------------------

def test_compare_gives_per_question_and_category_deltas(client: Any, frozen: Any) -> None:
    _finished(frozen, new_run("evr_a"), scores={"tests_written": 2, "sensitive_files": 5})
    b = new_run("evr_b", created_at=BASE + timedelta(hours=1))
    frozen.run_store.create(b)
    frozen.run_store.start("acme", "evr_b", now=b.created_at, outcomes=[])
    result = result_for("evr_b", {"tests_written": 4, "sensitive_files": 5})
    # Same score for sensitive_files, but the judge explains it differently.
    result.categories[0].questions[0].finding = "A new finding."
    frozen.run_store.finish("acme", "evr_b", status="succeeded", now=b.created_at, usage=TokenUsage(), result=result)

    resp = client.get("/eval-runs/compare?a=evr_a&b=evr_b", token=OTHER_MEMBER)
    assert resp.status_code == 200, resp.json
    body = resp.json
    by_q = {q["question_id"]: q for q in body["questions"]}
    assert by_q["tests_written"]["delta"] == 2 and by_q["tests_written"]["verdict_changed"] is True
    assert by_q["tests_written"]["a"]["verdict"] == "warn" and by_q["tests_written"]["b"]["verdict"] == "pass"
    first_id = result.categories[0].questions[0].question_id
    assert by_q[first_id]["delta"] == 0 and by_q[first_id]["text_changed"] is True
    assert by_q[first_id]["verdict_changed"] is False
    assert by_q["broken_tests"]["delta"] == 0 and by_q["broken_tests"]["text_changed"] is False
    assert set(body["changed_questions"]) == {"tests_written", first_id}
    quality = next(c for c in body["categories"] if c["name"] == "quality")
    assert quality["delta"] == quality["b_score"] - quality["a_score"]
    assert body["same_session"] is True


def test_compare_across_tenants_or_unknown_runs_is_404(client: Any, frozen: Any) -> None:
    _finished(frozen, new_run("evr_a"))
    _finished(frozen, new_run("evr_x", tenant="globex"))
    for query in ("a=evr_a&b=evr_x", "a=evr_x&b=evr_a", "a=evr_a&b=nope", "a=evr_a&b=../etc"):
        resp = client.get(f"/eval-runs/compare?{query}", token=MEMBER)
        assert (resp.status_code, resp.json["error"]["code"]) == (404, "eval_run_not_found"), query
    resp = client.get("/eval-runs/compare?a=evr_a", token=MEMBER)
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "invalid_query")


# -- analytics -------------------------------------------------------------------------------------

def test_analytics_by_category_day_and_week(client: Any, frozen: Any) -> None:
    _finished(frozen, new_run("evr_1", created_at=BASE), scores=5)                          # Sun 1 Nov
    _finished(frozen, new_run("evr_2", created_at=BASE + timedelta(hours=2)), scores=1)
    _finished(frozen, new_run("evr_3", created_at=BASE + timedelta(days=1)), scores=4)      # Mon 2 Nov
    _finished(frozen, new_run("evr_4", created_at=BASE + timedelta(days=1)), finish="failed", scores=None)
    resp = client.get("/analytics/scores?from=2026-11-01&to=2026-11-02&by=category", token=MEMBER)
    assert resp.status_code == 200, resp.json
    safety = next(s for s in resp.json["series"] if s["key"] == "safety")
    assert safety["points"] == [
        {"t": "2026-11-01", "runs": 2, "mean_score": 3.0, "pass": 1, "warn": 0, "fail": 1},
        {"t": "2026-11-02", "runs": 1, "mean_score": 4.0, "pass": 1, "warn": 0, "fail": 0}]
    assert [s["key"] for s in resp.json["series"]] == ["efficiency", "plan_adherence", "quality", "safety"]
    weekly = client.get("/analytics/scores?from=2026-10-26&to=2026-11-08&interval=week&by=user", token=MEMBER)
    assert weekly.json["series"] == [{"key": "bob", "points": [
        {"t": "2026-10-26", "runs": 2, "mean_score": 3.0, "pass": 1, "warn": 0, "fail": 1},
        {"t": "2026-11-02", "runs": 1, "mean_score": 4.0, "pass": 1, "warn": 0, "fail": 0}]}]
    by_question = client.get("/analytics/scores?from=2026-11-01&to=2026-11-01&by=question", token=MEMBER).json
    assert len(by_question["series"]) == 13
    repos = client.get("/analytics/scores?from=2026-11-01&to=2026-11-03&by=repository", token=MEMBER).json
    assert [s["key"] for s in repos["series"]] == ["github.com/acme/web"]
    assert client.get("/analytics/scores?from=2026-11-01&to=2026-11-03", token=OUTSIDER).json["series"] == []


def test_aggregates_count_each_finish_once_and_a_rerun_replaces_it(client: Any, frozen: Any) -> None:
    run = _finished(frozen, new_run("evr_1"), scores=2)
    assert frozen.run_lifecycle.finalize(run).finalized_at == run.finalized_at   # redelivered: nothing twice
    frozen.score_analytics.record_finished_run(run)      # the out-of-transaction path agrees: no double count
    store = frozen.run_store
    store.reopen_for_rerun("acme", "evr_1", deadline_at=run.deadline_at, outcomes=[], expected_version=run.version)
    store.start("acme", "evr_1", now=run.created_at, outcomes=[])
    rerun = store.finish("acme", "evr_1", status="succeeded", now=iso(BASE + timedelta(hours=1)), usage=TokenUsage(),
                         result=result_for("evr_1", 5))
    frozen.run_lifecycle.finalize(rerun)
    body = client.get("/analytics/scores?from=2026-11-01&to=2026-11-01&by=user", token=MEMBER).json
    assert body["series"][0]["points"] == [{"t": "2026-11-01", "runs": 1, "mean_score": 5.0, "pass": 1, "warn": 0,
                                            "fail": 0}]
    by_question = client.get("/analytics/scores?from=2026-11-01&to=2026-11-01&by=question", token=MEMBER).json
    assert {p["mean_score"] for s in by_question["series"] for p in s["points"]} == {5.0}


@pytest.mark.parametrize(("query", "code"), [
    ("interval=hour", "invalid_filter"), ("by=model", "invalid_filter"), ("from=2026-11-05&to=2026-11-01",
                                                                           "invalid_date_range"),
    ("from=2020-01-01&to=2026-01-01", "invalid_date_range"), ("from=soon", "invalid_date"), ("x=1", "invalid_query"),
])
def test_bad_analytics_queries_are_400(client: Any, query: str, code: str) -> None:
    resp = client.get(f"/analytics/scores?{query}", token=MEMBER)
    assert (resp.status_code, resp.json["error"]["code"]) == (400, code)


# -- export ----------------------------------------------------------------------------------------

def test_export_csv_is_one_row_per_verdict_with_formulas_neutralised(client: Any, frozen: Any) -> None:
    run = new_run("evr_1")
    frozen.run_store.create(run)
    frozen.run_store.start("acme", "evr_1", now=run.created_at, outcomes=[])
    result = result_for("evr_1", 3, finding="=HYPERLINK(\"http://evil\")")
    frozen.run_store.finish("acme", "evr_1", status="succeeded", now=run.created_at, usage=TokenUsage(), result=result)
    _finished(frozen, new_run("evr_2", user="carol", created_at=BASE + timedelta(hours=1)), scores=5)
    _finished(frozen, new_run("evr_3", created_at=BASE + timedelta(hours=2)), finish="failed", scores=None)
    resp = client.get("/eval-runs/export?format=csv&user=bob", token=OTHER_MEMBER)
    assert resp.status_code == 200
    assert _h(resp)["content-type"].startswith("text/csv")
    assert "attachment" in _h(resp)["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.body.decode())))
    assert len(rows) == 13 and {r["eval_run_id"] for r in rows} == {"evr_1"}
    assert rows[0]["finding"].startswith("'=HYPERLINK")
    assert {r["score"] for r in rows} == {"3"} and rows[0]["repository"] == "github.com/acme/web"
    assert _h(resp)["x-export-rows"] == "13"


def test_export_jsonl_covers_every_scored_run(client: Any, frozen: Any) -> None:
    for i in range(3):
        _finished(frozen, new_run(f"evr_{i}", created_at=BASE + timedelta(hours=i)), scores=i + 2)
    resp = client.get("/eval-runs/export?format=jsonl", token=MEMBER)
    assert resp.status_code == 200 and _h(resp)["content-type"].startswith("application/jsonl")
    rows = [json.loads(line) for line in resp.body.decode().splitlines()]
    assert len(rows) == 39 and rows[0]["eval_run_id"] == "evr_2" and rows[-1]["eval_run_id"] == "evr_0"
    assert {r["question_id"] for r in rows if r["eval_run_id"] == "evr_1"} == {
        q["id"] for q in client.get("/eval/questions", token=MEMBER).json["questions"]}


def test_export_link_is_a_presigned_download(client: Any, frozen: Any) -> None:
    _finished(frozen, new_run("evr_1"), scores=4)
    resp = client.get("/eval-runs/export?format=csv&delivery=link", token=MEMBER)
    assert resp.status_code == 200, resp.json
    link = resp.json
    assert link["rows"] == 13 and link["filename"].endswith(".csv")
    key = link["download_url"].split("?")[0].split(".amazonaws.com/")[-1]
    assert key.startswith("exports/acme/")
    obj = frozen.s3.get_object(Bucket=frozen.config.bucket_name, Key=key)
    assert obj["ServerSideEncryption"] == "aws:kms"
    assert obj["Body"].read().decode().count("\r\n") == 14


def test_a_large_export_redirects_to_the_link(client: Any, frozen: Any) -> None:
    frozen.run_exports._inline_limit = 2000
    _finished(frozen, new_run("evr_1"), scores=4)
    resp = client.get("/eval-runs/export?format=jsonl", token=MEMBER)
    assert resp.status_code == 303
    assert _h(resp)["location"] == resp.json["download_url"]
    assert resp.json["rows"] == 13


def test_bad_export_queries_are_400(client: Any) -> None:
    for query, code in (("format=xlsx", "invalid_filter"), ("delivery=email", "invalid_filter"),
                        ("status=nope", "invalid_filter"), ("cursor=x", "invalid_query")):
        resp = client.get(f"/eval-runs/export?{query}", token=MEMBER)
        assert (resp.status_code, resp.json["error"]["code"]) == (400, code), query


def _document() -> dict[str, Any]:
    import app  # noqa: F401 - registers every route
    from chalicelib.api.openapi import build_openapi

    document: dict[str, Any] = build_openapi()
    return document


def _query_params(path: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in _document()["paths"][path]["get"]["parameters"] if p["in"] == "query"}


HISTORY_GETS = ("/eval-runs", "/eval-runs/export", "/eval-runs/compare", "/analytics/scores")


@pytest.mark.parametrize(("path", "name"), [(path, name) for path in HISTORY_GETS for name in _query_params(path)])
def test_an_empty_query_value_is_400_and_documented_as_such(client: Any, frozen: Any, path: str, name: str) -> None:
    """`?by=` is not "by omitted": every history query parameter (enums, dates, cursors, ids) refuses
    an empty value with the contract error body, and the OpenAPI document says so (minLength), which
    is what the schemathesis fuzz checks the stack against."""
    _finished(frozen, new_run("evr_a"))
    _finished(frozen, new_run("evr_b"))
    params = {"a": "evr_a", "b": "evr_b"} if path == "/eval-runs/compare" else {}
    assert client.get(f"{path}?{urlencode(params)}", token=MEMBER).status_code == 200
    resp = client.get(f"{path}?{urlencode({**params, name: ''})}", token=MEMBER)
    assert resp.status_code == 400, (path, name, resp.body[:200])
    error = resp.json["error"]
    assert error["code"] == "invalid_query" and error["message"] and error["details"]["fields"][0]["field"] == name
    assert _query_params(path)[name]["schema"]["minLength"] == 1


def test_compare_documents_both_runs_as_required() -> None:
    assert {name: p["required"] for name, p in _query_params("/eval-runs/compare").items()} == {"a": True, "b": True}


# -- deletion --------------------------------------------------------------------------------------

def _aggregate_runs(client: Any, by: str = "user") -> int:
    body = client.get(f"/analytics/scores?from=2026-10-01&to=2026-11-30&by={by}", token=ADMIN).json
    return sum(p["runs"] for s in body["series"] for p in s["points"])


def _items_of(container: Any, tenant: str = "acme") -> set[str]:
    resp = container.dynamodb.query(TableName=container.config.table_name, KeyConditionExpression="pk = :p",
                                     ExpressionAttributeValues={":p": {"S": f"TENANT#{tenant}"}})
    return {i["sk"]["S"] for i in resp["Items"]}


def test_deleting_a_session_removes_trace_metadata_runs_and_their_scores(client: Any, frozen: Any) -> None:
    _upload(client, "sess-1")
    _upload(client, "sess-2")
    key = frozen.sessions.get_session("acme", "sess-1").storage.key
    _finished(frozen, new_run("evr_1", session_id="sess-1"), scores=2)
    _finished(frozen, new_run("evr_2", session_id="sess-1", created_at=BASE + timedelta(hours=1)), finish="failed",
              scores=None)
    _finished(frozen, new_run("evr_3", session_id="sess-2"), scores=5)
    assert _aggregate_runs(client) == 2

    assert client.delete("/sessions/sess-1", token=OTHER_MEMBER).json["error"]["code"] == "not_session_owner"
    resp = client.delete("/sessions/sess-1", token=MEMBER)
    assert resp.status_code == 204, resp.json

    assert client.get("/sessions/sess-1", token=MEMBER).status_code == 404
    assert client.get("/eval-runs/evr_1", token=MEMBER).status_code == 404
    with pytest.raises(frozen.s3.exceptions.NoSuchKey):
        frozen.s3.get_object(Bucket=frozen.config.bucket_name, Key=key)
    assert [r["eval_run_id"] for r in _list(client).json["items"]] == ["evr_3"]
    assert _aggregate_runs(client) == 1 and _aggregate_runs(client, "category") == 4
    left = _items_of(frozen)
    assert not any("evr_1" in sk or "evr_2" in sk or "sess-1" in sk for sk in left), left
    audit = client.get("/admin/audit/deletions", token=ADMIN).json["items"]
    assert [(a["kind"], a["by"], a["session_id"], sorted(a["eval_run_ids"]), a["trace_deleted"]) for a in audit] == [
        ("session", "bob", "sess-1", ["evr_1", "evr_2"], True)]
    assert "Add a README" not in json.dumps(audit)
    assert client.delete("/sessions/sess-1", token=MEMBER).status_code == 404


def test_admins_may_delete_any_session_and_other_tenants_see_nothing(client: Any, frozen: Any) -> None:
    _upload(client, "sess-1")
    assert client.delete("/sessions/sess-1", token=OUTSIDER).status_code == 404
    assert client.delete("/sessions/sess-1", token=ADMIN).status_code == 204
    assert client.get("/admin/audit/deletions", token=MEMBER).status_code == 403
    assert client.get("/admin/audit/deletions", token=OUTSIDER).json["items"] == []


def test_a_session_with_an_active_run_is_not_deleted(client: Any, frozen: Any) -> None:
    _upload(client, "sess-1")
    # Created a minute before now: not overdue, so still active.
    store_run(frozen.run_store, new_run("evr_1", session_id="sess-1", created_at=BASE + timedelta(days=3, minutes=-1)),
              finish=None)
    resp = client.delete("/sessions/sess-1", token=MEMBER)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "runs_still_active")
    assert resp.json["error"]["details"]["eval_run_ids"] == ["evr_1"]
    assert client.get("/sessions/sess-1", token=MEMBER).status_code == 200


def test_deleting_a_run_takes_its_scores_out_exactly(client: Any, frozen: Any) -> None:
    _finished(frozen, new_run("evr_1"), scores=2)
    _finished(frozen, new_run("evr_2", user="carol"), scores=4)
    assert client.delete("/eval-runs/evr_2", token=MEMBER).json["error"]["code"] == "not_run_owner"
    assert client.delete("/eval-runs/evr_1", token=MEMBER).status_code == 204
    body = client.get("/analytics/scores?from=2026-11-01&to=2026-11-01&by=user", token=MEMBER).json
    assert [(s["key"], s["points"][0]["runs"]) for s in body["series"]] == [("carol", 1)]
    assert client.delete("/eval-runs/evr_2", token=ADMIN).status_code == 204
    assert client.get("/analytics/scores?from=2026-11-01&to=2026-11-01&by=category", token=MEMBER).json[
        "series"] == []
    assert not any(sk.startswith(("RUN#", "AGG#RUN#")) for sk in _items_of(frozen))
    assert client.delete("/eval-runs/evr_1", token=MEMBER).status_code == 404
    assert client.delete(f"/eval-runs/{quote('a b')}", token=MEMBER).status_code == 404


def test_an_active_run_is_not_deleted_and_an_overdue_one_is_ended_first(client: Any, frozen: Any) -> None:
    store_run(frozen.run_store, new_run("evr_1", created_at=BASE + timedelta(days=3, minutes=-1)), finish=None)
    resp = client.delete("/eval-runs/evr_1", token=MEMBER)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "run_still_active")
    store_run(frozen.run_store, new_run("evr_2"), finish=None)   # its worker vanished days ago
    assert client.delete("/eval-runs/evr_2", token=MEMBER).status_code == 204
    assert [a["eval_run_ids"] for a in client.get("/admin/audit/deletions", token=ADMIN).json["items"]] == [["evr_2"]]


def test_the_download_url_is_usable_over_http_shape(client: Any, frozen: Any) -> None:
    _finished(frozen, new_run("evr_1"), scores=4)
    link = client.get("/eval-runs/export?delivery=link", token=MEMBER).json["download_url"]
    assert link.startswith("https://") and "X-Amz-Signature=" in link
    assert "response-content-disposition=attachment" in requests.utils.unquote(link)


def test_a_dispatched_run_copies_its_sessions_repository(client: Any, container: Any) -> None:
    from tests.api.dispatch_kit import FakeDaemons, configure_vendors, install_daemons

    install_daemons(container, FakeDaemons())
    configure_vendors(client, "anthropic")
    _upload(client, "sess-r", repository="github.com/acme/mobile")
    resp = client.post("/sessions/sess-r/eval-runs", token=MEMBER, json_body={})
    assert resp.status_code == 202, resp.json
    run_id = resp.json["eval_run_id"]
    assert client.get(f"/eval-runs/{run_id}", token=MEMBER).json["repository"] == "github.com/acme/mobile"
    listed = _list(client, repository="github.com/acme/mobile", status="queued").json["items"]
    assert [(r["eval_run_id"], r["repository"]) for r in listed] == [(run_id, "github.com/acme/mobile")]
    missing = client.post("/sessions/no-such-session/eval-runs", token=MEMBER, json_body={})
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "session_not_found")


# -- retention -------------------------------------------------------------------------------------

def _set_retention(client: Any, days: int | None) -> None:
    resp = client.put("/admin/settings/eval-runner/limits", token=ADMIN, json_body={"retention_days": days})
    assert resp.status_code == 200, resp.json


def _session_expiry(container: Any, session_id: str) -> int | None:
    item = container.dynamodb.get_item(TableName=container.config.table_name, Key={
        "pk": {"S": "TENANT#acme"}, "sk": {"S": f"SESSION#{session_id}"}})["Item"]
    return int(item["expires_at"]["N"]) if "expires_at" in item else None


def test_retention_tags_the_trace_and_stamps_the_session_and_its_runs(client: Any, container: Any) -> None:
    from tests.api.dispatch_kit import FakeDaemons, configure_vendors, install_daemons

    install_daemons(container, FakeDaemons())
    configure_vendors(client, "anthropic")
    _set_retention(client, 100)          # rounds down to the ladder's 90 days
    _upload(client, "sess-kept")
    record = container.sessions.get_session("acme", "sess-kept")
    tags = container.s3.get_object_tagging(Bucket=container.config.bucket_name, Key=record.storage.key)["TagSet"]
    assert tags == [{"Key": "retention-days", "Value": "90"}]
    expires = _session_expiry(container, "sess-kept")
    uploaded = int(datetime.fromisoformat(record.uploaded_at.replace("Z", "+00:00")).timestamp())
    assert expires == uploaded + 90 * 86400
    run_id = client.post("/sessions/sess-kept/eval-runs", token=MEMBER, json_body={}).json["eval_run_id"]
    assert container.run_store.require("acme", run_id).expires_at == expires
    assert "expires_at" not in client.get("/sessions/sess-kept", token=MEMBER).json

    _set_retention(client, None)          # no retention: nothing expires
    _upload(client, "sess-forever")
    key = container.sessions.get_session("acme", "sess-forever").storage.key
    assert container.s3.get_object_tagging(Bucket=container.config.bucket_name, Key=key)["TagSet"] == []
    assert _session_expiry(container, "sess-forever") is None


def _selects(rule_filter: dict[str, Any], key: str, tags: dict[str, str]) -> bool:
    """Whether an S3 lifecycle rule's filter selects an object (prefix and every tag)."""
    conditions = rule_filter.get("And", rule_filter)
    wanted = conditions.get("Tags", [conditions["Tag"]] if "Tag" in conditions else [])
    return key.startswith(conditions.get("Prefix", "")) and all(tags.get(t["Key"]) == t["Value"] for t in wanted)


def test_retention_expires_the_session_and_its_runs_and_keeps_the_aggregates(client: Any, container: Any) -> None:
    """An admin's retention_days: the trace's tag selects the bucket rule that expires it after the
    (rounded down) period, and nothing sooner; the session, its runs and their verdicts get the same
    DynamoDB TTL; the daily aggregates get none and keep counting the run after it is gone."""
    from tests.api.dispatch_kit import FakeDaemons, configure_vendors, install_daemons

    install_daemons(container, FakeDaemons())
    configure_vendors(client, "anthropic")
    _set_retention(client, 100)          # rounds down to the ladder's 90 days
    _upload(client, "sess-ret")
    record = container.sessions.get_session("acme", "sess-ret")
    bucket = container.config.bucket_name
    tags = {t["Key"]: t["Value"] for t in
            container.s3.get_object_tagging(Bucket=bucket, Key=record.storage.key)["TagSet"]}
    # The local stack's bucket carries infra/eval-runner.json's lifecycle rules, as the deployed one does.
    rules = container.s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    expiring = [(r["ID"], r["Expiration"]["Days"]) for r in rules
                if r["Status"] == "Enabled" and "Expiration" in r and _selects(r["Filter"], record.storage.key, tags)]
    assert expiring == [("Retention90d", 90)]
    expires = _session_expiry(container, "sess-ret")
    assert expires is not None

    run_id = client.post("/sessions/sess-ret/eval-runs", token=MEMBER, json_body={}).json["eval_run_id"]
    run = container.run_store.require("acme", run_id)
    container.run_store.start("acme", run_id, now=run.created_at, outcomes=[])
    finished = container.run_store.finish("acme", run_id, status="succeeded", now=run.created_at,
                                          usage=TokenUsage(input_tokens=100, output_tokens=10),
                                          result=result_for(run_id, 4))
    container.run_lifecycle.finalize(finished)
    day = run.created_at[:10]
    analytics = f"/analytics/scores?from={day}&to={day}&by=user"

    items = container.dynamodb.query(
        TableName=container.config.table_name, KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "TENANT#acme"}})["Items"]
    by_sk = {i["sk"]["S"]: i for i in items}
    content = [sk for sk in by_sk if sk.startswith(("SESSION#sess-ret", f"RUN#{run_id}", f"AGG#RUN#{run_id}"))]
    assert {"SESSION#sess-ret", f"AGG#RUN#{run_id}"} <= set(content) and any(sk.startswith("RUN#") for sk in content)
    assert {sk: int(by_sk[sk].get("expires_at", {"N": "0"})["N"]) for sk in content} == dict.fromkeys(content, expires)
    daily = [sk for sk in by_sk if sk.startswith("AGG#DAY#")]
    assert daily and not [sk for sk in daily if "expires_at" in by_sk[sk]]
    assert client.get(analytics, token=MEMBER).json["series"][0]["points"][0]["runs"] == 1

    # Past the TTL, before DynamoDB gets round to deleting: the run leaves the list, the trend keeps it.
    container.clock = FrozenClock(datetime.fromtimestamp(expires + 1, UTC))
    assert run_id not in [r["eval_run_id"] for r in _list(client).json["items"]]
    assert client.get(analytics, token=MEMBER).json["series"][0]["points"][0]["runs"] == 1


def test_an_expired_run_leaves_the_list_before_dynamodb_deletes_it(client: Any, frozen: Any) -> None:
    past = int((BASE + timedelta(days=2)).timestamp())   # the frozen clock is BASE + 3 days
    _finished(frozen, new_run("evr_gone", expires_at=past), scores=4)
    _finished(frozen, new_run("evr_kept", created_at=BASE + timedelta(hours=1)), scores=4)
    assert [r["eval_run_id"] for r in _list(client).json["items"]] == ["evr_kept"]
    # Aggregates stay: they hold no content.
    assert _aggregate_runs(client) == 2
