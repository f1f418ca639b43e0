"""Running one judge call with the local `claude` or `codex` CLI: argv, isolated environment, empty
working directory, process-group kill on cancel/timeout, and parsing the CLI's JSON and token usage.

Flags relied on (checked against the CLIs' sources/docs, not `--help` on this machine):
- `claude -p --output-format json --model M --json-schema '<schema>' --tools "" --disallowedTools LSP
  --strict-mcp-config --disable-slash-commands --max-turns 3`, prompt on stdin. The JSON result
  has `structured_output` (schema runs) or `result`, `is_error`, `subtype`, `num_turns`,
  `total_cost_usd`, `usage` and per-model `modelUsage.*.{inputTokens,outputTokens,
  cacheReadInputTokens,cacheCreationInputTokens}`.
- `codex exec --json --output-schema FILE --skip-git-repo-check --sandbox read-only --color never
  -c features.shell_tool=false -c features.unified_exec=false -c features.multi_agent=false
  -c web_search="disabled" [--model M] -`, prompt on stdin (`-`): no shell, no exec, no sub-agents, no
  web search (feature keys codex does not know are only warned about), and a CODEX_HOME of the job's
  own (`daemon.sandbox`), so the user's config.toml adds no MCP servers. `--json` prints JSONL events:
  `item.completed` with an `agent_message` item whose `text` is the schema-conforming JSON,
  `turn.completed` with `usage.{input_tokens,cached_input_tokens,output_tokens}`, `turn.failed` /
  `error` on failure.

A `needs_tools` question's call also gets the job's session tools: an MCP server in the call's own directory
(`daemon.session_tools`: claude `--mcp-config` + `--allowedTools` + `--max-turns 15`; codex
`-c mcp_servers.session.*`).

The transcript in the prompt is untrusted (any member of the tenant can upload one), so each call
also runs inside `daemon.sandbox` (bubblewrap when available): see there for what a judge can see.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chalicelib.domain.context_limits import is_context_overflow_message
from chalicelib.domain.evaluation import TokenUsage
from chalicelib.domain.json_depth import loads_bounded
from daemon.sandbox import JudgeSandbox, Unsandboxed
from daemon.session_tools import CLAUDE_TOOLS_MAX_TURNS, InstalledTools, JobTools

JudgeName = Literal["claude", "codex"]
DEFAULT_MODELS: dict[str, str | None] = {"claude": "sonnet", "codex": None}
CLAUDE_MAX_TURNS = 3
# A judge only reads the prompt and answers: no shell or exec tool, no sub-agents, no web search.
CODEX_TOOL_RESTRICTIONS = ("-c", "features.shell_tool=false", "-c", "features.unified_exec=false",
                           "-c", "features.multi_agent=false", "-c", 'web_search="disabled"')
_DIAG_LIMIT = 300

# Ambient variables that make a CLI behave as if it ran inside another agent session (nested
# Claude Code, a Codex sandbox) or that would hand the judge our own credentials.
_DROP_ENV_EXACT = frozenset({
    "CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_SSE_PORT", "CLAUDE_PROJECT_DIR", "CLAUDE_ENV_FILE",
    "CLAUDE_CODE_SESSION_ID", "CODEX_SANDBOX", "CODEX_SANDBOX_NETWORK_DISABLED", "CODEX_THREAD_ID",
    "EVAL_RUNNER_TOKEN", "EVAL_RUNNER_API_URL", "VIRTUAL_ENV", "PYTHONPATH",
})
_DROP_ENV_PREFIXES = ("MCP_", "VSCODE_", "CURSOR_")
# Recording hooks installed for the user's own sessions must not record the judges' sessions.
_SET_ENV = {"KAPACITOR_SKIP": "1", "DISABLE_AUTOUPDATER": "1", "NO_COLOR": "1"}


def isolated_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items()
           if k not in _DROP_ENV_EXACT and not k.startswith(_DROP_ENV_PREFIXES)}
    env.update(_SET_ENV)
    return env


@dataclass
class JudgeResult:
    """One CLI call: `text` is the judge's JSON answer, or `failure` says why there is none."""

    text: str | None
    usage: TokenUsage = field(default_factory=TokenUsage)
    num_turns: int | None = None
    cost_usd: float | None = None
    failure: str | None = None
    cancelled: bool = False
    # With session tools: the calls the judge made, from the MCP server's log (None: it had no tools).
    tool_calls: list[dict[str, Any]] | None = None


