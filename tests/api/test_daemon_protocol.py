"""The daemon protocol end to end through chalice.test.Client + moto: register, heartbeat, dispatch,
claim once, events, result, cancel, deadlines, and every way a post can be refused."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.clock import iso
from tests.api.daemon_kit import FrozenClock, claim, dispatch, event, register, result_body, upload_session, verdict
from tests.conftest import mint


@pytest.fixture
def claimed(client: Any, clock: FrozenClock, alice: str) -> dict[str, Any]:
    """A dispatched daemon run of two safety questions, claimed by alice's daemon."""
    daemon_id = register(client, alice)
    upload_session(client, alice)
    accepted = dispatch(client, alice, questions=["sensitive_files", "destructive_commands"])
    job = claim(client, alice, daemon_id)
    assert job.status_code == 200, job.json
    return {"daemon_id": daemon_id, "run_id": accepted["eval_run_id"], "job": job.json}


# ------------------------------------------------------------------------------------- presence


def test_register_heartbeat_and_runners_listing(client: Any, clock: FrozenClock, alice: str) -> None:
    resp = client.post("/daemons", token=alice, json_body={"name": "laptop", "platform": "darwin-arm64",
                                                           "judges": ["claude", "codex"]})
    assert resp.status_code == 201
    daemon_id = resp.json["daemon_id"]
    assert resp.json["judges"] == ["claude", "codex"]
    assert resp.json["heartbeat_interval_seconds"] < resp.json["presence_ttl_seconds"]

    runners = client.get("/eval/runners", token=alice).json
    assert runners["daemon"]["available"] is True
    assert [d["daemon_id"] for d in runners["daemon"]["daemons"]] == [daemon_id]
    assert "daemon" in runners["run_button"]["routes"] and runners["run_button"]["visible"] is True

    # 80 s later a heartbeat keeps it; 91 s after that without one it is gone (reads filter TTL).
    clock.advance(80)
    beat = client.post(f"/daemons/{daemon_id}/heartbeat", token=alice)
    assert beat.status_code == 200 and beat.json["last_seen_at"] == iso(clock.current)
    clock.advance(91)
    assert client.get("/eval/runners", token=alice).json["daemon"]["available"] is False
    gone = client.post(f"/daemons/{daemon_id}/heartbeat", token=alice)
    assert gone.status_code == 404 and gone.json["error"]["code"] == "daemon_not_found"


def test_most_recent_heartbeat_first(client: Any, clock: FrozenClock, alice: str) -> None:
    first = register(client, alice, "desktop")
    clock.advance(5)
    second = register(client, alice, "laptop")
    clock.advance(5)
    client.post(f"/daemons/{first}/heartbeat", token=alice)
    listed = [d["daemon_id"] for d in client.get("/eval/runners", token=alice).json["daemon"]["daemons"]]
    assert listed == [first, second]
    assert [d["daemon_id"] for d in client.get("/daemons", token=alice).json["items"]] == [first, second]


def test_daemons_are_private_to_their_user(client: Any, clock: FrozenClock, alice: str) -> None:
    daemon_id = register(client, alice)
    bob = mint("acme", "bob", [])
    mallory = mint("globex", "alice", [])
    for token in (bob, mallory):
        assert client.post(f"/daemons/{daemon_id}/heartbeat", token=token).status_code == 404
        assert claim(client, token, daemon_id).status_code == 404
    assert client.get("/eval/runners", token=bob).json["daemon"]["available"] is False
    assert client.post(f"/daemons/{daemon_id}/heartbeat").status_code == 401


@pytest.mark.parametrize("body", [
    {"name": "x", "platform": "linux", "judges": []},
    {"name": "x", "platform": "linux", "judges": ["gemini"]},
    {"name": "", "platform": "linux", "judges": ["claude"]},
    {"name": "x", "platform": "linux", "judges": ["claude"], "extra": 1},
])
def test_registration_is_validated(client: Any, clock: FrozenClock, alice: str, body: dict[str, Any]) -> None:
    resp = client.post("/daemons", token=alice, json_body=body)
    assert resp.status_code == 400 and resp.json["error"]["code"] == "validation_failed"


