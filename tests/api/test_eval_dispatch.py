"""POST /sessions/{id}/eval-runs through chalice.test.Client under moto: dialog rules, the stored run,
one SQS message per run, idempotent repeats, selection errors, tenant isolation and hand-off failure.

The shared helpers (FakeDaemons, seeding, dispatch) live in tests/api/dispatch_kit.py; the `daemons`
fixture in tests/api/conftest.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.clock import parse_iso
from tests.api.dispatch_kit import (
    SESSION,
    FakeDaemons,
    configure_vendors,
    dispatch,
    drain_queue,
    seed_session,
    suspend_vendor,
)
from tests.conftest import mint

# -------------------------------------------------------------------------------------- tests

def test_one_vendor_dispatches_implicitly_and_stores_the_run(client: Any, container: Any, daemons: FakeDaemons,
                                                             member_token: str) -> None:
    configure_vendors(client, "anthropic", run_timeout_seconds=120)
    seed_session(container)
    resp = dispatch(client, member_token, {"skip": ["efficiency"], "threshold": 5000, "chain": True})
    assert resp.status_code == 202, resp.json
    body = resp.json
    assert body["status"] == "queued" and body["runner"] == "server"
    assert (body["vendor"], body["model"]) == ("anthropic", "claude-sonnet-4-6")
    assert body["questions"] == 10
    assert resp.headers["Location"] == f"/eval-runs/{body['eval_run_id']}"

    run = container.run_store.require("acme", body["eval_run_id"])
    assert (run.session_id, run.created_by, run.status, run.runner) == (SESSION, "bob", "queued", "server")
    assert (run.threshold, run.chain, run.run_timeout_seconds) == (5000, True, 120)
    assert [q.question_id for q in run.questions][:2] == ["sensitive_files", "destructive_commands"]
    assert all(q.category != "efficiency" for q in run.questions)
    assert (parse_iso(run.deadline_at) - parse_iso(run.created_at)).total_seconds() == 120
    assert body["deadline_at"] == run.deadline_at

    messages = drain_queue(container)
    assert len(messages) == 1
    assert messages[0]["tenant"] == "acme" and messages[0]["eval_run_id"] == run.eval_run_id
    assert messages[0]["kind"] == "run"
    assert daemons.offers == []


def test_default_selection_is_all_13_questions(client: Any, container: Any, daemons: FakeDaemons,
                                               member_token: str) -> None:
    configure_vendors(client, "openai")
    seed_session(container)
    body = dispatch(client, member_token).json
    run = container.run_store.require("acme", body["eval_run_id"])
    assert len(run.questions) == 13 and run.threshold == 2000 and run.chain is False
    assert (parse_iso(run.deadline_at) - parse_iso(run.created_at)).total_seconds() == 300


def test_an_empty_body_is_an_empty_request(client: Any, container: Any, daemons: FakeDaemons,
                                           member_token: str) -> None:
    configure_vendors(client, "openai")
    seed_session(container)
    resp = client.post(f"/sessions/{SESSION}/eval-runs", token=member_token)
    assert resp.status_code == 202, resp.json


def test_both_vendors_require_vendor(client: Any, container: Any, daemons: FakeDaemons, member_token: str) -> None:
    configure_vendors(client, "anthropic", "openai")
    seed_session(container)
    resp = dispatch(client, member_token)
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "vendor_required"
    assert resp.json["error"]["details"]["choices"] == ["anthropic", "openai"]
    assert drain_queue(container) == []

    resp = dispatch(client, member_token, {"vendor": "openai"})
    assert resp.status_code == 202 and resp.json["vendor"] == "openai" and resp.json["model"] == "gpt-4o"


def test_vendor_not_enabled_and_suspended_are_409(client: Any, container: Any, daemons: FakeDaemons,
                                                  member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    resp = dispatch(client, member_token, {"vendor": "openai"})
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "vendor_not_enabled")
    suspend_vendor(container, "anthropic")
    resp = dispatch(client, member_token, {"vendor": "anthropic"})
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "vendor_suspended")
    assert "admin must replace the key" in resp.json["error"]["message"]
    resp = dispatch(client, member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "vendor_suspended")
    assert drain_queue(container) == []


def test_no_vendor_routes_to_the_users_daemon(client: Any, container: Any, daemons: FakeDaemons,
                                              member_token: str) -> None:
    seed_session(container)
    resp = dispatch(client, member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "no_runner_available")
    daemons.add("acme", "bob", "dmn_new", "desktop")
    daemons.add("acme", "bob", "dmn_old", "laptop")
    daemons.add("acme", "alice", "dmn_alice")
    resp = dispatch(client, member_token, {"questions": ["quality"]})
    assert resp.status_code == 202, resp.json
    body = resp.json
    assert (body["runner"], body["vendor"], body["model"], body["daemon_id"]) == ("daemon", None, None, "dmn_new")
    run = container.run_store.require("acme", body["eval_run_id"])
    assert run.runner == "daemon" and run.daemon_id == "dmn_new" and len(run.questions) == 3
    assert daemons.offers == [(run.eval_run_id, "dmn_new")]
    assert drain_queue(container) == []


def test_explicit_daemon_runner(client: Any, container: Any, daemons: FakeDaemons, member_token: str) -> None:
    configure_vendors(client, "anthropic", "openai")
    seed_session(container)
    resp = dispatch(client, member_token, {"runner": "daemon"})
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "no_daemon_available")
    daemons.add("acme", "bob", "dmn_1")
    resp = dispatch(client, member_token, {"runner": "daemon"})
    assert resp.status_code == 202 and resp.json["runner"] == "daemon"
    resp = dispatch(client, member_token, {"runner": "server"})
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "vendor_required")


def test_idempotency_key_returns_the_same_run_and_enqueues_once(client: Any, container: Any, daemons: FakeDaemons,
                                                                member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    first = dispatch(client, member_token, {"questions": ["safety"]}, key="req-7f3a")
    again = dispatch(client, member_token, {"questions": ["safety"]}, key="req-7f3a")
    assert first.status_code == again.status_code == 202
    assert again.json == first.json
    other = dispatch(client, member_token, {"questions": ["safety"]}, key="req-other")
    assert other.json["eval_run_id"] != first.json["eval_run_id"]
    # The key is per user: another user's identical key is a different request.
    carol = dispatch(client, mint("acme", "carol", []), {"questions": ["safety"]}, key="req-7f3a")
    assert carol.json["eval_run_id"] != first.json["eval_run_id"]

    messages = drain_queue(container)
    assert sorted(m["eval_run_id"] for m in messages) == sorted(
        [first.json["eval_run_id"], other.json["eval_run_id"], carol.json["eval_run_id"]])
    runs, _ = container.run_store.list_for_session("acme", SESSION)
    assert len(runs) == 3


def test_idempotent_repeat_survives_a_settings_change(client: Any, container: Any, daemons: FakeDaemons,
                                                      member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    first = dispatch(client, member_token, key="k-1")
    configure_vendors(client, "openai")  # now both are enabled: a new request would need 'vendor'
    again = dispatch(client, member_token, key="k-1")
    assert again.status_code == 202 and again.json == first.json
    assert len(drain_queue(container)) == 1


@pytest.mark.parametrize("key", ["x" * 129, "two words", "a#b"])
def test_invalid_idempotency_key_is_400(client: Any, container: Any, daemons: FakeDaemons, member_token: str,
                                        key: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    resp = dispatch(client, member_token, key=key)
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "invalid_idempotency_key")


def test_selection_errors(client: Any, container: Any, daemons: FakeDaemons, member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    resp = dispatch(client, member_token, {"questions": ["safety", "made_up"]})
    assert resp.status_code == 400
    err = resp.json["error"]
    assert err["code"] == "unknown_question" and err["details"]["unknown"] == ["made_up"]
    assert len(err["details"]["valid_question_ids"]) == 13
    assert "sensitive_files" in err["details"]["valid_question_ids"]

    resp = dispatch(client, member_token, {"questions": ["safety"], "skip": ["quality"]})
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "questions_and_skip_exclusive")
    resp = dispatch(client, member_token, {"questions": []})
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "empty_selection")
    resp = dispatch(client, member_token, {"skip": ["safety", "plan_adherence", "quality", "efficiency"]})
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "empty_selection")
    assert drain_queue(container) == []


@pytest.mark.parametrize(("body", "code"), [
    ({"threshold": -1}, "threshold_out_of_range"),
    ({"threshold": 200_001}, "threshold_out_of_range"),
    ({"threshold": "big"}, "validation_failed"),
    ({"vendor": "anthropic", "model": "gpt-4o"}, "validation_failed"),
    ({"runner": "lambda"}, "validation_failed"),
])
def test_invalid_bodies_are_400(client: Any, container: Any, daemons: FakeDaemons, member_token: str,
                                body: dict[str, Any], code: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    resp = dispatch(client, member_token, body)
    assert (resp.status_code, resp.json["error"]["code"]) == (400, code)


def test_threshold_bounds_are_accepted(client: Any, container: Any, daemons: FakeDaemons, member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    for value in (0, 1, 200_000):
        resp = dispatch(client, member_token, {"threshold": value})
        assert resp.status_code == 202
        assert resp.json["threshold"] == value


@pytest.mark.parametrize("value", [-1, 0, 1, 2000, 200_000, 200_001])
def test_dispatch_and_eval_context_accept_exactly_the_same_thresholds(client: Any, container: Any,
                                                                      daemons: FakeDaemons, member_token: str,
                                                                      value: int) -> None:
    configure_vendors(client, "anthropic")
    trace = {"trace": [{"kind": "user_message", "timestamp": "2025-06-01T12:00:00Z", "text": "Add a README"}]}
    assert client.put(f"/sessions/{SESSION}", token=member_token, json_body=trace).status_code in (200, 201)
    context = client.get(f"/sessions/{SESSION}/eval-context?threshold={value}", token=member_token)
    run = dispatch(client, member_token, {"threshold": value})
    assert (context.status_code == 200) == (run.status_code == 202), (context.status_code, run.status_code)
    if context.status_code != 200:
        assert context.json["error"]["code"] == run.json["error"]["code"] == "threshold_out_of_range"


def test_missing_or_foreign_session_is_404(client: Any, container: Any, daemons: FakeDaemons,
                                           member_token: str) -> None:
    configure_vendors(client, "anthropic")
    configure_vendors(client, "anthropic", tenant="globex")
    seed_session(container, "theirs", tenant="globex")
    for session_id in ("nope", "theirs", "x" * 300):
        resp = dispatch(client, member_token, session_id=session_id)
        assert (resp.status_code, resp.json["error"]["code"]) == (404, "session_not_found")
    assert drain_queue(container) == []
    # The same session id works for its own tenant.
    resp = dispatch(client, mint("globex", "gina", []), session_id="theirs")
    assert resp.status_code == 202


def test_dispatch_needs_a_token(client: Any, container: Any) -> None:
    resp = client.post(f"/sessions/{SESSION}/eval-runs", json_body={})
    assert resp.status_code == 401


def test_queue_failure_marks_the_run_failed_and_answers_503(client: Any, container: Any, daemons: FakeDaemons,
                                                            member_token: str) -> None:
    configure_vendors(client, "anthropic")
    seed_session(container)
    sqs, url = container.sqs, container.config.queue_url
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    sqs.delete_queue(QueueUrl=url)

    resp = dispatch(client, member_token, key="retry-me")
    assert resp.status_code == 503
    assert resp.json["error"]["code"] == "dispatch_failed"
    assert "Retry-After" in resp.headers
    run_id = resp.json["error"]["details"]["eval_run_id"]
    run = container.run_store.require("acme", run_id)
    assert run.status == "failed" and run.error is not None and run.error.code == "dispatch_failed"

    # The queue is back: a retry with the same key re-queues the same run, once.
    name = url.rsplit("/", 1)[1]
    keep = {k: v for k, v in attributes.items() if k in ("VisibilityTimeout", "MessageRetentionPeriod")}
    assert sqs.create_queue(QueueName=name, Attributes=keep)["QueueUrl"] == url
    again = dispatch(client, member_token, key="retry-me")
    assert again.status_code == 202 and again.json["eval_run_id"] == run_id
    assert again.json["status"] == "queued"
    assert container.run_store.require("acme", run_id).status == "queued"
    assert [m["eval_run_id"] for m in drain_queue(container)] == [run_id]


def test_daemon_offer_failure_marks_the_run_failed(client: Any, container: Any, daemons: FakeDaemons,
                                                   member_token: str) -> None:
    seed_session(container)
    daemons.add("acme", "bob", "dmn_1")
    daemons.fail_offers = True
    resp = dispatch(client, member_token)
    assert (resp.status_code, resp.json["error"]["code"]) == (503, "dispatch_failed")
    run = container.run_store.require("acme", resp.json["error"]["details"]["eval_run_id"])
    assert run.status == "failed"


def test_daemon_route_with_the_wired_daemon_service(client: Any, container: Any, member_token: str) -> None:
    """No fake: the container's own daemon service lists the user's daemon, holds the job for its poll
    and learns about the cancel."""
    seed_session(container)
    resp = client.get("/eval/runners", token=member_token)
    assert resp.json["run_button"] == {"visible": False, "routes": []}
    daemon_id = client.post("/daemons", token=member_token, json_body={
        "name": "laptop", "platform": "linux-x86_64", "judges": ["claude"]}).json["daemon_id"]
    runners = client.get("/eval/runners", token=member_token).json
    assert runners["run_button"] == {"visible": True, "routes": ["daemon"]}
    assert [d["daemon_id"] for d in runners["daemon"]["daemons"]] == [daemon_id]
    # Another user of the tenant does not see bob's daemon.
    assert client.get("/eval/runners", token=mint("acme", "carol", [])).json["daemon"]["available"] is False

    resp = dispatch(client, member_token, {"questions": ["safety"], "threshold": 4000})
    assert resp.status_code == 202, resp.json
    assert (resp.json["runner"], resp.json["daemon_id"]) == ("daemon", daemon_id)
    run_id = resp.json["eval_run_id"]
    job = client.get(f"/daemons/{daemon_id}/jobs?wait=0", token=member_token)
    assert job.status_code == 200, job.json
    assert job.json["eval_run_id"] == run_id and job.json["threshold"] == 4000
    assert [q["id"] for q in job.json["questions"]] == ["sensitive_files", "destructive_commands",
                                                        "security_vulnerabilities", "permission_bypass"]
    assert drain_queue(container) == []

    resp = client.post(f"/eval-runs/{run_id}/cancel", token=member_token)
    assert resp.status_code == 200 and resp.json["status"] == "cancelled"
    notice = client.get(f"/daemons/{daemon_id}/jobs?wait=0", token=member_token)
    assert notice.status_code == 200
    assert (notice.json["type"], notice.json["eval_run_id"]) == ("cancel", run_id)
