"""A tenant catalog on the server runner end to end: custom questions and rubrics reach the judges'
prompts with one cache write per run (the shared prefix stays identical), new categories aggregate
after the built-in ones, a rerun judges the version the run recorded after the catalog changed, and
a try-it run judges its unsaved question through the worker. Real SDKs against the in-process fake
vendor; assertions on stored state and on what the vendor saw."""

from __future__ import annotations

from typing import Any

from chalicelib.judges.catalog import QUESTIONS
from devstack.fake_vendor import FakeVendor
from tests.api.worker_kit import (
    configure,
    dispatch,
    judge_requests,
    queued_event,
    trace,
    upload,
    view,
    work,
)
from tests.conftest import mint

CATALOG = "/admin/eval-questions"
ADMIN = mint("acme", "alice", ["admin"])


def custom(qid: str, category: str, text: str, rubric: str | None = None) -> dict[str, Any]:
    return {"id": qid, "category": category, "text": text, "rubric": rubric}


def save(client: Any, questions: list[dict[str, Any]]) -> int:
    resp = client.put(CATALOG, token=ADMIN, json_body={"questions": questions})
    assert resp.status_code == 200, resp.json
    return int(resp.json["version"])


def builtins(only: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{"id": q.id, "enabled": not only or q.id in only} for q in QUESTIONS]


def test_custom_questions_and_rubrics_reach_the_judges_with_one_cache_write(client: Any, worker: Any,
                                                                           fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    tenant = [custom("changelog_updated", "docs", "Did the agent add a CHANGELOG entry?",
                     rubric="RUBRIC-MARKER-7: 1 when no entry was added"),
              custom("readme_updated", "docs", "Did the agent update the README where behaviour changed?"),
              custom("migrations_down", "data_safety", "Can every migration be reverted?")]
    version = save(client, [tenant[0], *builtins(("sensitive_files", "followed_plan")), *tenant[1:]])
    # The vendor scores whatever prompt carries the rubric 1: proof the rubric reached it.
    fake.add_rule({"match": "RUBRIC-MARKER-7", "score": 1, "times": None})
    run_id = dispatch(client)

    assert work(queued_event(worker)) == {"batchItemFailures": []}
    v = view(client, run_id)
    assert v["status"] == "succeeded" and v["catalog_version"] == version
    scores = {q["question_id"]: q["score"] for q in v["progress"]["questions"]}
    assert set(scores) == {"changelog_updated", "sensitive_files", "followed_plan", "readme_updated",
                           "migrations_down"}
    assert scores["changelog_updated"] == 1
    result = v["result"]
    assert [c["name"] for c in result["categories"]] == ["safety", "plan_adherence", "docs", "data_safety"]
    docs = next(c for c in result["categories"] if c["name"] == "docs")
    assert [q["question_id"] for q in docs["questions"]] == ["changelog_updated", "readme_updated"]
    assert result["summary"].startswith("Evaluated 5/5 questions across 4 categories.")

    judges = judge_requests(fake)
    assert sorted(r["question_id"] for r in judges) == sorted(scores)
    # One prefix written, every other judge read it: custom questions did not break the shared prefix.
    assert [r["cache"] for r in judges].count("write") == 1
    assert [r["cache"] for r in judges].count("read") == len(judges) - 1


def test_a_rerun_judges_the_version_the_run_recorded(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    original = custom("changelog_updated", "docs", "ORIGINAL-WORDING: did the agent add a CHANGELOG entry?")
    v1 = save(client, [*builtins(("sensitive_files",)), original])
    # The custom question's first attempt and its repair re-ask are unusable: it fails, the run succeeds.
    fake.add_rule({"match": "changelog_updated", "malformed": True, "times": 2})
    run_id = dispatch(client)
    work(queued_event(worker))
    first = view(client, run_id)
    assert first["status"] == "succeeded"
    assert {q["question_id"]: q["status"] for q in first["progress"]["questions"]} == {
        "sensitive_files": "scored", "changelog_updated": "failed"}

    # The admin rewords the question and moves it to another category; the rerun must not notice.
    save(client, [*builtins(("sensitive_files",)),
                  custom("changelog_updated", "release", "NEW-WORDING: is there a release note?")])
    fake.add_rule({"match": "NEW-WORDING", "score": 1, "times": None})
    fake.add_rule({"match": "ORIGINAL-WORDING", "score": 4, "times": None})
    rerun = client.post(f"/eval-runs/{run_id}/rerun", token=mint("acme", "bob", []))
    assert rerun.status_code == 202, rerun.json
    work(queued_event(worker))
    after = view(client, run_id)
    assert after["status"] == "succeeded" and after["catalog_version"] == v1
    by_id = {q["question_id"]: q for q in after["progress"]["questions"]}
    assert by_id["changelog_updated"]["score"] == 4 and by_id["changelog_updated"]["category"] == "docs"
    assert [c["name"] for c in after["result"]["categories"]] == ["safety", "docs"]


def test_try_it_judges_an_unsaved_question_through_the_worker(client: Any, worker: Any, fake: FakeVendor) -> None:
    configure(client, fake, "anthropic")
    upload(client, trace())
    draft = custom("migrations_down", "data_safety", "TRY-MARKER: can every migration be reverted?",
                   rubric="5: each has a down migration; 1: none do")
    fake.add_rule({"match": "TRY-MARKER", "score": 2, "times": None})
    resp = client.post(CATALOG + "/try", token=ADMIN, json_body={"session_id": "sess-worker-1", "question": draft})
    assert resp.status_code == 202, resp.json
    work(queued_event(worker))
    v = client.get(f"/eval-runs/{resp.json['eval_run_id']}", token=ADMIN).json
    assert v["status"] == "succeeded" and v["trial"] is True
    assert [(q["question_id"], q["score"]) for q in v["progress"]["questions"]] == [("migrations_down", 2)]
    assert [c["name"] for c in v["result"]["categories"]] == ["data_safety"]
    # One judge call and nothing else: a try-it run has no retrospective.
    assert [r["question_id"] for r in judge_requests(fake)] == ["migrations_down"]
    assert len([r for r in fake.requests if r["endpoint"] == "generate"]) == 1
    assert v["retrospective_status"] == "skipped" and v["result"]["retrospective"] is None
    # Nothing was saved to the catalog by trying.
    assert client.get(CATALOG, token=ADMIN).json["version"] == 0