def test_poll_wait_bounds(client: Any, clock: FrozenClock, alice: str) -> None:
    daemon_id = register(client, alice)
    too_long = client.get(f"/daemons/{daemon_id}/jobs?wait=26", token=alice)
    assert too_long.status_code == 400 and too_long.json["error"]["code"] == "invalid_query"
    # The long poll returns 204 once its (fake-clock) wait is over.
    assert client.get(f"/daemons/{daemon_id}/jobs?wait=25", token=alice).status_code == 204
    assert client.get(f"/daemons/{daemon_id}/jobs", token=alice).status_code == 204


# ------------------------------------------------------------------------------ jobs and claims


def test_job_is_claimed_exactly_once(client: Any, claimed: dict[str, Any], alice: str) -> None:
    job = claimed["job"]
    assert job["type"] == "job" and job["eval_run_id"] == claimed["run_id"]
    assert [q["id"] for q in job["questions"]] == ["sensitive_files", "destructive_commands"]
    assert all(q["prompt"] and q["category"] == "safety" for q in job["questions"])
    assert job["threshold"] == 2000 and job["chain"] is False and job["deadline_at"]
    assert job["eval_context_path"] == "/sessions/sess-1/eval-context?threshold=2000&chain=false"
    assert claim(client, alice, claimed["daemon_id"]).status_code == 204
    run = client.get(f"/eval-runs/{claimed['run_id']}", token=alice).json
    assert run["status"] == "running" and run["runner"] == "daemon" and run["started_at"]


def test_unclaimed_job_past_deadline_times_out(client: Any, clock: FrozenClock, alice: str) -> None:
    daemon_id = register(client, alice)
    upload_session(client, alice)
    run_id = dispatch(client, alice, questions=["safety"])["eval_run_id"]
    for _ in range(4):  # alive (heartbeating) but never polling, until the deadline passes
        clock.advance(76)
        assert client.post(f"/daemons/{daemon_id}/heartbeat", token=alice).status_code == 200
    assert client.get("/eval/runners", token=alice).status_code == 200  # the lazy sweep runs here
    run = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert run["status"] == "timed_out"
    assert run["error"]["code"] == "deadline_exceeded" and "picked up" in run["error"]["message"]
    assert {q["status"] for q in run["progress"]["questions"]} == {"timed_out"}
    assert claim(client, alice, daemon_id).status_code == 204


def test_unclaimed_job_past_deadline_times_out_on_poll(client: Any, clock: FrozenClock, alice: str) -> None:
    daemon_id = register(client, alice)
    upload_session(client, alice)
    run_id = dispatch(client, alice, questions=["safety"])["eval_run_id"]
    for _ in range(4):
        clock.advance(76)
        client.post(f"/daemons/{daemon_id}/heartbeat", token=alice)
    assert claim(client, alice, daemon_id).status_code == 204  # the overdue offer is expired, not handed out
    assert client.get(f"/eval-runs/{run_id}", token=alice).json["status"] == "timed_out"


# ----------------------------------------------------------------------------- events and result


def test_events_then_result_store_a_server_shaped_run(client: Any, claimed: dict[str, Any], alice: str) -> None:
    run_id = claimed["run_id"]
    post = lambda body: client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=body)  # noqa: E731
    assert post(event(run_id, "eval_started", judge_model="sonnet", total_questions=2)).status_code == 200
    assert post(event(run_id, "eval_question_started", index=1, total=2, category="safety",
                      question_id="sensitive_files")).status_code == 200
    mid = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert mid["model"] == "sonnet"
    assert mid["progress"]["questions"][0]["status"] == "running"
    resp = post(event(run_id, "eval_question_completed", index=1, total=2, category="safety",
                      question_id="sensitive_files", score=5, verdict="fail", input_tokens=1200,
                      output_tokens=80, cache_read_input_tokens=1000, cache_creation_input_tokens=0))
    assert resp.status_code == 200 and resp.json["applied"] is True
    # A retried post of the same completion is accepted without effect.
    again = post(event(run_id, "eval_question_completed", index=1, total=2, category="safety",
                       question_id="sensitive_files", score=5, verdict="pass"))
    assert again.status_code == 200 and again.json["applied"] is False
    post(event(run_id, "eval_question_started", index=2, total=2, category="safety",
               question_id="destructive_commands"))
    post(event(run_id, "eval_question_completed", index=2, total=2, category="safety",
               question_id="destructive_commands", score=3, verdict="warn", input_tokens=1300, output_tokens=90))
    mid = client.get(f"/eval-runs/{run_id}", token=alice).json
    scored = {q["question_id"]: q for q in mid["progress"]["questions"]}
    assert scored["sensitive_files"]["status"] == "scored" and scored["sensitive_files"]["verdict"] == "pass"
    assert scored["sensitive_files"]["usage"]["input_tokens"] == 1200
    assert mid["usage"]["input_tokens"] == 2500 and mid["usage"]["cache_read_input_tokens"] == 1000
    post(event(run_id, "eval_retrospective_started"))
    post(event(run_id, "eval_retrospective_failed", reason="null claude result"))

    verdicts = [verdict("sensitive_files", 5), verdict("destructive_commands", 3)]
    body = result_body(run_id, verdicts, ["sensitive_files", "destructive_commands"])
    stored = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body)
    assert stored.status_code == 200, stored.json
    assert stored.json == {"eval_run_id": run_id, "status": "succeeded", "overall_score": 4, "corrections": []}
    finished = post(event(run_id, "eval_finished", overall_score=4, summary=body["summary"]))
    assert finished.status_code == 200 and finished.json["applied"] is False

    run = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert run["status"] == "succeeded" and run["finished_at"] and run["error"] is None
    assert run["result"] == body
    assert run["usage"] == {"input_tokens": 2500, "output_tokens": 170, "cache_read_input_tokens": 1000,
                            "cache_creation_input_tokens": 0}
    assert run["progress"]["completed"] == 2 and run["progress"]["failed"] == 0
    assert run["retrospective_status"] == "failed"
    # Anything after the terminal state is refused.
    late = post(event(run_id, "eval_question_failed", index=1, total=2, category="safety",
                      question_id="sensitive_files", reason="x"))
    assert late.status_code == 409
    assert client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body).status_code == 409


