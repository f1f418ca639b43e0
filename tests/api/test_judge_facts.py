"""Judge facts end to end: a daemon run's retained facts are kept per repository when the run is finalized
(deduplicated, with the run and question), listed for members, deleted by admins, forgotten with their
session, and given to later judges only when the tenant turns it on."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from chalicelib.domain.judge_facts import fact_id
from chalicelib.domain.runs import EvalRun
from tests.api.daemon_kit import FrozenClock, claim, dispatch, event, register, result_body, verdict
from tests.conftest import mint

REPO = "github.com/acme/shop"
QUESTIONS = ["sensitive_files", "destructive_commands"]
FACT = "Integration tests need the local stack running; `make test` starts it."


@pytest.fixture
def admin() -> str:
    return mint("acme", "root", ["admin"])


def upload(client: Any, token: str, session_id: str, repository: str | None = REPO) -> None:
    body: dict[str, Any] = {"trace": [
        {"kind": "user_message", "timestamp": "2026-11-29T10:00:00.000Z", "text": "Fix the parser."},
        {"kind": "assistant_message", "timestamp": "2026-11-29T10:00:05.000Z", "text": "Done."}]}
    if repository is not None:
        body["repository"] = repository
    resp = client.put(f"/sessions/{session_id}", token=token, json_body=body)
    assert resp.status_code in (200, 201), resp.json


@pytest.fixture
def daemon(client: Any, clock: FrozenClock, alice: str) -> str:
    return register(client, alice)


def daemon_run(client: Any, token: str, session_id: str, facts: dict[str, str | None], daemon_id: str) -> str:
    """A whole daemon run of QUESTIONS on `daemon_id` whose judges retained `facts` (question id → fact)."""
    run_id = dispatch(client, token, session_id, questions=QUESTIONS)["eval_run_id"]
    assert claim(client, token, daemon_id).status_code == 200

    def post(body: dict[str, Any]) -> None:
        resp = client.post(f"/eval-runs/{run_id}/events", token=token, json_body=body)
        assert resp.status_code == 200, resp.json

    post(event(run_id, "eval_started", judge_model="sonnet", total_questions=2))
    for index, qid in enumerate(QUESTIONS, start=1):
        common = {"index": index, "total": 2, "category": "safety", "question_id": qid}
        post(event(run_id, "eval_question_started", **common))
        post(event(run_id, "eval_question_completed", score=4, verdict="pass", retain_fact=facts.get(qid),
                   **common))
    body = result_body(run_id, [verdict(q, 4) for q in QUESTIONS], QUESTIONS)
    assert client.post(f"/eval-runs/{run_id}/result", token=token, json_body=body).status_code == 200
    return run_id


def listed(client: Any, token: str, repository: str = REPO) -> list[dict[str, Any]]:
    resp = client.get("/judge-facts?" + urlencode({"repository": repository}), token=token)
    assert resp.status_code == 200, resp.json
    return list(resp.json["items"])


def test_retained_facts_are_kept_per_repository_deduplicated_with_run_and_question(
        client: Any, clock: FrozenClock, alice: str, daemon: str) -> None:
    upload(client, alice, "sess-1")
    first = daemon_run(client, alice, "sess-1", {"sensitive_files": FACT,
                                                 "destructive_commands": "Migrations live in db/migrate."}, daemon)
    items = listed(client, alice)
    assert sorted(i["text"] for i in items) == [FACT, "Migrations live in db/migrate."]
    fact = next(i for i in items if i["text"] == FACT)
    assert fact == {"fact_id": fact_id(REPO, FACT), "repository": REPO, "text": FACT, "eval_run_id": first,
                    "question_id": "sensitive_files", "created_at": fact["created_at"], "category": "safety",
                    "session_id": "sess-1", "times_retained": 1, "last_retained_at": fact["created_at"]}

    # Another session of the same repository retains the same fact (other case and spacing): still one fact,
    # first retained by the first run, retained twice.
    upload(client, alice, "sess-2")
    clock.advance(60)
    daemon_run(client, alice, "sess-2", {"destructive_commands": "  integration tests need the local stack "
                                                                 "running; `make test` starts it"}, daemon)
    again = listed(client, alice)
    assert len(again) == 2
    merged = next(i for i in again if i["fact_id"] == fact["fact_id"])
    assert merged["text"] == FACT and merged["eval_run_id"] == first and merged["question_id"] == "sensitive_files"
    assert merged["times_retained"] == 2 and merged["last_retained_at"] > merged["created_at"]
    # Other repositories and tenants see nothing of it.
    assert listed(client, alice, "github.com/acme/other") == []
    assert listed(client, mint("globex", "eve", []), REPO) == []


def test_a_run_finalized_twice_retains_once_and_sessions_without_repository_keep_none(
        client: Any, container: Any, clock: FrozenClock, alice: str, daemon: str) -> None:
    upload(client, alice, "sess-1")
    run_id = daemon_run(client, alice, "sess-1", {"sensitive_files": FACT}, daemon)
    run = container.run_store.get("acme", run_id)
    assert run is not None and run.finalized_at is not None
    assert container.run_lifecycle.finalize(run).finalized_at == run.finalized_at  # idempotent: nothing more
    assert listed(client, alice)[0]["times_retained"] == 1

    upload(client, alice, "no-repo", repository=None)
    daemon_run(client, alice, "no-repo", {"sensitive_files": "A fact about nothing."}, daemon)
    assert [i["text"] for i in listed(client, alice)] == [FACT]


def test_admins_delete_facts_members_cannot(client: Any, clock: FrozenClock, alice: str, admin: str,
                                      daemon: str) -> None:
    upload(client, alice, "sess-1")
    daemon_run(client, alice, "sess-1", {"sensitive_files": FACT}, daemon)
    fid = listed(client, alice)[0]["fact_id"]
    refused = client.delete(f"/judge-facts/{fid}", token=alice)
    assert refused.status_code == 403 and listed(client, alice)
    assert client.delete(f"/judge-facts/{fid}", token=mint("globex", "root", ["admin"])).status_code == 404
    deleted = client.delete(f"/judge-facts/{fid}", token=admin)
    assert deleted.status_code == 204 and deleted.body in (b"", "", None)
    assert listed(client, alice) == []
    gone = client.delete(f"/judge-facts/{fid}", token=admin)
    assert gone.status_code == 404 and gone.json["error"]["code"] == "judge_fact_not_found"
    assert client.delete("/judge-facts/not-a-fact", token=admin).status_code == 404


@pytest.mark.parametrize("query", [{}, {"repository": ""}, {"repository": "x" * 2049},
                                   {"repository": REPO, "limit": "0"}, {"repository": REPO, "limit": "501"},
                                   {"repository": REPO, "cursor": "bm90LWEtY3Vyc29y"}, {"repository": REPO, "x": "1"}])
def test_bad_queries_are_400(client: Any, alice: str, query: dict[str, str]) -> None:
    resp = client.get("/judge-facts?" + urlencode(query), token=alice)
    assert resp.status_code == 400 and resp.json["error"]["code"] in ("invalid_query", "invalid_cursor")


def test_facts_go_with_their_session_and_stay_while_another_session_retained_them(
        client: Any, container: Any, clock: FrozenClock, alice: str, daemon: str) -> None:
    upload(client, alice, "sess-1")
    upload(client, alice, "sess-2")
    run_1 = daemon_run(client, alice, "sess-1", {"sensitive_files": FACT,
                                                 "destructive_commands": "Only sess-1 saw this."}, daemon)
    clock.advance(60)
    daemon_run(client, alice, "sess-2", {"sensitive_files": FACT}, daemon)
    service = container.judge_facts
    service.forget_session("acme", "sess-1")
    items = listed(client, alice)
    assert [i["text"] for i in items] == [FACT]  # sess-2 retained it too: it stays, now first retained there
    assert items[0]["session_id"] == "sess-2" and items[0]["times_retained"] == 1
    service.forget_session("acme", "sess-2")
    assert listed(client, alice) == []
    # Forgetting a run removes what only that run retained.
    upload(client, alice, "sess-3")
    run_3 = daemon_run(client, alice, "sess-3", {"sensitive_files": FACT}, daemon)
    stored = container.run_store.get("acme", run_3)
    assert isinstance(stored, EvalRun)
    service.forget_run("acme", stored)
    assert listed(client, alice) == [] and run_1


def test_known_patterns_only_when_the_tenant_turns_them_on(client: Any, container: Any, clock: FrozenClock,
                                                           alice: str, admin: str, daemon: str) -> None:
    upload(client, alice, "sess-1")
    daemon_run(client, alice, "sess-1", {"sensitive_files": FACT}, daemon)
    service = container.judge_facts
    assert service.known_patterns("acme", "sess-1") is None
    assert client.put("/admin/settings/eval-runner", token=admin,
                      json_body={"judge_facts_in_prompts": True}).status_code == 200
    container.settings_store.invalidate("acme")
    assert service.known_patterns("acme", "sess-1") == [FACT]
    upload(client, alice, "no-repo", repository=None)
    assert service.known_patterns("acme", "no-repo") == []
    # A daemon's job carries them too (read once, for every question of the run); none when the setting is off.
    dispatch(client, alice, "sess-1", questions=QUESTIONS)
    job = claim(client, alice, daemon).json
    assert job["known_patterns"] == [FACT]
    assert client.put("/admin/settings/eval-runner", token=admin,
                      json_body={"judge_facts_in_prompts": False}).status_code == 200
    container.settings_store.invalidate("acme")
    dispatch(client, alice, "sess-1", questions=QUESTIONS)
    assert "known_patterns" not in claim(client, alice, daemon).json


class StaleFirstRead:
    """The fact store, except that its first read misses a fact another run has just created."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get_facts(self, tenant: str, keys: Any) -> dict[Any, Any]:
        self.reads += 1
        return {} if self.reads == 1 else dict(self.store.get_facts(tenant, keys))


