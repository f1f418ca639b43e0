"""The daemon's session tools: its MCP server (stdio JSON-RPC, the job's data only, the six-call limit and bad
calls as tool errors), a judge call that uses it — also inside bubblewrap — and a daemon run whose tool
questions read the truncated output, redacted, and cite it."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.agent import Daemon
from daemon.client import ApiClient, UrllibTransport
from daemon.judges import CliJudge, JudgeName, ProcessGroup, isolated_env
from daemon.mcp_server import Server, load_tools, serve
from daemon.sandbox import Bubblewrap, SandboxUnavailable, Unsandboxed, choose_sandbox
from daemon.session_tools import ALLOWED_TOOLS, JobTools, mcp_python
from tests.conftest import mint
from tests.daemon.conftest import FAKE_CLI_DIR, read_log
from tests.daemon.reference_daemon_kit import dispatch, finished, get_run

SECRET = "ghp_R7tY2uI9oP4aS1dF6gH3jK8lZ5xC0vB2nM7q"
BIG = "building target\n" * 3000 + f"GITHUB_TOKEN={SECRET}\nerror: link failed in src/net.c"
SCHEMA = {"type": "object", "properties": {"evidence_entries": {"type": "array"}}}
JUDGES: list[JudgeName] = ["claude", "codex"]


def context() -> dict[str, Any]:
    trace = [{"pos": 0, "kind": "user_message", "timestamp": "t", "text": "Build it."},
             {"pos": 1, "kind": "tool_invocation", "timestamp": "t", "tool": "Bash", "call_id": "b1",
              "arguments": {"command": "make"}},
             {"pos": 2, "kind": "tool_result", "timestamp": "t", "tool": "Bash", "call_id": "b1",
              "output": "<truncated: 48000 bytes, kind=Bash>", "is_error": True, "truncated": True,
              "output_bytes": 48000}]
    return {"session_id": "s1", "session_chain": ["s1"], "trace": trace}


def job_tools(python: str | None = None) -> JobTools:
    return JobTools.from_context(context(), {2: "building target\n...\nerror: link failed in src/net.c"},
                                 python=python or mcp_python(False))


def rpc(server: Server, *messages: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    serve(server, io.StringIO("".join((m if isinstance(m, str) else json.dumps(m)) + "\n" for m in messages)), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def call(i: int, name: str, arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def test_the_mcp_server_speaks_json_rpc_and_answers_from_the_job_data_only(tmp_path: Path) -> None:
    installed = job_tools().install(str(tmp_path))
    server = Server(load_tools(installed.config["mcpServers"]["session"]["args"][3]), installed.log_path)
    answers = rpc(server,
                  {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05"}},
                  {"jsonrpc": "2.0", "method": "notifications/initialized"},
                  {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                  call(3, "get_tool_result", {"call_id": "b1"}),
                  call(4, "get_tool_result", {"call_id": "missing"}),
                  "{not json", {"jsonrpc": "2.0", "id": 5, "method": "resources/list"})
    assert answers[0]["result"]["protocolVersion"] == "2024-11-05"
    assert answers[0]["result"]["serverInfo"]["name"] == "eval-runner-session"
    assert [t["name"] for t in answers[1]["result"]["tools"]] == ["get_session_summary", "search_session",
                                                                 "get_tool_result"]
    fetched = json.loads(answers[2]["result"]["content"][0]["text"])
    assert fetched["pos"] == 2 and fetched["output"].endswith("link failed in src/net.c")
    assert answers[3]["result"]["isError"] is True
    assert "No tool call with call_id 'missing'" in answers[3]["result"]["content"][0]["text"]
    assert answers[4]["error"]["code"] == -32700 and answers[5]["error"]["code"] == -32601
    assert installed.calls() == [{"tool": "get_tool_result", "arguments": {"call_id": "b1"}, "is_error": False},
                                 {"tool": "get_tool_result", "arguments": {"call_id": "missing"}, "is_error": True}]


def test_the_seventh_call_is_refused_and_left_out_of_the_calls(tmp_path: Path) -> None:
    installed = job_tools().install(str(tmp_path))
    server = Server(load_tools(installed.config["mcpServers"]["session"]["args"][3]), installed.log_path)
    answers = rpc(server, *(call(i, "get_session_summary", {}) for i in range(7)))
    assert [a["result"]["isError"] for a in answers] == [False] * 6 + [True]
    assert "limit of 6 tool calls" in answers[6]["result"]["content"][0]["text"]
    assert len(installed.calls()) == 6


def _run_judge(name: JudgeName, sandbox: Any, tmp_path: Path, python: str) -> Any:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"log": str(tmp_path / "log.jsonl")}))
    env = isolated_env()
    env["PATH"] = f"{FAKE_CLI_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["FAKE_JUDGE_SCRIPT"] = str(script)
    if isinstance(sandbox, Bubblewrap):  # the script and its log live outside the call's directory
        sandbox = Bubblewrap(sandbox.executable, share=(str(tmp_path),))
    judge = CliJudge(name, sandbox=sandbox)
    return judge.run("Category: quality\nID: tests_written\nJudge it.", SCHEMA, group=ProcessGroup(), env=env,
                     tools=job_tools(python))


@pytest.mark.parametrize("name", JUDGES)
def test_a_judge_call_gets_the_tools_and_its_calls_come_from_the_server_log(name: JudgeName, tmp_path: Path) -> None:
    result = _run_judge(name, Unsandboxed(), tmp_path, mcp_python(False))
    assert result.text is not None, result.failure
    assert [c["tool"] for c in result.tool_calls] == ["get_session_summary"]  # the prompt shows no marker
    assert json.loads(result.text)["evidence_entries"] == [0, 1, 2]  # what the outline named
    (invocation,) = [r for r in read_log(tmp_path / "log.jsonl") if "argv" in r]
    argv = invocation["argv"]
    if name == "claude":
        assert argv[argv.index("--allowedTools") + 1] == ",".join(ALLOWED_TOOLS)
        assert argv[argv.index("--max-turns") + 1] == "15" and argv[argv.index("--tools") + 1] == ""
    else:
        assert any(a.startswith("mcp_servers.session.command=") for a in argv)


@pytest.mark.parametrize("name", JUDGES)
def test_the_mcp_server_works_inside_the_bubblewrap_sandbox(name: JudgeName, tmp_path: Path) -> None:
    try:
        sandbox = choose_sandbox("bwrap")
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap cannot run here ({exc}); `make judge-sandbox` installs it")
    python = mcp_python(True)
    assert python.startswith("/usr/")  # only the system's directories are visible in the sandbox
    result = _run_judge(name, sandbox, tmp_path, python)
    assert result.text is not None, result.failure
    assert [c["tool"] for c in result.tool_calls] == ["get_session_summary"]
    assert json.loads(result.text)["evidence_entries"] == [0, 1, 2]  # what the outline named


def test_a_daemon_run_gives_tool_questions_the_truncated_output_redacted_and_facts_when_asked(
        api: ApiClient, make_daemon: Callable[..., Daemon], fake_cli: Callable[[dict[str, Any]], Path],
        container: Any, api_url: str) -> None:
    trace = [{"kind": "user_message", "timestamp": "2026-11-29T10:00:00.000Z", "text": "Build the client."},
             {"kind": "tool_invocation", "timestamp": "2026-11-29T10:00:01.000Z", "tool": "Bash", "call_id": "m1",
              "arguments": {"command": "make"}},
             {"kind": "tool_result", "timestamp": "2026-11-29T10:00:02.000Z", "tool": "Bash", "call_id": "m1",
              "output": BIG, "is_error": True}]
    status, _ = api.call("PUT", "/sessions/sess-1", {"trace": trace, "repository": "github.com/acme/net"})
    assert status in (200, 201)
    log = fake_cli({"questions": {"tests_written": {"score": 2, "retain_fact": "The build needs libssl-dev."}}})
    daemon = make_daemon(["codex"])
    run_id = dispatch(api, ["sensitive_files", "tests_written"])
    outcome = finished(daemon, run_id)
    assert outcome.status == "succeeded", outcome.detail

    verdicts = {v["question_id"]: v for c in get_run(api, run_id)["result"]["categories"] for v in c["questions"]}
    # The judge fetched the output the trace shows truncated, by the call_id on its marker.
    assert verdicts["tests_written"]["tools_used"] == [
        {"tool": "get_tool_result", "arguments": {"call_id": "m1"}, "is_error": False}]
    assert verdicts["tests_written"]["evidence_entries"] == [2]
    assert verdicts["sensitive_files"]["tools_used"] is None  # a question without tools gets none
    answers = next(r["tool_answers"] for r in read_log(log) if r.get("question_id") == "tests_written"
                   and "tool_answers" in r)
    output = json.loads(answers[0])["output"]
    assert output.endswith("error: link failed in src/net.c") and "<redacted:github_token>" in output
    assert all(SECRET not in a for a in answers)
    facts = api.get("/judge-facts?repository=github.com%2Facme%2Fnet")["items"]
    assert [f["text"] for f in facts] == ["The build needs libssl-dev."]
    assert not any(r.get("prompt_has_facts") for r in read_log(log))

    # With the tenant's setting on, the next job carries the facts and every judge's prompt has them.
    admin = ApiClient(UrllibTransport(api_url), mint("acme", "root", ["admin"]))
    admin.call("PUT", "/admin/settings/eval-runner", {"judge_facts_in_prompts": True})
    container.settings_store.invalidate("acme")
    second = dispatch(api, ["sensitive_files"])
    assert finished(daemon, second).status == "succeeded"
    (asked,) = [r for r in read_log(log) if "argv" in r and r["question_id"] == "sensitive_files"][-1:]
    assert asked["prompt_has_facts"] is True
