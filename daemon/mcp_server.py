"""The daemon's MCP server for one judge call: the session tools (`get_session_summary`, `search_session`,
`get_tool_result`) over the job's session data only, spoken over stdio (JSON-RPC 2.0, one message a line).

The judge CLI starts it (claude's `--mcp-config`, codex's `mcp_servers`) inside the judge's sandbox, so it is
stdlib only and needs nothing of the machine but a Python 3: the daemon copies this file and the tools
(`chalicelib/judges/tools.py`, as `judge_tools.py`) next to the job's data file in the call's own directory.
It reads that file and nothing else; it has no network client and no token. Every call is appended to
`--log` (one JSON object a line), which the daemon reads after the CLI exits: the verdict's `tools_used`
comes from there, not from what the judge claims. The six-call limit and every bad call are answered as
MCP tool errors (`isError`), never by failing the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `python -I` leaves the script's directory out

try:  # the copy next to this file in a judge's directory
    from judge_tools import TOOL_SPECS, SessionTools, ToolConversation  # type: ignore[import-not-found]
except ImportError:  # run from the repository (tests)
    from chalicelib.judges.tools import TOOL_SPECS, SessionTools, ToolConversation

SERVER_NAME = "eval-runner-session"
PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")
MAX_MESSAGE_BYTES = 1_000_000


def load_tools(data_path: str) -> SessionTools:
    """The job's session data as the daemon wrote it: {"session_id", "session_chain", "entries",
    "full_outputs": {"<pos>": capped output}}."""
    with open(data_path, encoding="utf-8") as fh:
        data = json.load(fh)
    outputs = {int(pos): text for pos, text in (data.get("full_outputs") or {}).items()}
    return SessionTools(data.get("entries") or [], session_id=str(data.get("session_id") or ""),
                        session_chain=data.get("session_chain") or (), full_output=outputs.get)


class Server:
    def __init__(self, tools: SessionTools, log_path: str | None) -> None:
        self.conversation: ToolConversation = tools.conversation()
        self.log_path = log_path

    def handle(self, message: Any) -> dict[str, Any] | None:
        """The answer to one JSON-RPC message (None for a notification)."""
        if not isinstance(message, dict):
            return _error(None, -32600, "Invalid request")
        method, msg_id, params = message.get("method"), message.get("id"), message.get("params") or {}
        if msg_id is None:
            return None  # notifications (initialized, cancelled) need no answer
        if method == "initialize":
            asked = params.get("protocolVersion") if isinstance(params, dict) else None
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            return _result(msg_id, {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
                                    "serverInfo": {"name": SERVER_NAME, "version": "1.0.0"}})
        if method == "ping":
            return _result(msg_id, {})
        if method == "tools/list":
            return _result(msg_id, {"tools": [{"name": s["name"], "description": s["description"],
                                               "inputSchema": s["parameters"]} for s in TOOL_SPECS]})
        if method == "tools/call":
            if not isinstance(params, dict):
                return _error(msg_id, -32602, "params must be an object")
            name = params.get("name")
            answer = self.conversation.call(str(name) if name is not None else "", params.get("arguments") or {})
            self._log({"tool": answer.record["tool"] if answer.record else str(name)[:64],
                       "arguments": answer.record["arguments"] if answer.record else {},
                       "is_error": answer.is_error, "refused": answer.record is None})
            return _result(msg_id, {"content": [{"type": "text", "text": answer.content}], "isError": answer.is_error})
        return _error(msg_id, -32601, f"Method not found: {str(method)[:64]}")

    def _log(self, record: dict[str, Any]) -> None:
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


def _result(msg_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _error(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def serve(server: Server, stdin: TextIO, stdout: TextIO) -> None:
    for line in stdin:
        if not line.strip():
            continue
        if len(line) > MAX_MESSAGE_BYTES:
            answer: dict[str, Any] | None = _error(None, -32600, "Message too large")
        else:
            try:
                message = json.loads(line)
            except (ValueError, RecursionError):
                answer = _error(None, -32700, "Parse error")
            else:
                answer = server.handle(message)
        if answer is not None:
            stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
            stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The session tools of one judge call, over MCP stdio.")
    parser.add_argument("--data", required=True, help="the job's session data (JSON)")
    parser.add_argument("--log", default=None, help="append each call here (JSON lines)")
    args = parser.parse_args(argv)
    serve(Server(load_tools(args.data), args.log), sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
