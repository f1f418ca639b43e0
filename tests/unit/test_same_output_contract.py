"""One contract, two runners: the same assertions run over a server-stored run (written by the run
store exactly as the worker writes it, result built with `aggregate`) and a daemon-stored run (through
the daemon protocol), and the two `GET /eval-runs/{id}` bodies must have the same shape and result."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest

from chalicelib.adapters.run_store import DynamoRunStore
from chalicelib.domain.clock import iso
from chalicelib.domain.evaluation import (
    JudgeVerdict,
    QuestionOutcome,
    SessionEvalCompleted,
    TokenUsage,
    verdict_for_score,
)
from chalicelib.domain.runs import EvalRun, QuestionRef
from chalicelib.judges.aggregation import aggregate
from chalicelib.judges.catalog import get_question
from tests.api.daemon_kit import dispatch, event, register, upload_session
from tests.conftest import mint

QUESTIONS = ["sensitive_files", "destructive_commands", "tests_written", "redundant_calls"]
SCORES = {"sensitive_files": 5, "destructive_commands": 2, "tests_written": 4, "redundant_calls": 3}
VERDICT_KEYS = {"category", "question_id", "score", "verdict", "finding", "evidence", "recommendation", "tools_used",
                "evidence_entries"}
RUN_KEYS = {"eval_run_id", "session_id", "status", "runner", "vendor", "model", "progress", "result", "usage",
            "error", "created_at", "started_at", "finished_at", "deadline_at"}
USAGE_KEYS = {"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}


def verdicts() -> list[JudgeVerdict]:
    out = []
    for qid in QUESTIONS:
        q = get_question(qid)
        assert q is not None
        score = SCORES[qid]
        out.append(JudgeVerdict(category=q.category, question_id=qid, score=score, verdict=verdict_for_score(score),
                                finding=f"Finding for {qid}.", evidence="turn 3",
                                recommendation=None if score == 5 else "Add a rule to AGENTS.md."))
    return out


def selected() -> list[Any]:
    return [get_question(q) for q in QUESTIONS]


def usage_for(qid: str) -> TokenUsage:
    return TokenUsage(input_tokens=1000 + len(qid), output_tokens=60, cache_read_input_tokens=900)


def store_server_run(container: Any, alice: str) -> str:
    """What the SQS worker stores for a succeeded run, through the same store calls."""
    store = DynamoRunStore(container.dynamodb, container.config.table_name)
    now = container.clock.now()
    run = EvalRun(eval_run_id="evr_server", tenant="acme", session_id="sess-1", created_by="alice", runner="server",
                  vendor="anthropic", model="claude-sonnet-4-6",
                  questions=[QuestionRef(question_id=q.id, category=q.category) for q in selected()],
                  created_at=iso(now), deadline_at=iso(now.replace(year=now.year + 1)), run_timeout_seconds=300)
    store.create(run)
    store.start("acme", run.eval_run_id, now=iso(now), outcomes=[
        QuestionOutcome(question_id=r.question_id, category=r.category, status="running") for r in run.questions])
    outcomes = [QuestionOutcome(question_id=v.question_id, category=v.category, status="scored", judge_verdict=v,
                                usage=usage_for(v.question_id), latency_ms=1200, attempts=1) for v in verdicts()]
    total = TokenUsage()
    for o in outcomes:
        total = total + o.usage
    store.record_outcomes("acme", run.eval_run_id, outcomes, total)
    result = aggregate(run.eval_run_id, "sonnet", selected(), verdicts(), None)
    store.finish("acme", run.eval_run_id, status="succeeded", now=iso(now), usage=total, result=result,
                 extra={"retrospective_status": "skipped"})
    return run.eval_run_id


def store_daemon_run(client: Any, alice: str) -> str:
    daemon_id = register(client, alice)
    run_id = str(dispatch(client, alice, questions=QUESTIONS)["eval_run_id"])
    assert client.get(f"/daemons/{daemon_id}/jobs?wait=0", token=alice).status_code == 200
    post = lambda body: client.post(f"/eval-runs/{run_id}/events", token=alice, json_body=body)  # noqa: E731
    post(event(run_id, "eval_started", judge_model="sonnet", total_questions=len(QUESTIONS)))
    for index, v in enumerate(verdicts(), start=1):
        common = {"index": index, "total": len(QUESTIONS), "category": v.category, "question_id": v.question_id}
        assert post(event(run_id, "eval_question_started", **common)).status_code == 200
        u = usage_for(v.question_id)
        assert post(event(run_id, "eval_question_completed", **common, score=v.score, verdict=v.verdict,
                          **u.model_dump())).status_code == 200
    payload = aggregate(run_id, "sonnet", selected(), verdicts(), None).model_dump(mode="json")
    assert client.post(f"/eval-runs/{run_id}/result", token=alice, json_body=payload).status_code == 200
    return run_id


def assert_eval_run_contract(view: dict[str, Any]) -> None:
    """The assertions every succeeded run must pass, whichever runner produced it."""
    assert set(view) >= RUN_KEYS
    assert view["status"] == "succeeded" and view["error"] is None
    for key in ("created_at", "started_at", "finished_at", "deadline_at"):
        assert view[key].endswith("Z")
    assert set(view["usage"]) == USAGE_KEYS
    result = view["result"]
    assert set(result) == {"eval_run_id", "judge_model", "categories", "overall_score", "summary", "retrospective"}
    parsed = SessionEvalCompleted.model_validate(result)
    assert parsed.eval_run_id == view["eval_run_id"]
    for category in result["categories"]:
        assert set(category) == {"name", "score", "verdict", "questions"}
        mean = Fraction(sum(v["score"] for v in category["questions"]), len(category["questions"]))
        assert category["score"] == round(mean) and category["verdict"] == verdict_for_score(category["score"])
        for v in category["questions"]:
            assert set(v) == VERDICT_KEYS and v["category"] == category["name"]
            assert v["verdict"] == verdict_for_score(v["score"])
    # The stored result is exactly what the shared aggregation derives from its own verdicts.
    recomputed = aggregate(parsed.eval_run_id, parsed.judge_model, selected(), parsed.verdicts(), parsed.retrospective)
    assert recomputed == parsed
    progress = view["progress"]
    assert progress["total"] == len(QUESTIONS) and progress["completed"] == len(parsed.verdicts())
    assert progress["failed"] == 0
    for q in progress["questions"]:
        assert q["status"] == "scored" and q["verdict"] == verdict_for_score(q["score"])
        assert set(q["usage"]) == USAGE_KEYS
    total = {k: sum(q["usage"][k] for q in progress["questions"]) for k in USAGE_KEYS}
    assert view["usage"] == total


def shape(value: Any) -> Any:
    """Keys and JSON types, recursively: what a client parsing the body depends on."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


