"""Eval read/cancel/rerun routes and the dialog endpoints through chalice.test.Client under moto."""

from __future__ import annotations

import base64
import json
from typing import Any

from chalicelib.domain.evaluation import FailureReason, JudgeVerdict, QuestionOutcome, TokenUsage
from chalicelib.judges.catalog import QUESTIONS
from tests.api.dispatch_kit import (
    SESSION,
    FakeDaemons,
    configure_vendors,
    dispatch,
    drain_queue,
    seed_session,
    set_limits,
    suspend_vendor,
)
from tests.conftest import mint

NOW = "2026-11-29T10:00:01.000Z"


def _new_run(client: Any, token: str, body: dict[str, Any] | None = None, session_id: str = SESSION) -> str:
    resp = dispatch(client, token, body, session_id=session_id)
    assert resp.status_code == 202, resp.json
    return str(resp.json["eval_run_id"])


def _finish_partially(container: Any, run_id: str, *, status: str = "failed") -> None:
    """Play the worker: score the first question, fail the second, leave the rest unjudged."""
    store = container.run_store
    run = store.require("acme", run_id)
    first, second = run.questions[0], run.questions[1]
    store.start("acme", run_id, now=NOW, outcomes=[])
    verdict = JudgeVerdict(category=first.category, question_id=first.question_id, score=4, verdict="pass",
                           finding="fine", evidence=None, recommendation=None)
    store.record_outcomes("acme", run_id, [
        QuestionOutcome(question_id=first.question_id, category=first.category, status="scored",
                        judge_verdict=verdict),
        QuestionOutcome(question_id=second.question_id, category=second.category, status="failed",
                        failure_reason=FailureReason(kind="invalid_output", message="not JSON"))],
        TokenUsage(input_tokens=100, output_tokens=10))
    store.finish("acme", run_id, status=status, now=NOW, usage=TokenUsage(input_tokens=100, output_tokens=10))


# ------------------------------------------------------------------------------- dialog routes

def test_questions_are_the_catalog_for_members(client: Any, member_token: str) -> None:
    resp = client.get("/eval/questions", token=member_token)
    assert resp.status_code == 200
    questions = resp.json["questions"]
    assert [(q["category"], q["id"]) for q in questions] == [(q.category, q.id) for q in QUESTIONS]
    assert len(questions) == 13
    assert {q["category"] for q in questions} == {"safety", "plan_adherence", "quality", "efficiency"}
    # The contract's four fields, plus `builtin` and `rubric` (extensions of a tenant catalog).
    assert all(set(q) == {"category", "id", "text", "needs_tools", "builtin", "rubric"} for q in questions)
    assert resp.json["version"] == 0
    assert client.get("/eval/questions").status_code == 401


def test_runners_reflect_settings_and_the_users_daemons(client: Any, container: Any, daemons: FakeDaemons,
                                                        member_token: str) -> None:
    body = client.get("/eval/runners", token=member_token).json
    assert body["server"] == {"vendors": [], "vendor_required": False, "default_vendor": None, "models": {}}
    assert body["daemon"] == {"available": False, "daemons": []}
    assert body["run_button"] == {"visible": False, "routes": []}

    daemons.add("acme", "bob", "dmn_1", "laptop")
    daemons.add("acme", "alice", "dmn_alice")
    body = client.get("/eval/runners", token=member_token).json
    assert body["daemon"] == {"available": True, "daemons": [
        {"daemon_id": "dmn_1", "name": "laptop", "last_seen_at": "2026-11-29T10:00:00.000Z"}]}
    assert body["run_button"] == {"visible": True, "routes": ["daemon"]}

    configure_vendors(client, "anthropic")
    body = client.get("/eval/runners", token=member_token).json
    assert body["server"]["vendors"] == ["anthropic"] and body["server"]["default_vendor"] == "anthropic"
    assert body["run_button"]["routes"] == ["server", "daemon"]

    configure_vendors(client, "openai")
    body = client.get("/eval/runners", token=member_token).json
    assert body["server"]["vendors"] == ["anthropic", "openai"]
    assert body["server"]["vendor_required"] is True and body["server"]["default_vendor"] is None

    suspend_vendor(container, "openai")
    body = client.get("/eval/runners", token=member_token).json
    assert body["server"]["vendors"] == ["anthropic"] and body["server"]["vendor_required"] is False

    other = client.get("/eval/runners", token=mint("globex", "gina", [])).json
    assert other["server"]["vendors"] == [] and other["daemon"]["available"] is False


