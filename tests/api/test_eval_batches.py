"""Eval batches through chalice.test.Client under moto: explicit ids and filters, the documented cap,
progress counts, runs that wait for an active-run slot and start when one frees, cancel, idempotent
repeats, and bad input (nothing stored).

The active-run quota is the real spend ledger's (set through the limits API); what is tested is that
batch runs wait for it instead of failing.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from tests.api.dispatch_kit import configure_vendors, drain_queue
from tests.api.rules_kit import create_rule, process_uploads, runs_of, upload
from tests.conftest import mint

T = TypeVar("T")
ADMIN = mint("acme", "alice", ["admin"])
BOB = mint("acme", "bob", [])
CAROL = mint("acme", "carol", [])


@pytest.fixture
def sessions(client: Any) -> list[str]:
    configure_vendors(client, "anthropic")
    ids = [f"s{i}" for i in range(5)]
    for i, session_id in enumerate(ids):
        upload(client, session_id, repository="github.com/acme/web" if i % 2 == 0 else "github.com/globex/api")
    return ids


def quota(client: Any, limit: int) -> None:
    """The tenant's active-run quota, set through the real limits (the spend ledger enforces it)."""
    resp = client.put("/admin/settings/eval-runner/limits", token=ADMIN,
                      json_body={"max_active_runs_per_tenant": limit, "max_active_runs_per_user": 1000})
    assert resp.status_code == 200, resp.json


def create(client: Any, body: dict[str, Any], token: str = BOB, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else None
    return client.post("/eval-batches", token=token, json_body=body, headers=headers)


def accept(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    resp = create(client, body)
    assert resp.status_code == 202, resp.json
    return dict(resp.json)


def batch(client: Any, batch_id: str, token: str = BOB) -> dict[str, Any]:
    resp = client.get(f"/eval-batches/{batch_id}", token=token)
    assert resp.status_code == 200, resp.json
    return dict(resp.json)


def test_explicit_sessions_get_one_run_each(client: Any, container: Any, sessions: list[str]) -> None:
    resp = create(client, {"session_ids": sessions[:3], "mode": "now", "questions": ["safety"]})
    assert resp.status_code == 202, resp.json
    accepted = resp.json
    assert (accepted["runs"], accepted["started"], accepted["status"], accepted["mode"]) == (3, 3, "running", "now")
    assert resp.headers["Location"] == f"/eval-batches/{accepted['batch_id']}"

    view = batch(client, accepted["batch_id"])
    assert view["counts"] == {"queued": 3} and view["delayed"] == 0 and view["status"] == "running"
    assert view["session_ids"] == sessions[:3] and view["questions"] == 4 and view["vendor"] == "anthropic"
    for run_id in view["run_ids"]:
        run = client.get(f"/eval-runs/{run_id}", token=BOB).json
        assert (run["batch_id"], run["trigger"], run["mode"], run["created_by"]) == (
            accepted["batch_id"], {"kind": "batch", "batch_id": accepted["batch_id"]}, "now", "bob")
    assert sorted(j["eval_run_id"] for j in drain_queue(container)) == sorted(view["run_ids"])


def test_a_filter_selects_matching_sessions(client: Any, container: Any, sessions: list[str]) -> None:
    resp = create(client, {"filter": {"repository": "github.com/acme/*"}, "mode": "batch"})
    assert resp.status_code == 202, resp.json
    view = batch(client, resp.json["batch_id"])
    assert sorted(view["session_ids"]) == ["s0", "s2", "s4"] and view["mode"] == "batch"
    assert {j["mode"] for j in drain_queue(container)} == {"batch"}


def test_a_filter_over_the_cap_is_refused_with_the_count(client: Any, container: Any, sessions: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("chalicelib.services.eval_batches.MAX_BATCH_RUNS", 3)
    resp = create(client, {"filter": {}, "mode": "now"})
    assert resp.status_code == 400, resp.json
    error = resp.json["error"]
    assert error["code"] == "batch_too_large"
    assert error["details"] == {"would_create": 5, "exact": True, "max_runs": 3}
    assert client.get("/eval-batches", token=BOB).json["items"] == []
    assert drain_queue(container) == []


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"session_ids": ["s0"], "filter": {}, "mode": "now"}, 400, "validation_failed"),
    ({"mode": "now"}, 400, "validation_failed"),
    ({"session_ids": ["s0"]}, 400, "validation_failed"),
    ({"session_ids": ["s0"], "mode": "now", "runner": "daemon"}, 400, "validation_failed"),
    ({"session_ids": [], "mode": "now"}, 400, "validation_failed"),
    ({"session_ids": ["s0"], "mode": "now", "questions": ["nope"]}, 400, "unknown_question"),
    ({"session_ids": ["s0"], "mode": "now", "threshold": -5}, 400, "threshold_out_of_range"),
    ({"session_ids": ["s0", "../etc"], "mode": "now"}, 400, "invalid_session_id"),
    ({"session_ids": ["s0", "ghost"], "mode": "now"}, 404, "session_not_found"),
    ({"filter": {"repository": "nothing/*"}, "mode": "now"}, 400, "no_sessions_matched"),
    ({"filter": {"repository": "[x"}, "mode": "now"}, 400, "validation_failed"),
    ({"session_ids": ["s0"], "mode": "now", "vendor": "openai"}, 409, "vendor_not_enabled"),
])
def test_bad_batches_store_nothing(client: Any, container: Any, sessions: list[str], body: dict[str, Any],
                                   status: int, code: str) -> None:
    resp = create(client, body)
    assert (resp.status_code, resp.json["error"]["code"]) == (status, code), resp.json
    assert client.get("/eval-batches", token=BOB).json["items"] == []
    assert drain_queue(container) == []


