"""The session tools of a daemon job's tool-using judges: the job's session data, fetched once, and for each
judge call the MCP server installed in the call's own directory and the CLI arguments that hand it over.

- Data: the job's eval context (every entry with its `pos`, as the judges see it) and the whole outputs of
  its truncated tool results (`GET /sessions/{id}/tool-outputs`, redacted and capped by the service like the
  server runner's `get_tool_result`), in one JSON file.
- Server: `daemon/mcp_server.py` with `chalicelib/judges/tools.py` (the same tools the server runner answers
  with) copied next to the data in the call's scratch directory, the only directory a sandboxed judge can see;
  it is started by the CLI with a system Python (`python3 -I`), has no network client and no token.
- claude: `--mcp-config` naming that server, `--allowedTools` its three tools only (with `--tools ""` and
  `--strict-mcp-config` nothing else is available), and 15 turns instead of 3 (the reference's tools judge).
- codex: the same server as `mcp_servers.session` through `-c` overrides (its CODEX_HOME is the job's own, so
  no other server is configured); its shell and exec tools stay off.
- After the call, the server's call log gives the verdict's `tools_used` (calls the limit refused are left out).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import chalicelib.judges.tools as judge_tools
from chalicelib.judges.tools import TOOL_NAMES

SERVER_KEY = "session"
ALLOWED_TOOLS = tuple(f"mcp__{SERVER_KEY}__{name}" for name in TOOL_NAMES)
CLAUDE_TOOLS_MAX_TURNS = 15
_SERVER_SOURCE = Path(__file__).resolve().parent / "mcp_server.py"
_TOOLS_SOURCE = Path(judge_tools.__file__).resolve()
_SYSTEM_PYTHON = "/usr/bin/python3"


def mcp_python(sandboxed: bool) -> str:
    """The interpreter the CLI starts the server with. Inside bubblewrap only the system's directories are
    visible, so a system python3; unsandboxed, the daemon's own."""
    if sandboxed and os.path.exists(_SYSTEM_PYTHON):
        return _SYSTEM_PYTHON
    found = shutil.which("python3") if sandboxed else None
    return os.path.realpath(found) if found else sys.executable


def tool_outputs_path(session_id: str, *, threshold: int, chain: bool, offset: int) -> str:
    return (f"/sessions/{quote(session_id, safe='')}/tool-outputs?threshold={threshold}"
            f"&chain={'true' if chain else 'false'}&offset={offset}")


@dataclass
class InstalledTools:
    """The server of one judge call: the CLI arguments that start it, and its call log."""

    config: dict[str, Any]
    log_path: str
    python: str
    server_args: list[str]

    def claude_args(self) -> list[str]:
        return ["--mcp-config", json.dumps(self.config, separators=(",", ":")),
                "--allowedTools", ",".join(ALLOWED_TOOLS)]

    def codex_args(self) -> list[str]:
        # `-c key=value` takes TOML values; a JSON string or array of strings is one.
        return ["-c", f"mcp_servers.{SERVER_KEY}.command={json.dumps(self.python)}",
                "-c", f"mcp_servers.{SERVER_KEY}.args={json.dumps(self.server_args)}"]

    def calls(self) -> list[dict[str, Any]]:
        """The calls the judge made (refused ones left out), as the server logged them."""
        try:
            with open(self.log_path, encoding="utf-8") as fh:
                records = [json.loads(line) for line in fh if line.strip()]
        except (OSError, ValueError):
            return []
        return [{k: r.get(k) for k in ("tool", "arguments", "is_error")} for r in records
                if isinstance(r, dict) and not r.get("refused")]


@dataclass
class JobTools:
    """One job's session data for its tool-using judges (built once, installed per call)."""

    data: bytes
    python: str
    full_outputs: int = 0
    fetch_error: str | None = field(default=None)

    @classmethod
    def from_context(cls, context: Mapping[str, Any], outputs: Mapping[int, str], *, python: str,
                     fetch_error: str | None = None) -> JobTools:
        data = {"session_id": context.get("session_id"), "session_chain": context.get("session_chain") or [],
                "entries": context.get("trace") or [],
                "full_outputs": {str(pos): text for pos, text in outputs.items()}}
        return cls(data=json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass"), python=python,
                   full_outputs=len(outputs), fetch_error=fetch_error)

    def install(self, scratch: str) -> InstalledTools:
        """The server and the data in `scratch/mcp` (inside the directory the sandbox shows the judge)."""
        home = os.path.join(scratch, "mcp")
        os.makedirs(home, exist_ok=True)
        shutil.copyfile(_SERVER_SOURCE, os.path.join(home, "mcp_server.py"))
        shutil.copyfile(_TOOLS_SOURCE, os.path.join(home, "judge_tools.py"))
        data_path = os.path.join(home, "session.json")
        with open(data_path, "wb") as fh:
            fh.write(self.data)
        log_path = os.path.join(home, "calls.jsonl")
        args = ["-I", os.path.join(home, "mcp_server.py"), "--data", data_path, "--log", log_path]
        config = {"mcpServers": {SERVER_KEY: {"type": "stdio", "command": self.python, "args": args,
                                              "env": {"PYTHONDONTWRITEBYTECODE": "1"}}}}
        return InstalledTools(config=config, log_path=log_path, python=self.python, server_args=args)


def fetch_outputs(get: Any, session_id: str, *, threshold: int, chain: bool, max_pages: int = 200) -> dict[int, str]:
    """The capped whole outputs of the tool results over `threshold` bytes, page by page (`get(path)` is the
    daemon's authenticated API GET)."""
    outputs: dict[int, str] = {}
    offset = 0
    for _ in range(max_pages):
        page = get(tool_outputs_path(session_id, threshold=threshold, chain=chain, offset=offset))
        for item in page.get("items") or []:
            if isinstance(item, dict) and isinstance(item.get("pos"), int) and isinstance(item.get("output"), str):
                outputs[item["pos"]] = item["output"]
        if page.get("next_offset") is None:
            break
        offset = int(page["next_offset"])
    return outputs


def needs_tools(questions: Sequence[Any]) -> bool:
    return any(getattr(q, "needs_tools", False) for q in questions)
