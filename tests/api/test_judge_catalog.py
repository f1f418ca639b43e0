"""The admin judge catalog through chalice.test.Client + moto: read, versioned save with If-Match,
audit and old versions, every bad input a 400 with field details and nothing stored, the enabled
catalog members see and select from, the version a run records, the daemon job carrying custom
questions and the daemon-result recompute, and the editor's prompt preview and try-it dispatch."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.catalog import MAX_RUBRIC_CHARS
from chalicelib.judges.catalog import QUESTIONS
from chalicelib.judges.prompts import build_question_prompt
from tests.conftest import mint

CATALOG = "/admin/eval-questions"
RUBRIC = "5: every user-visible change has a CHANGELOG entry\n3: some are missing\n1: none despite changes"
CHANGELOG = {"id": "changelog_updated", "category": "docs", "rubric": RUBRIC,
             "text": "Did the agent add a CHANGELOG.md entry for every user-visible change?"}
MIGRATIONS = {"id": "migrations_reversible", "category": "quality", "needs_tools": True,
              "text": "Can every database migration the agent wrote be reverted?"}
TRACE = {"trace": [
    {"kind": "user_message", "timestamp": "2026-11-29T10:00:00.000Z", "text": "Add a --verbose flag."},
    {"kind": "assistant_message", "timestamp": "2026-11-29T10:00:05.000Z", "text": "Added; CHANGELOG updated."},
]}


def builtins(**enabled: bool) -> list[dict[str, Any]]:
    return [{"id": q.id, "enabled": enabled.get(q.id, True)} for q in QUESTIONS]


def save(client: Any, token: str, questions: list[dict[str, Any]], if_match: int | None = None,
         status: int = 200) -> Any:
    headers = {"If-Match": str(if_match)} if if_match is not None else None
    resp = client.put(CATALOG, token=token, json_body={"questions": questions}, headers=headers)
    assert resp.status_code == status, resp.json
    return resp


def upload(client: Any, session_id: str = "sess-1") -> None:
    resp = client.put(f"/sessions/{session_id}", token=mint("acme", "bob", []), json_body=TRACE)
    assert resp.status_code in (200, 201), resp.json


# ------------------------------------------------------------------------------------ admin catalog


def test_default_catalog_is_the_13_builtins_and_admins_only(client: Any, admin_token: str,
                                                          member_token: str) -> None:
    resp = client.get(CATALOG, token=admin_token)
    assert resp.status_code == 200 and resp.headers["ETag"] == '"0"'
    body = resp.json
    assert body["version"] == 0 and body["updated_by"] is None
    assert [q["id"] for q in body["questions"]] == [q.id for q in QUESTIONS]
    first = body["questions"][0]
    assert first == {"id": "sensitive_files", "category": "safety", "text": QUESTIONS[0].text, "rubric": None,
                     "needs_tools": False, "enabled": True, "builtin": True, "prompt": QUESTIONS[0].prompt}
    assert body["limits"]["max_rubric_chars"] == MAX_RUBRIC_CHARS
    assert client.get(CATALOG, token=member_token).status_code == 403
    assert client.put(CATALOG, token=member_token, json_body={"questions": builtins()}).json["error"]["code"] == \
        "admin_required"
    assert client.get(CATALOG).status_code == 401


def test_save_add_disable_reorder_then_members_see_the_enabled_catalog(client: Any, admin_token: str,
                                                                       member_token: str) -> None:
    body = save(client, admin_token, [CHANGELOG, *builtins(redundant_calls=False), MIGRATIONS], if_match=0).json
    assert body["version"] == 1 and body["updated_by"] == "alice"
    assert [q["id"] for q in body["questions"]][:2] == ["changelog_updated", "sensitive_files"]
    custom = body["questions"][0]
    assert custom == {**CHANGELOG, "needs_tools": False, "enabled": True, "builtin": False, "prompt": None}

    seen = client.get("/eval/questions", token=member_token).json
    assert seen["version"] == 1
    ids = [q["id"] for q in seen["questions"]]
    assert ids[0] == "changelog_updated" and ids[-1] == "migrations_reversible"
    assert "redundant_calls" not in ids and len(ids) == 14
    assert seen["questions"][0] == {"category": "docs", "id": "changelog_updated", "text": CHANGELOG["text"],
                                    "needs_tools": False, "builtin": False, "rubric": RUBRIC}
    assert seen["questions"][-1]["needs_tools"] is True

    audit = client.get(CATALOG + "/audit", token=admin_token).json["items"]
    assert [(a["version"], a["by"]) for a in audit] == [(1, "alice")]
    assert {(c["action"], c["question_id"]) for c in audit[0]["changes"]} == {
        ("added", "changelog_updated"), ("added", "migrations_reversible"), ("disabled", "redundant_calls")}

    moved = [*builtins(redundant_calls=False), MIGRATIONS, CHANGELOG]
    moved[0], moved[1] = moved[1], moved[0]
    save(client, admin_token, moved, if_match=1)
    latest = client.get(CATALOG + "/audit?limit=1", token=admin_token).json["items"]
    assert [(c["action"], c["question_id"]) for c in latest[0]["changes"]] == [("reordered", None)]
    order = [q["id"] for q in client.get("/eval/questions", token=member_token).json["questions"]]
    assert order[:2] == ["destructive_commands", "sensitive_files"] and order[-1] == "changelog_updated"


def test_versions_are_immutable_and_readable_and_unchanged_saves_make_none(client: Any, admin_token: str) -> None:
    save(client, admin_token, [*builtins(), CHANGELOG])
    edited = {**CHANGELOG, "text": "Was CHANGELOG.md updated?", "rubric": None}
    assert save(client, admin_token, [*builtins(), edited], if_match=1).json["version"] == 2
    # The same catalog again: nothing to audit, no new version.
    assert save(client, admin_token, [*builtins(), edited], if_match=2).json["version"] == 2

    v1 = client.get(CATALOG + "/versions/1", token=admin_token).json
    assert v1["version"] == 1 and v1["questions"][-1]["text"] == CHANGELOG["text"]
    assert v1["questions"][-1]["rubric"] == RUBRIC
    assert v1["changes"] == [{"action": "added", "question_id": "changelog_updated", "fields": []}]
    v2 = client.get(CATALOG + "/versions/2", token=admin_token).json
    assert v2["changes"] == [{"action": "edited", "question_id": "changelog_updated", "fields": ["text", "rubric"]}]
    assert client.get(CATALOG + "/versions/0", token=admin_token).json["questions"][0]["id"] == "sensitive_files"
    missing = client.get(CATALOG + "/versions/9", token=admin_token)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "catalog_version_not_found"
    assert client.get(CATALOG + "/versions/x1", token=admin_token).status_code == 400
    assert [a["version"] for a in client.get(CATALOG + "/audit", token=admin_token).json["items"]] == [2, 1]


def test_a_stale_if_match_is_a_412_naming_who_changed_it_and_stores_nothing(client: Any, admin_token: str) -> None:
    save(client, admin_token, [*builtins(), CHANGELOG], if_match=0)
    other = mint("acme", "carol", ["admin"])
    save(client, other, [*builtins(sensitive_files=False), CHANGELOG], if_match=1)
    stale = save(client, admin_token, [*builtins(), MIGRATIONS], if_match=1, status=412)
    error = stale.json["error"]
    assert error["code"] == "version_mismatch"
    assert (error["details"]["current_version"], error["details"]["updated_by"]) == (2, "carol")
    current = client.get(CATALOG, token=admin_token).json
    assert current["version"] == 2 and "migrations_reversible" not in [q["id"] for q in current["questions"]]
    assert client.put(CATALOG, token=admin_token, json_body={"questions": builtins()},
                      headers={"If-Match": "v2"}).json["error"]["code"] == "invalid_if_match"


@pytest.mark.parametrize(("questions", "code", "field", "kind"), [
    ([*builtins(), CHANGELOG, CHANGELOG], "validation_failed", "questions.14.id", "duplicate_id"),
    ([*builtins(), {**CHANGELOG, "id": "tests_written", "builtin": False}], "validation_failed",
     "questions.13.id", "builtin_id_collision"),
    ([*builtins(), {**CHANGELOG, "id": "sensitive_files"}], "validation_failed", "questions.13.id",
     "builtin_id_collision"),
    ([*builtins(), {**CHANGELOG, "id": "Changelog"}], "validation_failed", "questions.13.id", "invalid_id"),
    ([*builtins(), {**CHANGELOG, "category": "Docs!"}], "validation_failed", "questions.13.category",
     "invalid_category"),
    ([*builtins(), {**CHANGELOG, "text": "  "}], "validation_failed", "questions.13.text", "empty_text"),
    ([*builtins(), {**CHANGELOG, "rubric": "x" * (MAX_RUBRIC_CHARS + 1)}], "validation_failed",
     "questions.13.rubric", "string_too_long"),
    ([{**builtins()[0], "text": "Secrets? Always score 5."}, *builtins()[1:]], "validation_failed",
     "questions.0.text", "builtin_immutable"),
    (builtins()[1:], "validation_failed", "questions", "builtin_missing"),
    ([{**b, "enabled": False} for b in builtins()], "catalog_empty", "questions", "no_enabled_question"),
])
def test_bad_catalogs_are_400s_with_field_details_and_nothing_is_stored(
        client: Any, admin_token: str, questions: list[dict[str, Any]], code: str, field: str, kind: str) -> None:
    save(client, admin_token, [*builtins(), MIGRATIONS])
    resp = save(client, admin_token, questions, status=400)
    assert resp.json["error"]["code"] == code
    assert {"field": field, "type": kind} in [{"field": f["field"], "type": f["type"]}
                                              for f in resp.json["error"]["details"]["fields"]]
    assert client.get(CATALOG, token=admin_token).json["version"] == 1
    assert len(client.get(CATALOG + "/audit", token=admin_token).json["items"]) == 1


def test_malformed_bodies_are_400s(client: Any, admin_token: str) -> None:
    unknown = client.put(CATALOG, token=admin_token, json_body={"questions": builtins(), "version": 3})
    assert unknown.status_code == 400 and unknown.json["error"]["code"] == "validation_failed"
    typed = client.put(CATALOG, token=admin_token, json_body={"questions": [{**CHANGELOG, "needs_tools": "yes"}]})
    assert typed.status_code == 400 and typed.json["error"]["details"]["fields"][0]["field"] == \
        "questions.0.needs_tools"
    assert client.put(CATALOG, token=admin_token, body="[]",
                      headers={"Content-Type": "application/json"}).status_code == 400


def test_catalogs_are_per_tenant(client: Any, admin_token: str, other_tenant_admin: str) -> None:
    save(client, admin_token, [*builtins(), CHANGELOG])
    theirs = client.get(CATALOG, token=other_tenant_admin).json
    assert theirs["version"] == 0 and "changelog_updated" not in [q["id"] for q in theirs["questions"]]
    assert client.get(CATALOG + "/versions/1", token=other_tenant_admin).status_code == 404


# ------------------------------------------------------------------------------------ dispatch


def test_runs_select_tenant_ids_and_categories_and_record_the_version(client: Any, container: Any,
                                                                     admin_token: str) -> None:
    from tests.api.dispatch_kit import configure_vendors

    configure_vendors(client, "anthropic")
    upload(client)
    save(client, admin_token, [*builtins(sensitive_files=False), CHANGELOG, MIGRATIONS])
    bob = mint("acme", "bob", [])
    resp = client.post("/sessions/sess-1/eval-runs", token=bob, json_body={"questions": ["docs", "safety"]})
    assert resp.status_code == 202 and resp.json["catalog_version"] == 1 and resp.json["questions"] == 4
    run = container.run_store.require("acme", resp.json["eval_run_id"])
    assert [q.question_id for q in run.questions] == ["destructive_commands", "security_vulnerabilities",
                                                      "permission_bypass", "changelog_updated"]
    assert run.catalog_version == 1 and run.trial_questions is None
    assert client.get(f"/eval-runs/{run.eval_run_id}", token=bob).json["catalog_version"] == 1

    skipped = client.post("/sessions/sess-1/eval-runs", token=bob, json_body={"skip": ["docs", "quality"]})
    assert skipped.status_code == 202 and skipped.json["questions"] == 12 - 3
    disabled = client.post("/sessions/sess-1/eval-runs", token=bob, json_body={"questions": ["sensitive_files"]})
    assert disabled.status_code == 400 and disabled.json["error"]["code"] == "question_disabled"
    unknown = client.post("/sessions/sess-1/eval-runs", token=bob, json_body={"questions": ["not_a_question"]})
    assert unknown.json["error"]["code"] == "unknown_question"
    assert "changelog_updated" in unknown.json["error"]["details"]["valid_question_ids"]


def test_a_question_added_in_another_container_is_found_despite_the_head_cache(
        client: Any, container: Any, admin_token: str) -> None:
    from chalicelib.adapters.catalog_store import DynamoCatalogStore
    from tests.api.dispatch_kit import configure_vendors

    configure_vendors(client, "anthropic")
    upload(client)
    container.catalog_store._cache_seconds = 300  # this container caches the head (version 0) for a while
    bob = mint("acme", "bob", [])
    assert client.get("/eval/questions", token=bob).json["version"] == 0
    # Another container saves version 1 (its own store; this one's cache still says version 0).
    elsewhere = DynamoCatalogStore(container.dynamodb, container.config.table_name, cache_seconds=0)
    from chalicelib.domain.catalog import CatalogUpdate, CatalogVersion, plan_catalog

    entries = plan_catalog(CatalogUpdate.model_validate({"questions": [*builtins(), CHANGELOG]}))
    elsewhere.save("acme", CatalogVersion(version=1, entries=entries, created_at="2026-12-04T10:00:00.000Z",
                                          created_by="carol"), expected_version=0)
    resp = client.post("/sessions/sess-1/eval-runs", token=bob, json_body={"questions": ["changelog_updated"]})
    assert resp.status_code == 202 and resp.json["catalog_version"] == 1


# ------------------------------------------------------------------------------------ daemon job


def test_a_daemon_job_carries_custom_questions_and_the_result_is_recomputed_in_order(
        client: Any, container: Any, admin_token: str) -> None:
    from tests.api.daemon_kit import claim, register

    alice = mint("acme", "alice", [])
    save(client, admin_token, [CHANGELOG, *builtins()])
    upload(client)
    daemon_id = register(client, alice)
    accepted = client.post("/sessions/sess-1/eval-runs", token=alice,
                           json_body={"runner": "daemon", "questions": ["docs", "sensitive_files"]}).json
    job = claim(client, alice, daemon_id).json
    # Catalog order (the admin put the custom question first); the result still lists safety first.
    assert [q["id"] for q in job["questions"]] == ["changelog_updated", "sensitive_files"]
    custom = job["questions"][0]
    assert custom == {"category": "docs", "id": "changelog_updated", "text": CHANGELOG["text"],
                      "prompt": CHANGELOG["text"], "rubric": RUBRIC, "needs_tools": False}

    # The admin changes the question meanwhile: the run keeps the version it recorded.
    save(client, admin_token, [{**CHANGELOG, "category": "release"}, *builtins()])
    run_id = accepted["eval_run_id"]
    verdicts = [{"category": "docs", "question_id": "changelog_updated", "score": 2, "verdict": "warn",
                 "finding": "No entry for --verbose.", "evidence": "turn 2", "recommendation": "Add one.",
                 "tools_used": None},
                {"category": "safety", "question_id": "sensitive_files", "score": 5, "verdict": "pass",
                 "finding": "No secrets touched.", "evidence": None, "recommendation": None, "tools_used": None}]
    posted = {"eval_run_id": run_id, "judge_model": "sonnet", "overall_score": 5, "summary": "x",
              "retrospective": None,
              "categories": [{"name": "docs", "score": 2, "verdict": "warn", "questions": [verdicts[0]]},
                             {"name": "safety", "score": 5, "verdict": "pass", "questions": [verdicts[1]]}]}
    resp = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=posted)
    assert resp.status_code == 200, resp.json
    result = client.get(f"/eval-runs/{run_id}", token=alice).json["result"]
    assert [(c["name"], c["score"]) for c in result["categories"]] == [("safety", 5), ("docs", 2)]
    assert result["overall_score"] == 4  # (5 + 2) / 2 = 3.5 → 4
    assert "overall_score 5 -> 4" in resp.json["corrections"]


# ------------------------------------------------------------------------------------ editor


def test_preview_shows_the_exact_question_part_and_the_shared_prefix(client: Any, admin_token: str,
                                                                     member_token: str) -> None:
    upload(client)
    body = {"question": CHANGELOG}
    preview = client.post(CATALOG + "/preview", token=admin_token, json_body=body).json
    from chalicelib.domain.catalog import DraftQuestion, check_draft

    assert preview["question_prompt"] == build_question_prompt(check_draft(DraftQuestion.model_validate(CHANGELOG)))
    assert RUBRIC in preview["question_prompt"] and preview["trace_included"] is False
    assert "<the session's eval context" in preview["shared_context"]
    assert preview["separator"] == "\n\n"
    with_trace = client.post(CATALOG + "/preview", token=admin_token, json_body={**body, "session_id": "sess-1"}).json
    assert with_trace["trace_included"] is True and "Add a --verbose flag." in with_trace["shared_context"]
    assert with_trace["question_prompt"] == preview["question_prompt"]
    saved = client.post(CATALOG + "/preview", token=admin_token, json_body={"question_id": "tests_written"}).json
    assert saved["question_prompt"] == build_question_prompt(QUESTIONS[7])

    assert client.post(CATALOG + "/preview", token=member_token, json_body=body).status_code == 403
    both = client.post(CATALOG + "/preview", token=admin_token, json_body={**body, "question_id": "tests_written"})
    assert both.status_code == 400 and both.json["error"]["code"] == "question_or_question_id"
    bad = client.post(CATALOG + "/preview", token=admin_token, json_body={"question": {**CHANGELOG, "text": ""}})
    assert bad.status_code == 400 and bad.json["error"]["details"]["fields"][0]["field"] == "question.text"
    assert client.post(CATALOG + "/preview", token=admin_token,
                       json_body={**body, "session_id": "nope"}).status_code == 404
    assert client.post(CATALOG + "/preview", token=admin_token,
                       json_body={"question_id": "nope_q"}).json["error"]["code"] == "question_not_found"


def test_try_it_dispatches_a_one_question_run_carrying_the_draft(client: Any, container: Any, admin_token: str,
                                                                 member_token: str) -> None:
    from tests.api.dispatch_kit import configure_vendors

    configure_vendors(client, "anthropic")
    upload(client)
    save(client, admin_token, [*builtins(), MIGRATIONS])
    resp = client.post(CATALOG + "/try", token=admin_token, json_body={"session_id": "sess-1", "question": CHANGELOG},
                       headers={"Idempotency-Key": "try-1"})
    assert resp.status_code == 202, resp.json
    assert resp.json["trial"] is True and resp.json["questions"] == 1 and resp.json["catalog_version"] == 1
    assert resp.headers["Location"] == f"/eval-runs/{resp.json['eval_run_id']}"
    run = container.run_store.require("acme", resp.json["eval_run_id"])
    assert [q.id for q in run.trial_questions or []] == ["changelog_updated"]
    assert run.trial_questions and run.trial_questions[0].rubric == RUBRIC
    # The draft is not part of the catalog: trying it saved nothing.
    assert client.get(CATALOG, token=admin_token).json["version"] == 1
    again = client.post(CATALOG + "/try", token=admin_token, json_body={"session_id": "sess-1", "question": CHANGELOG},
                        headers={"Idempotency-Key": "try-1"})
    assert again.json["eval_run_id"] == resp.json["eval_run_id"]

    assert client.post(CATALOG + "/try", token=member_token,
                       json_body={"session_id": "sess-1", "question": CHANGELOG}).status_code == 403
    assert client.post(CATALOG + "/try", token=admin_token,
                       json_body={"session_id": "nope", "question": CHANGELOG}).status_code == 404
    bad = client.post(CATALOG + "/try", token=admin_token,
                      json_body={"session_id": "sess-1", "question": {**CHANGELOG, "id": "tests_written"}})
    assert bad.status_code == 400 and bad.json["error"]["details"]["fields"][0]["type"] == "builtin_id_collision"
    neither = client.post(CATALOG + "/try", token=admin_token, json_body={"session_id": "sess-1"})
    assert neither.status_code == 400 and neither.json["error"]["code"] == "question_or_question_id"


def test_a_daemon_rerun_after_the_catalog_changed_carries_the_recorded_version(
        client: Any, container: Any, admin_token: str) -> None:
    from tests.api.daemon_kit import FrozenClock, claim, event, register

    container.clock = FrozenClock()  # long polls end at once
    alice = mint("acme", "alice", [])
    v1 = save(client, admin_token, [*builtins(), CHANGELOG]).json["version"]
    upload(client)
    daemon_id = register(client, alice)
    run_id = client.post("/sessions/sess-1/eval-runs", token=alice,
                         json_body={"runner": "daemon", "questions": ["docs"]}).json["eval_run_id"]
    assert claim(client, alice, daemon_id).status_code == 200
    client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=event(run_id, "eval_failed", reason="crash"))

    # Reworded, moved and then removed from the catalog: the rerun still asks what version 1 asked.
    save(client, admin_token, [*builtins(), {**CHANGELOG, "text": "Reworded?", "category": "release"}])
    save(client, admin_token, builtins())
    assert client.post(f"/eval-runs/{run_id}/rerun", token=alice).status_code == 202
    job = claim(client, alice, daemon_id).json
    assert job["attempt"] == 2
    assert job["questions"] == [{"category": "docs", "id": "changelog_updated", "text": CHANGELOG["text"],
                                 "prompt": CHANGELOG["text"], "rubric": RUBRIC, "needs_tools": False}]
    assert client.get(f"/eval-runs/{run_id}", token=alice).json["catalog_version"] == v1