def test_runs_over_the_quota_wait_and_start_when_a_slot_frees(client: Any, container: Any,
                                                              sessions: list[str]) -> None:
    quota(client, limit=2)
    accepted = accept(client, {"session_ids": sessions, "mode": "now"})
    assert (accepted["runs"], accepted["started"]) == (5, 2)
    view = batch(client, accepted["batch_id"])
    assert view["counts"] == {"queued": 5} and view["delayed"] == 3
    started = [j["eval_run_id"] for j in drain_queue(container)]
    assert len(started) == 2
    waiting = [r for r in view["run_ids"] if r not in started]
    assert all(client.get(f"/eval-runs/{r}", token=BOB).json["delayed"] for r in waiting)

    # A run ends (here: cancelled) → its slot frees → the oldest waiting run starts.
    assert client.post(f"/eval-runs/{started[0]}/cancel", token=BOB).status_code == 200
    (next_job,) = drain_queue(container)
    assert next_job["eval_run_id"] in waiting
    run = client.get(f"/eval-runs/{next_job['eval_run_id']}", token=BOB).json
    assert run["delayed"] is False and run["status"] == "queued"
    view = batch(client, accepted["batch_id"])
    assert view["counts"] == {"queued": 4, "cancelled": 1} and view["delayed"] == 2


def test_cancel_ends_every_run_of_the_batch(client: Any, container: Any, sessions: list[str]) -> None:
    quota(client, limit=2)
    accepted = accept(client, {"session_ids": sessions, "mode": "now"})
    drain_queue(container)
    assert client.post(f"/eval-batches/{accepted['batch_id']}/cancel", token=CAROL).status_code == 403
    resp = client.post(f"/eval-batches/{accepted['batch_id']}/cancel", token=BOB)
    assert resp.status_code == 200, resp.json
    assert resp.json["status"] == "cancelled" and resp.json["counts"] == {"cancelled": 5}
    assert resp.json["finished_at"] is not None
    # Nothing that waited was started by the slots the cancels freed.
    assert drain_queue(container) == []
    assert container.automation_store.waiting("acme", limit=10) == []