def test_inconsistent_result_is_corrected_and_reported(client: Any, claimed: dict[str, Any], alice: str) -> None:
    run_id = claimed["run_id"]
    body = result_body(run_id, [verdict("sensitive_files", 5), verdict("destructive_commands", 1)],
                       ["sensitive_files", "destructive_commands"])
    body["overall_score"] = 5
    body["categories"][0]["score"] = 5
    body["categories"][0]["verdict"] = "pass"
    body["categories"][0]["questions"][1]["verdict"] = "pass"  # score 1 is a fail whatever the daemon says
    body["categories"][0]["questions"][0]["recommendation"] = "Be careful."  # dropped at score 5
    resp = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body)
    assert resp.status_code == 200, resp.json
    assert resp.json["overall_score"] == 3
    corrections = "\n".join(resp.json["corrections"])
    assert "overall_score 5 -> 3" in corrections and "destructive_commands verdict pass -> fail" in corrections
    result = client.get(f"/eval-runs/{run_id}", token=alice).json["result"]
    assert result["overall_score"] == 3 and result["categories"][0]["verdict"] == "warn"
    assert result["categories"][0]["questions"][0]["recommendation"] is None


def test_partial_result_marks_missing_questions_failed(client: Any, claimed: dict[str, Any], alice: str) -> None:
    run_id = claimed["run_id"]
    client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=event(
        run_id, "eval_question_failed", index=2, total=2, category="safety", question_id="destructive_commands",
        reason="timeout: the judge ran longer than 300 s"))
    body = result_body(run_id, [verdict("sensitive_files", 4)], ["sensitive_files", "destructive_commands"])
    assert client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body).status_code == 200
    run = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert run["status"] == "succeeded" and run["result"]["summary"].startswith("Evaluated 1/2 questions")
    failed = next(q for q in run["progress"]["questions"] if q["question_id"] == "destructive_commands")
    assert failed["status"] == "failed" and failed["failure_reason"]["kind"] == "timeout"


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda b: b.update(eval_run_id="evr_other"), "eval_run_id_mismatch"),
    (lambda b: b["categories"][0]["questions"].append(verdict("tests_written", 4)), "unknown_question"),
    (lambda b: b["categories"][0]["questions"].append(dict(b["categories"][0]["questions"][0])),
     "duplicate_question"),
    (lambda b: b["categories"][0]["questions"][0].update(score=7), "validation_failed"),
    (lambda b: b.update(extra="x"), "validation_failed"),
])
def test_malformed_results_are_rejected(client: Any, claimed: dict[str, Any], alice: str, mutate: Any,
                                        code: str) -> None:
    run_id = claimed["run_id"]
    body = result_body(run_id, [verdict("sensitive_files", 4)], ["sensitive_files", "destructive_commands"])
    mutate(body)
    resp = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body)
    assert resp.status_code == 400 and resp.json["error"]["code"] == code
    assert client.get(f"/eval-runs/{run_id}", token=alice).json["status"] == "running"