def test_two_runs_creating_the_same_fact_at_once_both_count(client: Any, container: Any, clock: FrozenClock,
                                                           alice: str, daemon: str) -> None:
    from chalicelib.domain.clock import iso
    from chalicelib.domain.evaluation import QuestionOutcome, TokenUsage
    from chalicelib.domain.runs import QuestionRef
    from chalicelib.services.judge_facts import JudgeFactRetention
    from chalicelib.services.run_lifecycle import RunLifecycle

    upload(client, alice, "sess-1")
    upload(client, alice, "sess-2")
    daemon_run(client, alice, "sess-1", {"sensitive_files": FACT}, daemon)
    now = iso(clock.now())
    late = EvalRun(eval_run_id="evr_late", tenant="acme", session_id="sess-2", created_by="alice", runner="server",
                   vendor="anthropic", model="claude-sonnet-4-6", status="running",
                   questions=[QuestionRef(question_id="tests_written", category="quality")], created_at=now,
                   deadline_at=now, run_timeout_seconds=300)
    container.run_store.create(late)
    ended = container.run_store.finish("acme", "evr_late", status="succeeded", now=now, usage=TokenUsage(), outcomes=[
        QuestionOutcome(question_id="tests_written", category="quality", status="scored", score=4,
                        retain_fact=FACT.upper())])
    stale = StaleFirstRead(container.fact_store)
    lifecycle = RunLifecycle(runs=container.run_store, clock=clock,
                             participants=[JudgeFactRetention(stale, container.session_repositories)])
    assert lifecycle.finalize(ended).finalized_at is not None
    assert stale.reads == 2  # the create was refused (the fact exists), the retry added a source
    fact = listed(client, alice)[0]
    assert fact["times_retained"] == 2 and fact["session_id"] == "sess-1"


