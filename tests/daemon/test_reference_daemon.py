"""The reference daemon against the API over HTTP, with fake `claude`/`codex` executables on PATH:
scripted verdicts, a crash, malformed output, a hang killed by cancel and by the deadline."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.clock import iso
from daemon.agent import Daemon
from daemon.client import ApiClient
from tests.daemon.conftest import read_log, wait_for
from tests.daemon.reference_daemon_kit import dispatch, finished, get_run

FOUR = ["sensitive_files", "destructive_commands", "tests_written", "redundant_calls"]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_claude_run_end_to_end(api: ApiClient, make_daemon: Callable[..., Daemon],
                               fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    log = fake_cli({"questions": {"sensitive_files": {"score": 5}, "destructive_commands": {"score": 2},
                                  "tests_written": {"score": 4}, "redundant_calls": {"score": 3}}})
    daemon = make_daemon(concurrency=2)
    run_id = dispatch(api, FOUR)
    outcome = finished(daemon, run_id)
    assert outcome.status == "succeeded", outcome.detail

    run = get_run(api, run_id)
    assert run["status"] == "succeeded" and run["runner"] == "daemon" and run["model"] == "sonnet"
    result = run["result"]
    assert result["eval_run_id"] == run_id and result["judge_model"] == "sonnet"
    assert [c["name"] for c in result["categories"]] == ["safety", "quality", "efficiency"]
    scores = {v["question_id"]: v["score"] for c in result["categories"] for v in c["questions"]}
    assert scores == {"sensitive_files": 5, "destructive_commands": 2, "tests_written": 4, "redundant_calls": 3}
    assert result["overall_score"] == 4 and result["retrospective"]["suggestions"]  # safety 3.5 -> 4 (to even)
    assert result["summary"] == "Evaluated 4/4 questions across 3 categories. Overall: 4/5 (pass)."
    assert run["retrospective_status"] == "succeeded"
    # Real token usage, as the CLI printed it, per question and in total.
    per_question = [q["usage"]["input_tokens"] for q in run["progress"]["questions"]]
    assert all(n > 1000 for n in per_question)
    assert run["usage"]["input_tokens"] == sum(per_question) and run["usage"]["output_tokens"] > 0
    assert all(q["status"] == "scored" and q["latency_ms"] is not None for q in run["progress"]["questions"])

    calls = [r for r in read_log(log) if "argv" in r]
    assert len(calls) == 5  # 4 questions + the retrospective
    argv = next(c["argv"] for c in calls if c["question_id"] == "sensitive_files")  # a question without tools
    for flag in ("-p", "--strict-mcp-config", "--disable-slash-commands"):
        assert flag in argv
    assert argv[argv.index("--output-format") + 1] == "json" and argv[argv.index("--tools") + 1] == ""
    assert argv[argv.index("--max-turns") + 1] == "3" and argv[argv.index("--model") + 1] == "sonnet"
    assert len({c["cwd"] for c in calls}) == 5 and not any(os.path.exists(c["cwd"]) for c in calls)
    # --concurrency 2: never more than two judge processes at once.
    spans = [(r["started"], r["ended"]) for r in read_log(log) if "ended" in r]
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 2


def test_codex_run_reports_cached_tokens(api: ApiClient, make_daemon: Callable[..., Daemon],
                                         fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    log = fake_cli({"default": {"score": 4}})
    daemon = make_daemon(["codex"], retrospective=False)
    run_id = dispatch(api, ["sensitive_files", "tests_written"])
    assert finished(daemon, run_id).status == "succeeded"
    run = get_run(api, run_id)
    assert run["result"]["judge_model"] == "codex" and run["result"]["retrospective"] is None
    assert run["usage"]["cache_read_input_tokens"] > 0 and run["usage"]["input_tokens"] > 0
    argv = next(r for r in read_log(log) if "argv" in r)["argv"]
    assert argv[:2] == ["exec", "--json"] and argv[-1] == "-"
    assert "--skip-git-repo-check" in argv and argv[argv.index("--sandbox") + 1] == "read-only"


def test_crash_and_malformed_output_fail_only_their_questions(
        api: ApiClient, make_daemon: Callable[..., Daemon], fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    fake_cli({"default": {"score": 4}, "questions": {"destructive_commands": {"mode": "crash"},
                                                     "tests_written": {"mode": "malformed"}},
              "retrospective": {"mode": "malformed"}})
    daemon = make_daemon()
    run_id = dispatch(api, FOUR)
    assert finished(daemon, run_id).status == "succeeded"
    run = get_run(api, run_id)
    by_id = {q["question_id"]: q for q in run["progress"]["questions"]}
    assert by_id["destructive_commands"]["status"] == "failed"
    assert by_id["destructive_commands"]["failure_reason"]["kind"] == "internal"
    assert "simulated crash" in by_id["destructive_commands"]["failure_reason"]["message"]
    assert by_id["tests_written"]["failure_reason"]["kind"] == "invalid_output"
    assert run["result"]["summary"].startswith("Evaluated 2/4 questions across 2 categories")
    assert run["result"]["retrospective"] is None and run["retrospective_status"] == "failed"


def test_all_judges_failing_fails_the_run(api: ApiClient, make_daemon: Callable[..., Daemon],
                                          fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    fake_cli({"default": {"mode": "crash"}})
    daemon = make_daemon()
    run_id = dispatch(api, ["sensitive_files", "tests_written"])
    assert finished(daemon, run_id).status == "failed"
    run = get_run(api, run_id)
    assert run["status"] == "failed" and run["error"]["message"] == "all judge invocations failed"


def test_cancel_kills_the_hanging_judge(api: ApiClient, make_daemon: Callable[..., Daemon],
                                        fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    log = fake_cli({"default": {"score": 4}, "questions": {"sensitive_files": {"mode": "hang"}}})
    daemon = make_daemon(concurrency=1)
    run_id = dispatch(api, ["sensitive_files", "tests_written"])
    hung = wait_for(lambda: next((r for r in read_log(log) if "child_pid" in r), None), "the judge to hang")
    assert alive(hung["pid"]) and alive(hung["child_pid"])
    status, _ = api.call("POST", f"/eval-runs/{run_id}/cancel")
    assert status == 200
    outcome = finished(daemon, run_id)
    assert outcome.status == "cancelled"
    wait_for(lambda: not alive(hung["pid"]) and not alive(hung["child_pid"]), "the judge's process group to die")
    run = get_run(api, run_id)
    assert run["status"] == "cancelled"
    # The queued question never started: with --concurrency 1 it waited for the hanging one.
    assert not any(r.get("question_id") == "tests_written" for r in read_log(log))


def test_deadline_kills_the_judge_and_times_out_the_run(
        api: ApiClient, make_daemon: Callable[..., Daemon], fake_cli: Callable[[dict[str, Any]], Path],
        container: Any) -> None:
    log = fake_cli({"questions": {"sensitive_files": {"mode": "hang"}}})
    daemon = make_daemon(start=False)
    run_id = dispatch(api, ["sensitive_files"])
    # Bring the run's deadline (and its job's) to a few seconds from now before the daemon claims it
    # (enough for the claim and the context fetch on a busy machine).
    deadline = iso(datetime.now(UTC) + timedelta(seconds=8))
    container.run_store.set_fields("acme", run_id, {"deadline_at": deadline})
    job = container.daemon_store.get_job("acme", daemon.daemon_id, run_id)
    container.daemon_store.put_job(job.model_copy(update={"deadline_at": deadline}), expires_at=2**31)
    daemon.start(register=False)
    hung = wait_for(lambda: next((r for r in read_log(log) if "child_pid" in r), None), "the judge to hang")
    outcome = finished(daemon, run_id)
    assert outcome.status == "timed_out"
    wait_for(lambda: not alive(hung["pid"]) and not alive(hung["child_pid"]), "the judge's process group to die")
    run = get_run(api, run_id)
    assert run["status"] == "timed_out" and run["error"]["code"] == "deadline_exceeded"
    assert run["progress"]["questions"][0]["status"] == "timed_out"


def test_daemon_registers_again_when_its_presence_expired(
        api: ApiClient, make_daemon: Callable[..., Daemon], fake_cli: Callable[[dict[str, Any]], Path],
        container: Any) -> None:
    daemon = make_daemon(start=False)
    old_id = daemon.daemon_id
    # Simulate a laptop that slept past the presence TTL: the stored daemon has expired.
    record = container.daemon_store.list_daemons("acme", "alice")[0]
    container.dynamodb.update_item(
        TableName=container.config.table_name, Key={"pk": {"S": "TENANT#acme"}, "sk": {"S": f"DAEMON#alice#{old_id}"}},
        UpdateExpression="SET expires_at = :e", ExpressionAttributeValues={":e": {"N": str(record.expires_at - 3600)}})
    daemon.start(register=False)
    wait_for(lambda: daemon.daemon_id != old_id, "the daemon to register again")
    run_id = dispatch(api, ["sensitive_files"])
    assert finished(daemon, run_id).status == "succeeded"


def test_a_tenant_catalog_is_judged_by_the_daemon_from_its_job(api: ApiClient, make_daemon: Callable[..., Daemon],
                                                               fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    from chalicelib.judges.catalog import QUESTIONS
    from tests.conftest import mint

    admin = ApiClient(api._transport, mint("acme", "root", ["admin"]))
    custom = {"id": "changelog_updated", "category": "docs", "text": "Did the agent add a CHANGELOG entry?",
              "rubric": "DAEMON-RUBRIC-MARKER: 1 when no entry was added"}
    status, body = admin.call("PUT", "/admin/eval-questions",
                              {"questions": [custom, *({"id": q.id} for q in QUESTIONS)]})
    assert status == 200, body
    # The fake CLI scores a prompt carrying the rubric 1: the rubric reached the daemon's judge.
    log = fake_cli({"default": {"score": 5}, "prompt_contains": {"DAEMON-RUBRIC-MARKER": {"score": 1}}})
    daemon = make_daemon()
    run_id = dispatch(api, ["docs", "sensitive_files"])
    outcome = finished(daemon, run_id)
    assert outcome.status == "succeeded", outcome.detail

    run = get_run(api, run_id)
    assert run["catalog_version"] == body["version"]
    result = run["result"]
    assert [(c["name"], c["score"]) for c in result["categories"]] == [("safety", 5), ("docs", 1)]
    assert result["overall_score"] == 3  # (5 + 1) / 2
    assert {r["question_id"] for r in read_log(log) if "argv" in r} == {"changelog_updated", "sensitive_files",
                                                                       "retrospective"}


def _big_session(api: ApiClient, session_id: str = "sess-big") -> None:
    """~20K tokens of conversation: far over the small context limits the fake CLIs are given below."""
    trace = [{"kind": "user_message", "timestamp": "2026-11-29T10:00:00.000Z", "text": "Fix the flaky parser test."}]
    trace += [{"kind": "assistant_message", "timestamp": f"2026-11-29T10:{i // 60:02d}:{i % 60:02d}.000Z",
               "text": f"step {i} " + "y" * 400} for i in range(1, 200)]
    status, body = api.call("PUT", f"/sessions/{session_id}", {"trace": trace})
    assert status in (200, 201), body


def _dispatch_big(api: ApiClient, questions: list[str]) -> str:
    status, body = api.call("POST", "/sessions/sess-big/eval-runs", {"runner": "daemon", "questions": questions})
    assert status == 202, body
    return str(body["eval_run_id"])


# Questions judged without session tools: a tool question's conversation reserves room for its tool answers
# (about 11K tokens), more than the small limits below leave.
NO_TOOLS = ["sensitive_files", "security_vulnerabilities", "followed_plan", "redundant_calls"]


def test_a_cli_that_states_its_context_limit_gets_one_refit_for_all_judges(
        api: ApiClient, make_daemon: Callable[..., Daemon], fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    _big_session(api)
    log = fake_cli({"default": {"score": 4}, "context_limit": {"tokens": 8_000, "numbers": True}})
    daemon = make_daemon(concurrency=2, retrospective=False)
    run_id = _dispatch_big(api, NO_TOOLS)
    assert finished(daemon, run_id).status == "succeeded"

    run = get_run(api, run_id)
    assert all(q["status"] == "scored" for q in run["progress"]["questions"])
    calls = [r for r in read_log(log) if "prompt_chars" in r]
    refused = [r for r in calls if r["mode"] == "too_long"]
    # Only judges already running when the first refusal came back were refused (at most the 2 slots);
    # every later call carried the refit context, under the stated limit.
    assert 1 <= len(refused) <= 2 and len(calls) == len(NO_TOOLS) + len(refused)
    assert all(r["prompt_chars"] // 4 <= 8_000 for r in calls if r["mode"] != "too_long")


def test_a_cli_that_states_no_number_gets_the_trace_shrunk_step_by_step(
        api: ApiClient, make_daemon: Callable[..., Daemon], fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    _big_session(api)
    log = fake_cli({"default": {"score": 4}, "context_limit": {"tokens": 17_000, "numbers": False}})
    daemon = make_daemon(["codex"], concurrency=1, retrospective=False)
    run_id = _dispatch_big(api, ["sensitive_files", "followed_plan"])
    assert finished(daemon, run_id).status == "succeeded"
    calls = [r for r in read_log(log) if "prompt_chars" in r]
    refused = [r["prompt_chars"] for r in calls if r["mode"] == "too_long"]
    # A quarter less each time until the CLI took it; both questions then went out on that context.
    assert len(refused) >= 2 and refused == sorted(refused, reverse=True)
    assert [r["mode"] for r in calls[len(refused):]] == ["ok", "ok"]
    assert all(r["prompt_chars"] // 4 <= 17_000 for r in calls[len(refused):])


def test_a_limit_below_the_fixed_prompt_fails_the_run_context_too_small(
        api: ApiClient, make_daemon: Callable[..., Daemon], fake_cli: Callable[[dict[str, Any]], Path]) -> None:
    _big_session(api)
    fake_cli({"default": {"score": 4}, "context_limit": {"tokens": 600, "numbers": True}})
    daemon = make_daemon(concurrency=2, retrospective=False)
    run_id = _dispatch_big(api, ["sensitive_files", "followed_plan"])
    assert finished(daemon, run_id).status == "failed"
    run = get_run(api, run_id)
    assert run["error"]["code"] == "context_too_small"
    assert "600-token limit" in run["error"]["message"]
    assert all(q["failure_reason"]["kind"] == "context_overflow" for q in run["progress"]["questions"])


def test_a_job_with_tool_questions_keeps_room_for_their_tool_answers() -> None:
    """The same stated limit fits a job of text questions and not one whose tool question's conversation
    must hold its tool answers too: that job fails context_too_small instead of being refused again."""
    from chalicelib.domain.context_limits import ContextTooSmall
    from chalicelib.judges.catalog import QUESTIONS
    from daemon.context_refit import SharedContext

    doc = {"session_id": "s", "session_chain": ["s"], "compaction": {"threshold_bytes": 2000},
           "trace": [{"kind": "assistant_message", "timestamp": "2026-11-29T10:00:00.000Z", "text": "y" * 400}
                     for _ in range(200)]}
    text_only = [q for q in QUESTIONS if not q.needs_tools]
    with_tools = [q for q in QUESTIONS if q.needs_tools]

    def shared(questions: list[Any]) -> SharedContext:
        return SharedContext(doc, session_id="s", run_id="r", model="sonnet", requested_threshold=2000,
                             questions=questions, fetch=lambda _t: doc, render=lambda context_json: context_json)

    refused = "prompt is too long: 21000 tokens > 12000 maximum"
    text_job = shared(text_only)
    text_job.refit(0, refused, len(text_job.json))
    assert text_job.generation == 1 and len(text_job.json) // 4 < 12_000
    tool_job = shared(with_tools)
    with pytest.raises(ContextTooSmall):
        tool_job.refit(0, refused, len(tool_job.json))