def test_a_batch_is_finished_only_once_its_runs_costs_are_settled(client: Any, container: Any,
                                                                   sessions: list[str]) -> None:
    from chalicelib.domain.evaluation import TokenUsage

    accepted = accept(client, {"session_ids": sessions[:1], "mode": "now"})
    drain_queue(container)
    (run_id,) = batch(client, accepted["batch_id"])["run_ids"]
    store = container.run_store
    store.start("acme", run_id, now="2026-12-01T10:00:00.000Z", outcomes=[])
    ended = store.finish("acme", run_id, status="succeeded", now="2026-12-01T10:00:05.000Z",
                         usage=TokenUsage(input_tokens=100_000, output_tokens=1_000))
    # The worker's finish write landed, its finalization (the settled cost) not yet.
    view = batch(client, accepted["batch_id"])
    assert (view["status"], view["counts"], view["cost"]["usd"]) == ("running", {"running": 1}, None)

    container.run_lifecycle.finalize(ended)
    view = batch(client, accepted["batch_id"])
    assert (view["status"], view["counts"]) == ("finished", {"succeeded": 1})
    settled = client.get(f"/eval-runs/{run_id}", token=BOB).json["cost"]["usd"]
    assert settled > 0 and view["cost"]["usd"] == settled


def test_an_idempotent_repeat_returns_the_same_batch(client: Any, container: Any, sessions: list[str]) -> None:
    first = create(client, {"session_ids": sessions[:2], "mode": "now"}, key="bulk-1")
    again = create(client, {"session_ids": sessions[:2], "mode": "now"}, key="bulk-1")
    assert first.status_code == again.status_code == 202
    assert again.json["batch_id"] == first.json["batch_id"] and again.json["runs"] == 2
    assert len(client.get("/eval-batches", token=BOB).json["items"]) == 1
    assert len(drain_queue(container)) == 2


def test_batches_are_per_tenant(client: Any, container: Any, sessions: list[str]) -> None:
    batch_id = create(client, {"session_ids": sessions[:1], "mode": "now"}).json["batch_id"]
    other = mint("globex", "eve", ["admin"])
    assert client.get(f"/eval-batches/{batch_id}", token=other).status_code == 404
    assert client.post(f"/eval-batches/{batch_id}/cancel", token=other).status_code == 404
    assert client.get("/eval-batches/ebt_nope", token=BOB).status_code == 404


def test_the_poller_starts_waiting_runs_once_slots_allow(client: Any, container: Any, sessions: list[str]) -> None:
    from chalicelib.worker.automation_poller import poll_automation

    quota(client, limit=2)
    accepted = accept(client, {"session_ids": sessions[:3], "mode": "now"})
    assert accepted["started"] == 2
    drain_queue(container)
    quota(client, limit=3)  # an admin raised the quota: no run ended, the poller notices
    report = poll_automation()
    assert report["waiting"]["started"] == 1
    assert len(drain_queue(container)) == 1
    assert batch(client, accepted["batch_id"])["delayed"] == 0


def test_a_run_that_never_gets_a_slot_ends_after_24_hours(client: Any, container: Any, sessions: list[str]) -> None:
    from chalicelib.worker.automation_poller import poll_automation

    quota(client, limit=1)
    # A manual run holds the tenant's only slot (it stays queued: nothing works the queue here).
    held = client.post(f"/sessions/{sessions[1]}/eval-runs", token=CAROL, json_body={})
    assert held.status_code == 202, held.json
    accepted = accept(client, {"session_ids": sessions[:1], "mode": "now"})
    (run_id,) = batch(client, accepted["batch_id"])["run_ids"]
    container.run_store.set_fields("acme", run_id, {"deadline_at": "2026-01-01T00:00:00.000Z"},
                                   when_status=("queued",))
    assert poll_automation()["waiting"]["expired"] == 1
    view = client.get(f"/eval-runs/{run_id}", token=BOB).json
    assert view["status"] == "timed_out" and view["error"]["code"] == "no_slot_in_time"
    assert container.automation_store.waiting("acme", limit=5) == []