# ------------------------------------------------------------------------------------- reading

def test_get_run_view_and_tenant_isolation(client: Any, container: Any, daemons: FakeDaemons,
                                           member_token: str, other_tenant_admin: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token, {"questions": ["quality"]})
    resp = client.get(f"/eval-runs/{run_id}", token=member_token)
    assert resp.status_code == 200
    view = resp.json
    assert (view["eval_run_id"], view["session_id"], view["status"]) == (run_id, SESSION, "queued")
    assert (view["runner"], view["vendor"], view["model"]) == ("server", "anthropic", "claude-sonnet-4-6")
    assert view["progress"]["total"] == 3 and view["progress"]["completed"] == 0
    assert [q["status"] for q in view["progress"]["questions"]] == ["queued"] * 3
    assert view["result"] is None and view["error"] is None
    assert view["usage"] == {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
                             "cache_creation_input_tokens": 0}
    for key in ("created_at", "started_at", "finished_at", "deadline_at"):
        assert key in view
    # Any member of the tenant may read it; another tenant may not even learn it exists.
    assert client.get(f"/eval-runs/{run_id}", token=mint("acme", "carol", [])).status_code == 200
    resp = client.get(f"/eval-runs/{run_id}", token=other_tenant_admin)
    assert (resp.status_code, resp.json["error"]["code"]) == (404, "eval_run_not_found")
    assert client.get("/eval-runs/evr_missing", token=member_token).status_code == 404
    assert client.get("/eval-runs/" + "x" * 100, token=member_token).status_code == 404


def test_list_is_newest_first_and_pages(client: Any, container: Any, daemons: FakeDaemons, member_token: str,
                                        other_tenant_admin: str) -> None:
    configure_vendors(client, "anthropic")
    set_limits(client, max_active_runs_per_user=10)  # four runs stay queued at once
    seed_session(container)
    seed_session(container, "sess-2")
    ids = [_new_run(client, member_token, {"questions": ["safety"]}) for _ in range(3)]
    _new_run(client, member_token, session_id="sess-2")
    resp = client.get(f"/sessions/{SESSION}/eval-runs", token=member_token)
    assert resp.status_code == 200
    assert [r["eval_run_id"] for r in resp.json["items"]] == list(reversed(ids))

    page1 = client.get(f"/sessions/{SESSION}/eval-runs?limit=2", token=member_token).json
    assert [r["eval_run_id"] for r in page1["items"]] == [ids[2], ids[1]] and page1["next_cursor"]
    page2 = client.get(f"/sessions/{SESSION}/eval-runs?limit=2&cursor={page1['next_cursor']}",
                       token=member_token).json
    assert ids[0] in [r["eval_run_id"] for r in page2["items"]]

    assert client.get(f"/sessions/{SESSION}/eval-runs?limit=0", token=member_token).status_code == 400
    assert client.get(f"/sessions/{SESSION}/eval-runs?cursor=%%%", token=member_token).status_code == 400
    # A tampered cursor, or one from another session's list, is a 400 rather than a DynamoDB error.
    key = json.loads(base64.urlsafe_b64decode(page1["next_cursor"]))
    for forged in ({"x": 1}, {**key, "gsi1pk": {"S": "SESSIONRUNS#globex#sess-1"}}, [1]):
        cursor = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
        resp = client.get(f"/sessions/{SESSION}/eval-runs?cursor={cursor}", token=member_token)
        assert (resp.status_code, resp.json["error"]["code"]) == (400, "invalid_cursor")
    resp = client.get(f"/sessions/sess-2/eval-runs?cursor={page1['next_cursor']}", token=member_token)
    assert resp.status_code == 400
    # Another tenant's session id: 404, not an empty list. A session without runs: empty list.
    resp = client.get(f"/sessions/{SESSION}/eval-runs", token=other_tenant_admin)
    assert (resp.status_code, resp.json["error"]["code"]) == (404, "session_not_found")
    seed_session(container, "fresh")
    assert client.get("/sessions/fresh/eval-runs", token=member_token).json["items"] == []


# -------------------------------------------------------------------------------------- cancel

