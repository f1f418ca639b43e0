"""Shared implementation of the fake `claude` and `codex` executables (dev and tests only).

They accept the exact flags the daemon passes, refuse to run without the isolation the daemon
promises (empty working directory, no nested-agent or token variables), and answer with scripted
verdicts in each CLI's real output format, with token usage. Behaviour per question comes from
the JSON file named by FAKE_JUDGE_SCRIPT:

    {"default": {"score": 4},
     "questions": {"<question_id>": {"score": 2} | {"mode": "hang" | "crash" | "malformed"}},
     "prompt_contains": {"<text>": {"score": 1}},   (wins over "questions" when the prompt has the text)
     "retrospective": {"mode": "ok" | "malformed" | "crash"},
     "context_limit": {"tokens": N, "numbers": true},   (a prompt over N tokens, chars/4, is refused as
                                                         too long, with each CLI's message; numbers: false
                                                         leaves the counts out, like `claude`'s own text)
     "log": "/path/to/invocations.jsonl"}

Without it every question gets a deterministic score from 3 to 5. Stdlib only. A question's spec may also
carry `"retain_fact": "<text>"` and `"tool_calls": [{"name", "arguments"}]`.

Session tools: when the daemon hands over its MCP server (claude `--mcp-config`, codex `-c mcp_servers.session.*`)
the fake starts it, speaks MCP to it (initialize, tools/list, tools/call) and calls the spec's `tool_calls`, or
by default `get_tool_result` of the first output the trace shows truncated (else `get_session_summary`; claude
only what `--allowedTools` allows); the verdict cites the positions the last answer named in `evidence_entries`.

A prompt line `READ-FILE: <path>` (what a prompt planted in a transcript would ask for) makes the fake
behave like an agent that obeys it with whatever file access its process has: the file's first line
(or why it could not be read) goes into the finding. The daemon's sandbox tests use it to show a
judge cannot read the daemon owner's files.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

_CLAUDE_FLAGS = ("-p", "--output-format", "--json-schema", "--tools", "--strict-mcp-config",
                 "--disable-slash-commands", "--max-turns")
_CODEX_FLAGS = ("exec", "--json", "--output-schema", "--skip-git-repo-check", "features.shell_tool=false")
_FORBIDDEN_ENV = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "EVAL_RUNNER_TOKEN")


def _script() -> dict[str, Any]:
    path = os.environ.get("FAKE_JUDGE_SCRIPT")
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def _log(script: dict[str, Any], record: dict[str, Any]) -> None:
    path = script.get("log") or os.environ.get("FAKE_JUDGE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _fail(message: str, code: int = 2) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def _arg(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def _obey_planted_reads(prompt: str) -> str:
    found = []
    for path in re.findall(r"READ-FILE: (\S+)", prompt):
        try:
            with open(os.path.expanduser(path), encoding="utf-8", errors="replace") as fh:
                found.append(f" {path} says: {fh.readline().strip()}")
        except OSError as exc:
            found.append(f" {path} is unreadable ({type(exc).__name__})")
    return "".join(found)


def _verdict(prompt: str, spec: dict[str, Any], question_id: str) -> dict[str, Any]:
    category = (re.findall(r"^Category: (\S+)$", prompt, re.M) or ["unknown"])[-1]
    score = int(spec.get("score", 3 + sum(question_id.encode()) % 3))
    return {"category": category, "question_id": question_id, "score": score,
            "verdict": "pass" if score >= 4 else "warn" if score >= 2 else "fail",
            "finding": f"Scripted finding for {question_id}: the trace shows the relevant turns."
                       + _obey_planted_reads(prompt),
            "evidence": "turn 1", "recommendation": None if score == 5 else "Add a rule to AGENTS.md.",
            "retain_fact": None}


def _mcp_server(cli: str, argv: list[str]) -> tuple[str, list[str]] | None:
    """The session tools' MCP server the daemon handed over: claude's `--mcp-config` (JSON), codex's
    `-c mcp_servers.session.command=…` / `.args=…` (TOML values that are JSON here)."""
    if cli == "claude":
        raw = _arg(argv, "--mcp-config")
        if not raw:
            return None
        server = json.loads(raw)["mcpServers"]["session"]
        return str(server["command"]), [str(a) for a in server["args"]]
    found: dict[str, Any] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-c" and value.startswith("mcp_servers.session."):
            key, _, raw_value = value.removeprefix("mcp_servers.session.").partition("=")
            found[key] = json.loads(raw_value)
    return (str(found["command"]), [str(a) for a in found["args"]]) if "command" in found else None


class _McpClient:
    """Just enough of an MCP client (stdio, JSON-RPC a line) to call the daemon's session tools."""

    def __init__(self, command: str, args: list[str]) -> None:
        self._proc = subprocess.Popen([command, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._ids = 0
        init = self._request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                            "clientInfo": {"name": "fake-judge", "version": "1"}})
        assert init["serverInfo"]["name"] == "eval-runner-session", init
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.tools = [t["name"] for t in self._request("tools/list", {})["tools"]]

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()

    def _request(self, method: str, params: dict[str, Any]) -> Any:
        self._ids += 1
        self._send({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params})
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            _fail(f"error: the MCP server exited (method {method})", 4)
        answer = json.loads(line)
        if "error" in answer:
            _fail(f"error: MCP {method} failed: {answer['error']}", 4)
        return answer["result"]

    def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        result = self._request("tools/call", {"name": name, "arguments": arguments})
        return "".join(c.get("text", "") for c in result["content"]), bool(result.get("isError"))

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)