def test_the_estimate_says_what_a_batch_would_create_and_stores_nothing(client: Any, container: Any,
                                                                        sessions: list[str]) -> None:
    resp = client.post("/eval-batches/estimate", token=BOB,
                       json_body={"filter": {"repository": "github.com/acme/*"}, "mode": "batch",
                                  "questions": ["safety"]})
    assert resp.status_code == 200, resp.json
    assert resp.json["runs"] == 3 and sorted(resp.json["session_ids"]) == ["s0", "s2", "s4"]
    assert (resp.json["mode"], resp.json["vendor"], resp.json["questions"]) == ("batch", "anthropic", 4)
    assert client.get("/eval-batches", token=BOB).json["items"] == []
    assert drain_queue(container) == []
    bad = client.post("/eval-batches/estimate", token=BOB, json_body={"mode": "now"})
    assert bad.status_code == 400


def limits(client: Any, **body: Any) -> None:
    resp = client.put("/admin/settings/eval-runner/limits", token=ADMIN, json_body=body)
    assert resp.status_code == 200, resp.json


def test_a_batch_the_budget_cannot_take_is_refused_whole(client: Any, container: Any, sessions: list[str]) -> None:
    estimate = client.post("/eval-batches/estimate", token=BOB, json_body={"session_ids": sessions, "mode": "now"})
    assert estimate.status_code == 200 and estimate.json["within_limits"] is True
    low, high = estimate.json["estimate_usd_low"], estimate.json["estimate_usd_high"]
    assert 0 < low < high
    limits(client, user_daily_usd=round(high / 10, 4), tenant_monthly_usd=None)  # not even one run's bound
    blocked = client.post("/eval-batches/estimate", token=BOB, json_body={"session_ids": sessions, "mode": "now"})
    assert (blocked.json["within_limits"], blocked.json["blocked_by"]) == (False, "budget_exceeded")
    resp = create(client, {"session_ids": sessions, "mode": "now"})
    assert resp.status_code == 402, resp.json
    assert resp.json["error"]["code"] == "budget_exceeded" and resp.json["error"]["details"]["budget"] == "user_daily"
    assert "One evaluation can cost up to" in resp.json["error"]["message"]
    assert client.get("/eval-batches", token=BOB).json["items"] == []
    assert drain_queue(container) == []


def test_runs_wait_for_reservations_to_settle_instead_of_failing(client: Any, container: Any,
                                                                 sessions: list[str]) -> None:
    one = client.post("/eval-batches/estimate", token=BOB,
                      json_body={"session_ids": sessions[:1], "mode": "now"}).json["estimate_usd_high"]
    # The budget holds one run's reservation at a time: the others wait for it, they do not fail.
    limits(client, user_daily_usd=round(one * 1.5, 4), tenant_monthly_usd=None, max_active_runs_per_user=10,
           max_active_runs_per_tenant=10)
    accepted = accept(client, {"session_ids": sessions[:3], "mode": "now"})
    assert accepted["started"] == 1
    (first,) = drain_queue(container)
    assert batch(client, accepted["batch_id"])["delayed"] == 2
    assert client.post(f"/eval-runs/{first['eval_run_id']}/cancel", token=BOB).status_code == 200
    (second,) = drain_queue(container)
    assert second["eval_run_id"] != first["eval_run_id"]
    view = batch(client, accepted["batch_id"])
    assert view["delayed"] == 1 and view["counts"].get("failed", 0) == 0


def test_a_rule_does_not_create_a_run_its_budget_cannot_take(client: Any, container: Any,
                                                            sessions: list[str]) -> None:
    rule = create_rule(client)
    limits(client, user_daily_usd=0.0001, tenant_monthly_usd=None)
    upload(client, "over-budget")
    process_uploads(container)
    assert runs_of(client, "over-budget") == []
    stats = client.get(f"/admin/eval-rules/{rule['rule_id']}", token=ADMIN).json["stats"]
    assert stats["skipped"] == {"budget_exceeded": 1} and stats["runs"] == 0