def test_events_are_validated(client: Any, claimed: dict[str, Any], alice: str) -> None:
    run_id = claimed["run_id"]
    bad = [
        {"type": "eval_exploded", "eval_run_id": run_id},
        event(run_id, "eval_question_started", index=3, total=2, category="safety", question_id="sensitive_files"),
        event("evr_other", "eval_started", judge_model="sonnet", total_questions=2),
        event(run_id, "eval_question_started", index=1, total=2, category="quality", question_id="tests_written"),
    ]
    codes = []
    for body in bad:
        resp = client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=body)
        assert resp.status_code == 400, body
        codes.append(resp.json["error"]["code"])
    assert codes == ["validation_failed", "validation_failed", "eval_run_id_mismatch", "unknown_question"]


def test_eval_failed_fails_the_run(client: Any, claimed: dict[str, Any], alice: str) -> None:
    run_id = claimed["run_id"]
    resp = client.post(f"/eval-runs/{run_id}/events", token=alice,
                       json_body=event(run_id, "eval_failed", reason="context load failed"))
    assert resp.status_code == 200 and resp.json["status"] == "failed"
    run = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert run["error"] == {"code": "daemon_failed", "message": "context load failed", "details": None}
    assert {q["status"] for q in run["progress"]["questions"]} == {"failed"}


# -------------------------------------------------------------------- who may post, and when


def test_foreign_and_forged_posts(client: Any, claimed: dict[str, Any], alice: str) -> None:
    run_id = claimed["run_id"]
    body = result_body(run_id, [verdict("sensitive_files", 4)], ["sensitive_files", "destructive_commands"])
    ev = event(run_id, "eval_started", judge_model="sonnet", total_questions=2)
    other_tenant = mint("globex", "alice", [])
    same_tenant = mint("acme", "carol", ["admin"])
    for path, payload in ((f"/eval-runs/{run_id}/result", body), (f"/eval-runs/{run_id}/events", ev)):
        assert client.post(path, token=other_tenant, json_body=payload).status_code == 404
        forbidden = client.post(path, token=same_tenant, json_body=payload)
        assert forbidden.status_code == 403 and forbidden.json["error"]["code"] == "not_daemon_owner"
        assert client.post(path, json_body=payload).status_code == 401
    assert client.get(f"/eval-runs/{run_id}", token=alice).json["status"] == "running"


def test_posts_to_a_server_run_or_unclaimed_job_conflict(client: Any, clock: FrozenClock, alice: str) -> None:
    register(client, alice)
    upload_session(client, alice)
    run_id = dispatch(client, alice, questions=["safety"])["eval_run_id"]
    resp = client.post(f"/eval-runs/{run_id}/events", token=alice,
                       json_body=event(run_id, "eval_started", judge_model="sonnet", total_questions=4))
    assert resp.status_code == 409 and resp.json["error"]["code"] == "job_not_claimed"


def test_late_result_leaves_the_run_timed_out(client: Any, claimed: dict[str, Any], clock: FrozenClock,
                                              alice: str) -> None:
    run_id = claimed["run_id"]
    client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=event(
        run_id, "eval_question_completed", index=1, total=2, category="safety", question_id="sensitive_files",
        score=4, verdict="pass", input_tokens=10, output_tokens=2))
    clock.advance(301)
    body = result_body(run_id, [verdict("sensitive_files", 4)], ["sensitive_files", "destructive_commands"])
    late = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body)
    assert late.status_code == 409 and late.json["error"]["code"] == "run_timed_out"
    run = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert run["status"] == "timed_out" and run["result"] is None and run["usage"]["input_tokens"] == 10
    statuses = {q["question_id"]: q["status"] for q in run["progress"]["questions"]}
    assert statuses == {"sensitive_files": "scored", "destructive_commands": "timed_out"}
    again = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body)
    assert again.status_code == 409 and again.json["error"]["code"] == "run_state_conflict"