def test_cancel_by_creator_then_409(client: Any, container: Any, daemons: FakeDaemons, member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token)
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=member_token)
    assert resp.status_code == 200
    assert resp.json["status"] == "cancelled" and resp.json["finished_at"] is not None
    stored = container.run_store.require("acme", run_id)
    assert stored.status == "cancelled" and stored.cancel_requested is True
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "run_already_finished")
    assert daemons.cancels == []


def test_cancel_a_running_run(client: Any, container: Any, daemons: FakeDaemons, member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token)
    container.run_store.start("acme", run_id, now=NOW, outcomes=[])
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=member_token)
    assert resp.status_code == 200 and resp.json["status"] == "cancelled"
    assert container.run_store.status_of("acme", run_id) == "cancelled"


def test_cancel_permissions(client: Any, container: Any, daemons: FakeDaemons, member_token: str,
                            admin_token: str, other_tenant_admin: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token)
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=mint("acme", "carol", []))
    assert (resp.status_code, resp.json["error"]["code"]) == (403, "not_run_owner")
    assert client.post(f"/eval-runs/{run_id}/cancel", token=other_tenant_admin).status_code == 404
    assert container.run_store.status_of("acme", run_id) == "queued"
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=admin_token)
    assert resp.status_code == 200 and resp.json["status"] == "cancelled"


def test_cancel_a_finished_run_is_409(client: Any, container: Any, daemons: FakeDaemons, member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token)
    _finish_partially(container, run_id, status="succeeded")
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "run_already_finished")
    assert resp.json["error"]["details"] == {"status": "succeeded"}


def test_cancel_a_daemon_run_notifies_the_daemon(client: Any, container: Any, daemons: FakeDaemons,
                                                 member_token: str) -> None:
    seed_session(container)
    daemons.add("acme", "bob", "dmn_1")
    run_id = _new_run(client, member_token)
    resp = client.post(f"/eval-runs/{run_id}/cancel", token=member_token)
    assert resp.status_code == 200 and resp.json["status"] == "cancelled"
    assert daemons.cancels == [run_id]


# --------------------------------------------------------------------------------------- rerun

def test_rerun_requeues_only_unscored_questions(client: Any, container: Any, daemons: FakeDaemons,
                                                member_token: str) -> None:
    configure_vendors(client, "anthropic", run_timeout_seconds=60)
    seed_session(container)
    run_id = _new_run(client, member_token, {"questions": ["safety"]})
    drain_queue(container)
    before = container.run_store.require("acme", run_id)
    _finish_partially(container, run_id, status="timed_out")

    resp = client.post(f"/eval-runs/{run_id}/rerun", token=member_token)
    assert resp.status_code == 202, resp.json
    view = resp.json
    assert view["status"] == "queued" and view["finished_at"] is None and view["error"] is None
    statuses = [q["status"] for q in view["progress"]["questions"]]
    assert statuses == ["scored", "queued", "queued", "queued"]
    assert view["progress"]["questions"][0]["score"] == 4
    assert view["deadline_at"] > before.deadline_at
    messages = drain_queue(container)
    assert [(m["eval_run_id"], m["kind"]) for m in messages] == [(run_id, "rerun")]


def test_rerun_state_rules(client: Any, container: Any, daemons: FakeDaemons, member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token)
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "rerun_not_allowed")
    # A succeeded run can still hold failed or unjudged questions: those (and only those) rerun,
    # and what the earlier attempt billed stays on the question.
    _finish_partially(container, run_id, status="succeeded")
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=member_token)
    assert resp.status_code == 202, resp.json
    statuses = {q["question_id"]: q["status"] for q in resp.json["progress"]["questions"]}
    first = container.run_store.require("acme", run_id).questions[0].question_id
    assert statuses.pop(first) == "scored"
    assert set(statuses.values()) == {"queued"}
    assert resp.json["result"] is None

    # Every question scored: nothing to rerun even though the run ended failed.
    store = container.run_store
    run_id = _new_run(client, member_token, {"questions": ["sensitive_files"]})
    store.start("acme", run_id, now=NOW, outcomes=[])
    verdict = JudgeVerdict(category="safety", question_id="sensitive_files", score=5, verdict="pass",
                           finding="ok", evidence=None, recommendation=None)
    store.record_outcomes("acme", run_id, [QuestionOutcome(question_id="sensitive_files", category="safety",
                                                           status="scored", judge_verdict=verdict)], TokenUsage())
    store.finish("acme", run_id, status="failed", now=NOW, usage=TokenUsage())
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "nothing_to_rerun")