def _use_tools(cli: str, argv: list[str], server: tuple[str, list[str]], spec: dict[str, Any],
               prompt: str) -> list[str]:
    """Call the session tools like an agent would (a spec's `tool_calls`, else the first output the trace shows
    truncated, or the outline); claude only calls what `--allowedTools` allows. Returns each answer."""
    allowed = (_arg(argv, "--allowedTools") or "").split(",") if cli == "claude" else None
    client = _McpClient(*server)
    answers: list[str] = []
    calls = spec.get("tool_calls")
    if calls is None:  # like the fake vendor's judge: the first output the trace shows truncated, else the outline
        truncated = re.search(r'"call_id":\s*"([^"]{1,200})",\s*"output":\s*"<truncated:', prompt)
        calls = [{"name": "get_tool_result", "arguments": {"call_id": truncated.group(1)}} if truncated
                 else {"name": "get_session_summary", "arguments": {}}]
    for call in calls:
        name = str(call["name"])
        if allowed is not None and f"mcp__session__{name}" not in allowed:
            answers.append(json.dumps({"error": f"claude refused {name}: not in --allowedTools"}))
            continue
        text, _is_error = client.call(name, call.get("arguments") or {})
        answers.append(text)
    client.close()
    return answers


def _cited(answers: list[str]) -> list[int]:
    for text in reversed(answers):
        found = [int(p) for p in re.findall(r'"pos":\s*(\d+)', text)]
        if found:
            return list(dict.fromkeys(found))[:3]
    return []


def _refuse_too_long(cli: str, tokens: int, limit: int, numbers: bool) -> None:
    """What each CLI prints when the model refuses the prompt as too long, then exit 1."""
    if cli == "claude":
        message = (f'API Error: 400 {{"type":"error","error":{{"type":"invalid_request_error","message":"prompt is '
                   f'too long: {tokens} tokens > {limit} maximum"}}}}' if numbers else "Prompt is too long")
        print(json.dumps({"type": "result", "subtype": "success", "is_error": True, "duration_ms": 5, "num_turns": 1,
                          "result": message, "session_id": "fake-session", "total_cost_usd": 0,
                          "usage": {"input_tokens": 0, "output_tokens": 0}}))
    else:
        message = (f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
                   f"{tokens} tokens." if numbers else
                   "Your input exceeds the context window of this model. Please adjust your input and try again.")
        for event in ({"type": "thread.started", "thread_id": "fake-thread"}, {"type": "turn.started"},
                      {"type": "error", "message": message}, {"type": "turn.failed", "error": {"message": message}}):
            print(json.dumps(event))
    sys.exit(1)