def test_oversized_posts_are_refused(client: Any, claimed: dict[str, Any], alice: str) -> None:
    run_id = claimed["run_id"]
    body = result_body(run_id, [verdict("sensitive_files", 4, finding="x" * (1024 * 1024))],
                       ["sensitive_files", "destructive_commands"])
    resp = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=body)
    assert resp.status_code == 413 and resp.json["error"]["code"] == "payload_too_large"
    huge_event = event(run_id, "eval_question_failed", index=1, total=2, category="safety",
                       question_id="sensitive_files", reason="y" * (70 * 1024))
    assert client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=huge_event).status_code == 413
    assert client.post(f"/eval-runs/{run_id}/events", token=alice, body="{not json",
                       headers={"Content-Type": "application/json"}).status_code == 400


# ----------------------------------------------------------------------------------------- cancel


def test_cancel_reaches_the_daemon_through_the_poll(client: Any, claimed: dict[str, Any], alice: str) -> None:
    run_id = claimed["run_id"]
    assert client.post(f"/eval-runs/{run_id}/cancel", token=alice).status_code == 200
    notice = claim(client, alice, claimed["daemon_id"])
    assert notice.status_code == 200
    assert notice.json == {"type": "cancel", "eval_run_id": run_id, "reason": "cancelled by user"}
    assert claim(client, alice, claimed["daemon_id"]).status_code == 204  # delivered once
    late = client.post(f"/eval-runs/{run_id}/events", token=alice,
                       json_body=event(run_id, "eval_failed", reason="cancelled"))
    assert late.status_code == 409
    assert client.get(f"/eval-runs/{run_id}", token=alice).json["status"] == "cancelled"


def test_cancel_before_claim_withdraws_the_job(client: Any, clock: FrozenClock, alice: str) -> None:
    daemon_id = register(client, alice)
    upload_session(client, alice)
    run_id = dispatch(client, alice, questions=["safety"])["eval_run_id"]
    assert client.post(f"/eval-runs/{run_id}/cancel", token=alice).status_code == 200
    assert claim(client, alice, daemon_id).status_code == 204


def test_rerun_offers_the_questions_still_without_a_verdict(client: Any, claimed: dict[str, Any],
                                                             alice: str) -> None:
    run_id, daemon_id = claimed["run_id"], claimed["daemon_id"]
    # sensitive_files is scored by its event only (no finding was ever posted), then the run fails.
    client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=event(
        run_id, "eval_question_completed", index=1, total=2, category="safety", question_id="sensitive_files",
        score=5, verdict="pass", input_tokens=3))
    client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=event(run_id, "eval_failed", reason="boom"))
    run = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert run["status"] == "failed"
    assert {q["question_id"]: q["status"] for q in run["progress"]["questions"]} == {
        "sensitive_files": "scored", "destructive_commands": "failed"}

    rerun = client.post(f"/eval-runs/{run_id}/rerun", token=alice)
    assert rerun.status_code == 202, rerun.json
    job = claim(client, alice, daemon_id).json
    # The score-only question is judged again so the stored result can carry its full verdict.
    assert job["eval_run_id"] == run_id and job["attempt"] == 2
    assert [q["id"] for q in job["questions"]] == ["sensitive_files", "destructive_commands"]
    for index, qid in enumerate(("sensitive_files", "destructive_commands"), start=1):
        started = client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=event(
            run_id, "eval_question_started", index=index, total=2, category="safety", question_id=qid))
        assert started.status_code == 200, started.json
    resp = client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=result_body(
        run_id, [verdict("sensitive_files", 5), verdict("destructive_commands", 3)],
        ["sensitive_files", "destructive_commands"]))
    assert resp.status_code == 200, resp.json
    final = client.get(f"/eval-runs/{run_id}", token=alice).json
    assert final["status"] == "succeeded" and final["error"] is None
    assert final["result"]["summary"].startswith("Evaluated 2/2 questions")
    assert final["usage"]["input_tokens"] == 3


def test_a_daemon_at_capacity_polls_for_cancels_only(client: Any, claimed: dict[str, Any], alice: str) -> None:
    daemon_id = claimed["daemon_id"]
    second = dispatch(client, alice, questions=["quality"])["eval_run_id"]
    assert client.get(f"/daemons/{daemon_id}/jobs?wait=0&claim=false", token=alice).status_code == 204
    assert client.post(f"/eval-runs/{claimed['run_id']}/cancel", token=alice).status_code == 200
    notice = client.get(f"/daemons/{daemon_id}/jobs?wait=0&claim=false", token=alice)
    assert notice.status_code == 200 and notice.json["type"] == "cancel"
    job = claim(client, alice, daemon_id)
    assert job.status_code == 200 and job.json["eval_run_id"] == second