def _clip(text: str, limit: int = _DIAG_LIMIT) -> str:
    text = text.strip().replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more chars)"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_claude_output(stdout: str) -> JudgeResult:
    try:
        data = loads_bounded(stdout)
    except ValueError:
        return JudgeResult(text=None, failure=f"invalid_output: claude printed no JSON: {_clip(stdout)}")
    if not isinstance(data, dict):
        return JudgeResult(text=None, failure="invalid_output: claude output is not a JSON object")
    usage = TokenUsage()
    model_usage = data.get("modelUsage")
    if isinstance(model_usage, dict) and model_usage:
        for per_model in model_usage.values():
            if isinstance(per_model, dict):
                usage = usage + TokenUsage(
                    input_tokens=_int(per_model.get("inputTokens")),
                    output_tokens=_int(per_model.get("outputTokens")),
                    cache_read_input_tokens=_int(per_model.get("cacheReadInputTokens")),
                    cache_creation_input_tokens=_int(per_model.get("cacheCreationInputTokens")))
    elif isinstance(data.get("usage"), dict):
        u = data["usage"]
        usage = TokenUsage(input_tokens=_int(u.get("input_tokens")), output_tokens=_int(u.get("output_tokens")),
                           cache_read_input_tokens=_int(u.get("cache_read_input_tokens")),
                           cache_creation_input_tokens=_int(u.get("cache_creation_input_tokens")))
    turns = data.get("num_turns") if isinstance(data.get("num_turns"), int) else None
    cost = data.get("total_cost_usd") if isinstance(data.get("total_cost_usd"), int | float) else None
    structured = data.get("structured_output")
    if isinstance(structured, dict | list):
        text: str | None = json.dumps(structured)
    elif isinstance(data.get("result"), str) and data["result"].strip():
        text = data["result"]
    else:
        text = None
    if text is None or data.get("is_error") is True:
        if text is not None and is_context_overflow_message(text):
            # "Prompt is too long" (or the API's own message): the daemon refits the context and asks again.
            return JudgeResult(text=None, usage=usage, num_turns=turns, cost_usd=cost,
                               failure=f"context_overflow: {_clip(text)}")
        subtype = data.get("subtype") or "error"
        return JudgeResult(text=None, usage=usage, num_turns=turns, cost_usd=cost,
                           failure=f"invalid_output: null claude result ({subtype})")
    return JudgeResult(text=text, usage=usage, num_turns=turns, cost_usd=cost)


