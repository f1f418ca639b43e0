"""The history indexes under moto: the run store keeps them in step, and every filter is served by
an index query (never a scan) that returns exactly the matching runs, newest first, page by page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.adapters.run_index import DynamoRunIndex, IndexPage, plan_query
from chalicelib.adapters.run_store import DynamoRunStore
from chalicelib.domain.clock import iso
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.history import RunFilters, RunListQuery, parse_run_filters
from chalicelib.domain.runs import EvalRun
from tests.history_support import BASE, new_run, store_run

NOW_EPOCH = int((BASE + timedelta(days=30)).timestamp())


class CountingDynamo:
    """The real client, with a tally of operations (asserts: no Scan, bounded reads)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.ops: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if callable(attr):
            def call(*args: Any, **kwargs: Any) -> Any:
                self.ops.append(name)
                return attr(*args, **kwargs)
            return call
        return attr


@pytest.fixture
def store(container: Any) -> DynamoRunStore:
    return DynamoRunStore(container.dynamodb, container.config.table_name)


@pytest.fixture
def counting(container: Any) -> CountingDynamo:
    return CountingDynamo(container.dynamodb)


@pytest.fixture
def index(container: Any, counting: CountingDynamo) -> DynamoRunIndex:
    return DynamoRunIndex(counting, container.config.table_name)


def _seed(store: DynamoRunStore) -> list[EvalRun]:
    """24 runs, one an hour: users alternate, repositories cycle through three, every fourth is a
    daemon run, scores cycle 1..5, every sixth failed without a result, two still queued."""
    runs = []
    repos = ["github.com/acme/web", "github.com/acme/api", None]
    for i in range(24):
        daemon = i % 4 == 3
        run = new_run(f"evr_{i:02d}", user="bob" if i % 2 else "alice", created_at=BASE + timedelta(hours=i),
                      runner="daemon" if daemon else "server", vendor="openai" if i % 5 == 0 else "anthropic",
                      repository=repos[i % 3])
        if i in (22, 23):
            runs.append(store_run(store, run, finish=None))
        elif i % 6 == 5:
            runs.append(store_run(store, run, finish="failed", scores=None))
        else:
            runs.append(store_run(store, run, scores=i % 5 + 1))
    return runs


def _all_pages(index: DynamoRunIndex, filters: RunFilters, limit: int) -> tuple[list[str], list[IndexPage]]:
    ids: list[str] = []
    pages = []
    before = None
    while True:
        page = index.page("acme", filters, limit=limit, before=before, now_epoch=NOW_EPOCH)
        pages.append(page)
        ids += [s.eval_run_id for s in page.items]
        if page.next_position is None:
            return ids, pages
        before = page.next_position


def _expected(runs: list[EvalRun], keep: Any) -> list[str]:
    return [r.eval_run_id for r in sorted(runs, key=lambda r: r.created_at, reverse=True) if keep(r)]


def _filters(**params: str) -> RunFilters:
    return parse_run_filters(RunListQuery.model_validate(params))