def test_deleting_a_session_deletes_the_facts_only_it_retained(client: Any, clock: FrozenClock, alice: str,
                                                               daemon: str) -> None:
    upload(client, alice, "sess-1")
    upload(client, alice, "sess-2")
    daemon_run(client, alice, "sess-1", {"sensitive_files": FACT, "destructive_commands": "Only sess-1 saw this."},
               daemon)
    daemon_run(client, alice, "sess-2", {"sensitive_files": FACT}, daemon)
    assert client.delete("/sessions/sess-1", token=alice).status_code in (200, 204)
    assert [i["text"] for i in listed(client, alice)] == [FACT]
    assert client.delete("/sessions/sess-2", token=alice).status_code in (200, 204)
    assert listed(client, alice) == []


def test_a_daemons_cited_positions_outside_the_trace_are_dropped(client: Any, clock: FrozenClock, alice: str,
                                                                 daemon: str) -> None:
    upload(client, alice, "sess-1")  # two entries: positions 0 and 1
    run_id = dispatch(client, alice, "sess-1", questions=QUESTIONS)["eval_run_id"]
    assert claim(client, alice, daemon).status_code == 200
    body = result_body(run_id, [verdict("sensitive_files", 4, evidence_entries=[1, 7]),
                                verdict("destructive_commands", 4, evidence_entries=[0])], QUESTIONS)
    stored = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body)
    assert stored.status_code == 200, stored.json
    assert stored.json["corrections"] == [
        "question sensitive_files evidence_entries [7] are not trace positions; dropped"]
    result = client.get(f"/eval-runs/{run_id}", token=alice).json["result"]
    cited = {q["question_id"]: q["evidence_entries"] for c in result["categories"] for q in c["questions"]}
    assert cited == {"sensitive_files": [1], "destructive_commands": [0]}