@pytest.fixture
def alice() -> str:
    return mint("acme", "alice", [])


@pytest.fixture
def runs(client: Any, container: Any, alice: str) -> dict[str, dict[str, Any]]:
    upload_session(client, alice)
    ids = {"server": store_server_run(container, alice), "daemon": store_daemon_run(client, alice)}
    return {runner: client.get(f"/eval-runs/{run_id}", token=alice).json for runner, run_id in ids.items()}


@pytest.mark.parametrize("runner", ["server", "daemon"])
def test_contract_holds_for_each_runner(runs: dict[str, dict[str, Any]], runner: str) -> None:
    assert runs[runner]["runner"] == runner
    assert_eval_run_contract(runs[runner])


def test_both_runners_store_the_same_output(runs: dict[str, dict[str, Any]]) -> None:
    server, daemon = runs["server"], runs["daemon"]
    strip: Callable[[dict[str, Any]], dict[str, Any]] = lambda r: {**r, "eval_run_id": "-"}  # noqa: E731
    assert strip(server["result"]) == strip(daemon["result"])
    assert server["usage"] == daemon["usage"]
    assert shape(strip(server["result"])) == shape(strip(daemon["result"]))
    # Same progress entries per question (latency is measured, so only its type is compared).
    # Cost follows each run's model price (the daemon's "sonnet" alias has none), so it is left out.
    for s, d in zip(server["progress"]["questions"], daemon["progress"]["questions"], strict=True):
        assert {**s, "latency_ms": 0, "cost_usd": 0} == {**d, "latency_ms": 0, "cost_usd": 0}
    # The whole view has the same keys; only values that name the runner or depend on it differ.
    runner_specific = {"vendor", "model", "daemon_id", "duration_ms", "created_at", "started_at", "finished_at",
                       "deadline_at", "eval_run_id", "runner", "retrospective_status", "context", "cost"}
    assert set(server) == set(daemon)
    assert {k: v for k, v in server.items() if k not in runner_specific | {"result", "progress"}} == \
           {k: v for k, v in daemon.items() if k not in runner_specific | {"result", "progress"}}