def main(cli: str) -> None:
    argv = sys.argv[1:]
    script = _script()
    required = _CLAUDE_FLAGS if cli == "claude" else _CODEX_FLAGS
    missing = [f for f in required if f not in argv]
    if missing:
        _fail(f"error: missing expected option(s) {missing}")
    if os.listdir(os.getcwd()):
        _fail("isolation violated: the working directory is not empty", 3)
    leaked = [k for k in _FORBIDDEN_ENV if k in os.environ]
    if leaked:
        _fail(f"isolation violated: {leaked} set in the judge environment", 3)
    if cli == "claude":
        if _arg(argv, "--tools") != "":
            _fail("error: expected --tools \"\"")
        schema = json.loads(_arg(argv, "--json-schema") or "{}")
        model = _arg(argv, "--model") or "claude-default"
    else:
        if argv[-1] != "-":
            _fail("error: expected the prompt on stdin ('-')")
        with open(_arg(argv, "--output-schema") or "", encoding="utf-8") as fh:
            schema = json.load(fh)
        model = _arg(argv, "--model") or "codex-default"
    prompt = sys.stdin.read()
    retrospective = "overall" in schema.get("properties", {})
    question_id = "retrospective" if retrospective else (re.findall(r"^ID: (\S+)$", prompt, re.M) or ["?"])[-1]
    spec = script.get("retrospective", {}) if retrospective else script.get("questions", {}).get(
        question_id, script.get("default", {}))
    if not retrospective:
        spec = next((v for text, v in script.get("prompt_contains", {}).items() if text in prompt), spec)
    mode = spec.get("mode", "ok")
    started = time.monotonic()
    limit = script.get("context_limit")
    refused = isinstance(limit, dict) and not retrospective and len(prompt) // 4 > int(limit["tokens"])
    _log(script, {"cli": cli, "question_id": question_id, "mode": "too_long" if refused else mode,
                  "pid": os.getpid(), "argv": argv, "cwd": os.getcwd(), "model": model, "started": started,
                  "prompt_chars": len(prompt), "prompt_has_facts": "Facts earlier evaluations retained" in prompt})
    if refused:
        assert isinstance(limit, dict)
        _refuse_too_long(cli, len(prompt) // 4, int(limit["tokens"]), bool(limit.get("numbers", True)))
    delay = float(spec.get("delay", script.get("delay", 0)))
    if delay:
        time.sleep(delay)

    if mode == "hang":
        child = subprocess.Popen(["sleep", "3600"])  # the daemon must kill the whole process group
        _log(script, {"cli": cli, "question_id": question_id, "child_pid": child.pid, "pid": os.getpid()})
        time.sleep(3600)
    if mode == "crash":
        _fail("fatal: simulated crash (segmentation fault)", 1)

    server = None if retrospective else _mcp_server(cli, argv)
    answers = _use_tools(cli, argv, server, spec, prompt) if server is not None else []
    if server is not None:
        _log(script, {"cli": cli, "question_id": question_id, "tool_answers": answers})
    if retrospective:
        answer: Any = {"overall": "The agent worked steadily and mostly safely.", "strengths": ["Small diffs"],
                       "issues": [], "suggestions": ["Run the tests before finishing."]}
    else:
        answer = _verdict(prompt, spec, question_id)
        answer["evidence_entries"] = _cited(answers)
        if spec.get("retain_fact"):
            answer["retain_fact"] = spec["retain_fact"]
    text = "this is not JSON, just prose about the session" if mode == "malformed" else json.dumps(answer)
    input_tokens, output_tokens = len(prompt) // 4, 40 + len(text) // 4
    if cli == "claude":
        out: dict[str, Any] = {
            "type": "result", "subtype": "success", "is_error": False, "duration_ms": 12,
            "num_turns": 2 + len(answers),
            "result": text if mode == "malformed" else "", "session_id": "fake-session",
            "total_cost_usd": 0.0123,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
            "modelUsage": {model: {"inputTokens": input_tokens, "outputTokens": output_tokens,
                                   "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0, "costUSD": 0.0123}},
        }
        if mode != "malformed":
            out["structured_output"] = answer
        print(json.dumps(out))
    else:
        cached = input_tokens // 2
        for event in ({"type": "thread.started", "thread_id": "fake-thread"}, {"type": "turn.started"},
                      {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": text}},
                      {"type": "turn.completed", "usage": {"input_tokens": input_tokens,
                                                          "cached_input_tokens": cached,
                                                          "output_tokens": output_tokens}}):
            print(json.dumps(event))
    _log(script, {"cli": cli, "question_id": question_id, "ended": time.monotonic(), "started": started})