CASES: dict[str, tuple[dict[str, str], Any]] = {
    "everything": ({}, lambda r: True),
    "one user": ({"user": "bob"}, lambda r: r.created_by == "bob"),
    "a repository": ({"repository": "github.com/acme/api"}, lambda r: r.repository == "github.com/acme/api"),
    "failed or queued": ({"status": "failed,queued"}, lambda r: r.status in ("failed", "queued")),
    "succeeded": ({"status": "succeeded"}, lambda r: r.status == "succeeded"),
    "daemon runs": ({"runner": "daemon"}, lambda r: r.runner == "daemon"),
    "openai": ({"vendor": "openai"}, lambda r: r.vendor == "openai"),
    "score 4 and up": ({"min_score": "4"}, lambda r: r.result is not None and r.result.overall_score >= 4),
    "score 2-3": ({"min_score": "2", "max_score": "3"},
                  lambda r: r.result is not None and 2 <= r.result.overall_score <= 3),
    "manual trigger": ({"trigger": "manual"}, lambda r: True),
    "rule trigger": ({"trigger": "rule"}, lambda r: False),
    "date range": ({"from": iso(BASE + timedelta(hours=5)), "to": iso(BASE + timedelta(hours=12))},
                   lambda r: iso(BASE + timedelta(hours=5)) <= r.created_at < iso(BASE + timedelta(hours=12))),
    "user + status + repository": ({"user": "alice", "status": "succeeded", "repository": "github.com/acme/web"},
                                   lambda r: r.created_by == "alice" and r.status == "succeeded"
                                   and r.repository == "github.com/acme/web"),
    "user + score + day": ({"user": "bob", "min_score": "3", "to": "2026-11-01"},
                           lambda r: r.created_by == "bob" and r.result is not None
                           and r.result.overall_score >= 3 and r.created_at < "2026-11-02"),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("limit", [1, 5, 50])
def test_every_filter_pages_through_exactly_the_matching_runs(store: DynamoRunStore, index: DynamoRunIndex,
                                                              counting: CountingDynamo, name: str, limit: int) -> None:
    runs = _seed(store)
    params, keep = CASES[name]
    counting.ops.clear()
    ids, pages = _all_pages(index, _filters(**params), limit)
    assert ids == _expected(runs, keep)
    assert all(len(p.items) <= limit for p in pages)
    assert set(counting.ops) <= {"query"}, counting.ops


def test_a_single_dimension_page_reads_about_limit_entries(store: DynamoRunStore, index: DynamoRunIndex) -> None:
    _seed(store)
    for params in ({}, {"user": "bob"}, {"repository": "github.com/acme/web"}, {"status": "succeeded"}):
        page = index.page("acme", _filters(**params), limit=5, before=None, now_epoch=NOW_EPOCH)
        assert len(page.items) == 5
        assert page.stats.items_read <= 6, (params, page.stats)
        assert page.stats.partitions == 1


def test_the_most_selective_index_serves_a_combination() -> None:
    assert plan_query("acme", _filters(user="bob", status="succeeded")).dimension.index == "gsi3"
    assert plan_query("acme", _filters(repository="r", user="bob")).dimension.index == "gsi4"
    assert plan_query("acme", _filters(status="failed")).dimension.index == "gsi5"
    assert plan_query("acme", _filters(runner="server")).partitions == (
        "RUNS#acme#route#server#anthropic", "RUNS#acme#route#server#openai", "RUNS#acme#route#server#-")
    assert len(plan_query("acme", _filters(min_score="2")).partitions) == 4
    assert plan_query("acme", _filters()).partitions == ("RUNS#acme",)


def test_a_read_budget_cuts_a_sparse_page_short_with_a_position(store: DynamoRunStore, index: DynamoRunIndex) -> None:
    runs = _seed(store)
    filters = _filters(status="succeeded", runner="daemon")   # served by the route index, status checked
    page = index.page("acme", filters, limit=50, before=None, now_epoch=NOW_EPOCH, read_budget=3)
    assert page.stats.items_read >= 3 and page.next_position is not None
    rest, _ = _all_pages(index, filters, 50)
    assert rest == _expected(runs, lambda r: r.status == "succeeded" and r.runner == "daemon")


def test_status_and_score_indexes_follow_the_run(store: DynamoRunStore, index: DynamoRunIndex) -> None:
    run = store_run(store, new_run("evr_x"), finish=None)
    assert [s.eval_run_id for s in index.page("acme", _filters(status="queued"), limit=5, before=None,
                                              now_epoch=NOW_EPOCH).items] == ["evr_x"]
    store.start("acme", "evr_x", now=run.created_at, outcomes=[])
    from tests.history_support import result_for
    store.finish("acme", "evr_x", status="succeeded", now=run.created_at, usage=TokenUsage(),
                 result=result_for("evr_x", 5))
    assert index.page("acme", _filters(status="queued"), limit=5, before=None, now_epoch=NOW_EPOCH).items == []
    found = index.page("acme", _filters(min_score="5"), limit=5, before=None, now_epoch=NOW_EPOCH).items
    assert [(s.eval_run_id, s.status, s.overall_score) for s in found] == [("evr_x", "succeeded", 5)]
    assert found[0].category_scores == {"safety": 5, "plan_adherence": 5, "quality": 5, "efficiency": 5}
    store.commit_finalization(store.require("acme", "evr_x"), now=run.created_at, fields={})
    finished = store.require("acme", "evr_x")
    store.reopen_for_rerun("acme", "evr_x", deadline_at=finished.deadline_at, outcomes=[],
                           expected_version=finished.version)
    assert index.page("acme", _filters(min_score="0"), limit=5, before=None, now_epoch=NOW_EPOCH).items == []
    assert [s.status for s in index.page("acme", _filters(), limit=5, before=None, now_epoch=NOW_EPOCH).items] == [
        "queued"]


def test_a_run_past_its_retention_is_not_listed(store: DynamoRunStore, index: DynamoRunIndex) -> None:
    store_run(store, new_run("evr_old", expires_at=NOW_EPOCH - 1))
    store_run(store, new_run("evr_new", created_at=BASE + timedelta(hours=1), expires_at=NOW_EPOCH + 3600))
    assert [s.eval_run_id for s in index.page("acme", _filters(), limit=5, before=None,
                                              now_epoch=NOW_EPOCH).items] == ["evr_new"]


def test_tenants_and_long_repositories_stay_apart(store: DynamoRunStore, index: DynamoRunIndex) -> None:
    long_repo = "github.com/acme/" + "x" * 2000
    store_run(store, new_run("evr_a", repository=long_repo))
    store_run(store, new_run("evr_b", tenant="globex", repository=long_repo))
    found = index.page("acme", _filters(repository=long_repo), limit=5, before=None, now_epoch=NOW_EPOCH).items
    assert [(s.eval_run_id, s.repository) for s in found] == [("evr_a", long_repo)]


class AutomatedRun(EvalRun):
    """The fields the automation feature adds to runs (CONTRACT "Online and bulk evaluation")."""

    trigger: dict[str, Any] = {"kind": "manual"}
    batch_id: str | None = None


def test_summary_carries_what_the_list_shows(store: DynamoRunStore, index: DynamoRunIndex) -> None:
    run = AutomatedRun.model_validate({**new_run("evr_s").model_dump(), "trigger": {"kind": "rule", "rule_id": "r1"},
                                       "batch_id": "evb_1"})
    store_run(store, run, scores=2)
    (summary,) = index.page("acme", _filters(batch_id="evb_1"), limit=5, before=None, now_epoch=NOW_EPOCH).items
    assert summary.model_dump() == {
        "eval_run_id": "evr_s", "session_id": "sess-1", "status": "succeeded", "runner": "server",
        "vendor": "anthropic", "model": "claude-sonnet-4-6", "created_by": "bob", "repository": "github.com/acme/web",
        "trigger": {"kind": "rule", "rule_id": "r1"}, "batch_id": "evb_1", "created_at": "2026-11-01T09:00:00.000Z",
        "finished_at": "2026-11-01T09:00:00.000Z", "trial": False, "overall_score": 2,
        "category_scores": {"safety": 2, "plan_adherence": 2, "quality": 2, "efficiency": 2}, "cost": None,
        "error": None}
    assert [s.eval_run_id for s in index.page("acme", _filters(trigger="rule"), limit=5, before=None,
                                              now_epoch=NOW_EPOCH).items] == ["evr_s"]