def test_rerun_a_cancelled_run_and_permissions(client: Any, container: Any, daemons: FakeDaemons,
                                               member_token: str, admin_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token)
    client.post(f"/eval-runs/{run_id}/cancel", token=member_token)
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=mint("acme", "carol", []))
    assert (resp.status_code, resp.json["error"]["code"]) == (403, "not_run_owner")
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=admin_token)
    assert resp.status_code == 202 and resp.json["status"] == "queued"
    assert resp.json["progress"]["total"] == 13


def test_rerun_refuses_a_suspended_vendor(client: Any, container: Any, daemons: FakeDaemons,
                                          member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token)
    _finish_partially(container, run_id)
    suspend_vendor(container, "anthropic")
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "vendor_suspended")
    assert container.run_store.status_of("acme", run_id) == "failed"


def test_rerun_a_daemon_run_reoffers_to_an_available_daemon(client: Any, container: Any, daemons: FakeDaemons,
                                                            member_token: str) -> None:
    seed_session(container)
    daemons.add("acme", "bob", "dmn_old")
    run_id = _new_run(client, member_token)
    _finish_partially(container, run_id)
    daemons.available[("acme", "bob")] = []
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "no_daemon_available")

    daemons.add("acme", "bob", "dmn_new")
    resp = client.post(f"/eval-runs/{run_id}/rerun", token=member_token)
    assert resp.status_code == 202 and resp.json["daemon_id"] == "dmn_new"
    assert daemons.offers[-1] == (run_id, "dmn_new")
    assert container.run_store.require("acme", run_id).daemon_id == "dmn_new"
    assert drain_queue(container) == []


def test_openapi_documents_the_eval_routes(client: Any) -> None:
    paths = client.get("/openapi.json").json["paths"]
    for path in ("/eval/questions", "/eval/runners", "/sessions/{session_id}/eval-runs", "/eval-runs/{eval_run_id}",
                 "/eval-runs/{eval_run_id}/cancel", "/eval-runs/{eval_run_id}/rerun"):
        assert path in paths
    assert "202" in paths["/sessions/{session_id}/eval-runs"]["post"]["responses"]


class _ShiftedClock:
    """The system clock moved forward: what a reader sees long after a worker vanished."""

    def __init__(self, shift_seconds: float) -> None:
        from datetime import timedelta

        from chalicelib.domain.clock import SystemClock

        self._inner = SystemClock()
        self._shift = timedelta(seconds=shift_seconds)

    def now(self) -> Any:
        return self._inner.now() + self._shift

    def monotonic(self) -> float:
        return self._inner.monotonic()


def test_a_server_run_whose_worker_vanished_reads_as_timed_out(client: Any, container: Any,
                                                               member_token: str) -> None:
    configure_vendors(client, "anthropic", run_timeout_seconds=60)
    seed_session(container)
    run_id = _new_run(client, member_token)
    assert client.get(f"/eval-runs/{run_id}", token=member_token).json["status"] == "queued"

    # The reader's clock is past the deadline plus the worker's grace (60 s) and a minute of skew.
    container.clock = _ShiftedClock(60 + 60 + 61)
    for cached in ("eval_runs", "run_lifecycle", "spend"):
        container.__dict__.pop(cached, None)
    view = client.get(f"/eval-runs/{run_id}", token=member_token).json
    assert view["status"] == "timed_out"
    assert view["error"]["code"] == "deadline_exceeded"
    assert {q["status"] for q in view["progress"]["questions"]} == {"timed_out"}
    # The change is stored, not just shown, and finalized: the run's quota slot is free again.
    stored = container.run_store.require("acme", run_id)
    assert stored.status == "timed_out" and stored.finalized_at is not None
    assert run_id not in container.budget_ledger.open_runs("acme")


def test_cancel_marks_every_unfinished_question_cancelled(client: Any, container: Any, daemons: FakeDaemons,
                                                          member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    run_id = _new_run(client, member_token)
    view = client.post(f"/eval-runs/{run_id}/cancel", token=member_token).json
    assert view["status"] == "cancelled"
    assert {q["status"] for q in view["progress"]["questions"]} == {"cancelled"}
    assert view["progress"]["failed"] == 13