def parse_codex_output(stdout: str) -> JudgeResult:
    usage = TokenUsage()
    text: str | None = None
    errors: list[str] = []
    turns = 0
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = loads_bounded(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        kind = ev.get("type")
        if kind == "item.completed" and isinstance(ev.get("item"), dict) and ev["item"].get("type") == "agent_message":
            text = str(ev["item"].get("text", ""))
        elif kind == "turn.completed" and isinstance(ev.get("usage"), dict):
            turns += 1
            u = ev["usage"]
            cached = _int(u.get("cached_input_tokens"))
            # OpenAI counts cached tokens inside input_tokens; report them apart like the server runner.
            usage = usage + TokenUsage(input_tokens=max(_int(u.get("input_tokens")) - cached, 0),
                                       output_tokens=_int(u.get("output_tokens")), cache_read_input_tokens=cached)
        elif kind == "turn.failed":
            err = ev.get("error") or {}
            errors.append(str(err.get("message", "turn failed")) if isinstance(err, dict) else "turn failed")
        elif kind == "error":
            errors.append(str(ev.get("message", "error")))
    if text is None or not text.strip():
        reason = " | ".join(_clip(e) for e in errors) or "no agent message"
        if any(is_context_overflow_message(e) for e in errors):
            return JudgeResult(text=None, usage=usage, num_turns=turns or None, failure=f"context_overflow: {reason}")
        return JudgeResult(text=None, usage=usage, num_turns=turns or None,
                           failure=f"invalid_output: null codex result ({reason})")
    return JudgeResult(text=text, usage=usage, num_turns=turns or None)


class ProcessGroup:
    """The judge processes of one job, so cancel/deadline can kill every one of them (and their children)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._killed = False

    @property
    def killed(self) -> bool:
        return self._killed

    def add(self, proc: subprocess.Popen[bytes]) -> bool:
        with self._lock:
            if self._killed:
                return False
            self._procs.add(proc)
            return True

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        with self._lock:
            self._killed = True
            procs = list(self._procs)
        for proc in procs:
            kill_tree(proc)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group (the CLIs spawn node/helpers of their own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class CliJudge:
    """How to call one CLI. `executable` is looked up on PATH."""

    name: JudgeName
    model: str | None = None
    timeout_seconds: float = 300.0
    executable: str | None = None
    # OS isolation of each call (`daemon.sandbox.choose_sandbox`); the CLI picks bubblewrap when it can.
    sandbox: JudgeSandbox = field(default_factory=Unsandboxed)

    @property
    def judge_model(self) -> str:
        """What the result records as `judge_model`: the requested alias (or the CLI name)."""
        return self.model or DEFAULT_MODELS[self.name] or self.name

    def argv(self, schema: dict[str, Any], schema_path: str, tools: InstalledTools | None = None) -> list[str]:
        exe = self.executable or self.name
        model = self.model or DEFAULT_MODELS[self.name]
        if self.name == "claude":
            args = [exe, "-p", "--output-format", "json"]
            if model:
                args += ["--model", model]
            turns = CLAUDE_TOOLS_MAX_TURNS if tools is not None else CLAUDE_MAX_TURNS
            return [*args, "--json-schema", json.dumps(schema, separators=(",", ":")), "--tools", "",
                    "--disallowedTools", "LSP", "--strict-mcp-config", "--disable-slash-commands",
                    "--max-turns", str(turns), *(tools.claude_args() if tools is not None else ())]
        args = [exe, "exec", "--json", "--output-schema", schema_path, "--skip-git-repo-check",
                "--sandbox", "read-only", "--color", "never", *CODEX_TOOL_RESTRICTIONS,
                *(tools.codex_args() if tools is not None else ())]
        if model:
            args += ["--model", model]
        return [*args, "-"]

    def run(self, prompt: str, schema: dict[str, Any], *, group: ProcessGroup, timeout: float | None = None,
            env: Mapping[str, str] | None = None,
            on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = None,
            tools: JobTools | None = None) -> JudgeResult:
        """One call in a fresh empty directory; killed (with its children) on timeout or cancel. With `tools`,
        the job's session tools are installed in that directory and offered to the CLI (`daemon.session_tools`),
        and the result lists the calls the judge made."""
        limit = self.timeout_seconds if timeout is None else min(timeout, self.timeout_seconds)
        if limit <= 0:
            return JudgeResult(text=None, failure="timeout: no time left before the run's deadline")
        scratch = tempfile.mkdtemp(prefix="eval-judge-")
        workdir = os.path.join(scratch, "cwd")  # empty: no CLAUDE.md/AGENTS.md or repo to pick up
        os.mkdir(workdir)
        schema_path = os.path.join(scratch, "schema.json")
        with open(schema_path, "w", encoding="utf-8") as fh:
            json.dump(schema, fh)
        exe = shutil.which(self.executable or self.name, path=(env or os.environ).get("PATH"))
        if exe is None:
            shutil.rmtree(scratch, ignore_errors=True)
            return JudgeResult(text=None, failure=f"internal: the '{self.name}' CLI is not on PATH")
        installed = tools.install(scratch) if tools is not None else None
        calls: list[dict[str, Any]] | None = None
        argv = self.argv(schema, schema_path, installed)
        argv[0] = exe
        call = self.sandbox.prepare(self.name, argv, scratch=scratch, workdir=workdir,
                                    env=dict(env) if env is not None else isolated_env())
        try:
            proc = subprocess.Popen(call.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=workdir, env=call.env, start_new_session=True)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            return JudgeResult(text=None, failure=f"internal: could not start {self.name}: {exc.strerror}")
        try:
            if not group.add(proc):
                kill_tree(proc)
            if on_spawn is not None:
                on_spawn(proc)
            try:
                out, err = proc.communicate(prompt.encode("utf-8"), timeout=limit)
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                proc.communicate()
                return JudgeResult(text=None, failure=f"timeout: {self.name} ran longer than {limit:.0f} s")
            except BrokenPipeError:
                out, err = proc.communicate()
            calls = installed.calls() if installed is not None else None
        finally:
            group.discard(proc)
            shutil.rmtree(scratch, ignore_errors=True)
        if group.killed:
            return JudgeResult(text=None, failure="cancelled", cancelled=True)
        stdout = out.decode("utf-8", "replace")
        parsed = parse_claude_output(stdout) if self.name == "claude" else parse_codex_output(stdout)
        if proc.returncode != 0 and parsed.text is None and not (parsed.failure or "").startswith("context_overflow"):
            diag = _clip(err.decode("utf-8", "replace")) or _clip(stdout) or "no output"
            parsed.failure = f"internal: {self.name} exited with {proc.returncode}: {diag}"
        parsed.tool_calls = calls
        return parsed
