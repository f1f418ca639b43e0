"""Codex CLI rollout JSONL → neutral trace entries, streaming, plus the session metadata.

Mapping (shared/reference/session-formats.md §2 and §3, which cites the public sources used:
kvsankar/agent-history `docs/codex-format.md` and fixtures, Sinity/polylogue
`docs/providers/openai-codex.md`, AcidicSoil/codex-session-viewer `docs/example.jsonl`,
jnarowski/agentcmd format notes; output shapes checked against public rollout fixtures):

- Both layouts: the enveloped `{"timestamp","type","payload"}` lines, and the older bare layout
  (a `{id, timestamp, instructions, git?}` header, `{"record_type":"state"}` markers, bare
  response items without timestamps, which take the last timestamp seen).
- `response_item` is the source of truth. `message` role user → `user_message` (minus injected
  `<environment_context>`, `<user_instructions>`, `# AGENTS.md instructions…`, `<turn_aborted>`,
  `<skill>` parts); role assistant → `assistant_message`; role developer/system is skipped as
  injected. `reasoning` summary text → `assistant_thinking` (encrypted-only reasoning yields
  nothing). `function_call` → `tool_invocation` with `arguments` JSON-decoded (kept as
  `{"raw": …}` when it is not a JSON object); `update_plan` also yields a `plan` checklist.
  `custom_tool_call` (freeform tools, mainly `apply_patch`) → `tool_invocation` with
  `{"input": …}`. `local_shell_call` / `web_search_call` → `tool_invocation` of
  `local_shell` / `web_search`.
- Outputs (`function_call_output`, `custom_tool_call_output`) → `tool_result`. Real outputs come
  in three shapes: a JSON string `{"output", "metadata": {"exit_code"}}` (unwrapped to `output`,
  error when exit_code != 0); plain text whose header says `Exit code: N` or
  `Process exited with code N` (kept as is, error when N != 0); anything else (error unknown:
  false, except an `apply_patch` output that does not start with "Success").
- `session_meta`, `turn_context`, `event_msg` (duplicates of response items, token counts, turn
  boundaries) and `compacted` carry no new conversation: counted as metadata.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from chalicelib.domain.trace import TraceEntry
from chalicelib.ingest.base import SessionParser
from chalicelib.ingest.plans import render_checklist

_MAIN: tuple[str | None, str | None] = (None, None)
_ENVELOPE_METADATA = frozenset({"session_meta", "turn_context", "event_msg", "compacted"})
_ITEM_TYPES = frozenset(
    {
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "local_shell_call",
        "web_search_call",
    }
)
# Items that record harness state, not conversation.
_ITEM_METADATA = frozenset({"ghost_snapshot", "compaction", "compaction_summary"})
_INJECTED_PREFIXES = (
    "<environment_context>",
    "<user_instructions>",
    "# AGENTS.md instructions",
    "<INSTRUCTIONS>",
    "<turn_aborted>",
    "<skill>",
)
_EXIT_HEADER = re.compile(r"^(?:Exit code: |Process exited with code )(-?\d+)\s*$", re.MULTILINE)


def decode_output(raw: Any) -> tuple[str, int | None, bool | None]:
    """(text, exit code if stated, success flag if stated) of a Codex tool output."""
    if isinstance(raw, list):
        parts = [item["text"] for item in raw if isinstance(item, dict) and isinstance(item.get("text"), str)]
        return "\n".join(parts), None, None
    if isinstance(raw, dict):
        text = raw.get("content", raw.get("output"))
        success = raw.get("success")
        return (
            text if isinstance(text, str) else json.dumps(raw, ensure_ascii=False),
            None,
            success if isinstance(success, bool) else None,
        )
    if not isinstance(raw, str):
        return ("" if raw is None else json.dumps(raw, ensure_ascii=False)), None, None
    if raw.startswith("{") and '"output"' in raw:
        try:
            wrapped = json.loads(raw)
        except ValueError:
            wrapped = None
        if isinstance(wrapped, dict) and isinstance(wrapped.get("output"), str):
            metadata = wrapped.get("metadata")
            exit_code = metadata.get("exit_code") if isinstance(metadata, dict) else None
            return wrapped["output"], exit_code if isinstance(exit_code, int) else None, None
    body_at = raw.find("Output:", 0, 600)
    header = raw[:body_at] if body_at >= 0 else raw[:200]
    match = _EXIT_HEADER.search(header)
    return raw, (int(match.group(1)) if match else None), None


def _decode_arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return {"raw": raw}
        return decoded if isinstance(decoded, dict) else {"raw": raw}
    return {} if raw is None else {"raw": raw}


def _texts(content: Any, types: tuple[str, ...]) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        item["text"]
        for item in content
        if isinstance(item, dict) and item.get("type") in types and isinstance(item.get("text"), str)
    ]


class CodexParser(SessionParser):
    format = "codex"

    def handle(self, line_no: int, record: dict[str, Any]) -> Iterable[TraceEntry]:
        record_type = record.get("type")
        payload = record.get("payload")
        if isinstance(record_type, str) and isinstance(payload, dict):
            return self._enveloped(line_no, record_type, record.get("timestamp"), payload)
        if "record_type" in record:
            self.recognised()
            self.stats.skipped_metadata += 1
            return ()
        if isinstance(record_type, str) and record_type in _ITEM_TYPES | _ITEM_METADATA:
            self.recognised()
            return self._item(line_no, self.timestamp(record.get("timestamp")), record)
        if record_type is None and "id" in record and "timestamp" in record:
            # The bare layout's header line: the session_meta of files before the envelope.
            self.recognised()
            self.stats.skipped_metadata += 1
            self._session_meta(record, self.timestamp(record.get("timestamp")))
            return ()
        self.stats.count_unknown(record_type if isinstance(record_type, str) else "(no type)")
        return ()

    def _enveloped(self, line_no: int, record_type: str, raw_ts: Any, payload: dict[str, Any]) -> Iterable[TraceEntry]:
        if record_type == "response_item":
            self.recognised()
            return self._item(line_no, self.timestamp(raw_ts), payload)
        if record_type in _ENVELOPE_METADATA:
            self.recognised()
            self.stats.skipped_metadata += 1
            ts = self.timestamp(raw_ts)
            if record_type == "session_meta":
                self._session_meta(payload, ts)
            elif record_type == "turn_context":
                self._turn_context(payload)
            return ()
        self.stats.count_unknown(record_type)
        return ()

    # -- response items -----------------------------------------------------------------------

    def _item(self, line_no: int, ts: str, item: dict[str, Any]) -> list[TraceEntry]:
        item_type = item.get("type")
        if item_type == "message":
            return self._message(ts, item)
        if item_type == "reasoning":
            summary = [text.strip() for text in _texts(item.get("summary"), ("summary_text",)) if text.strip()]
            if not summary:
                summary = [
                    text.strip() for text in _texts(item.get("content"), ("reasoning_text", "text")) if text.strip()
                ]
            return [self.text_entry("assistant_thinking", ts, "\n\n".join(summary), _MAIN)] if summary else []
        if item_type in ("function_call", "custom_tool_call", "local_shell_call", "web_search_call"):
            return self._call(ts, item_type, item)
        if item_type in ("function_call_output", "custom_tool_call_output"):
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                return []
            text, exit_code, success = decode_output(item.get("output"))
            if exit_code is not None:
                is_error = exit_code != 0
            elif success is not None:
                is_error = not success
            else:
                is_error = self.tool_for(call_id) == "apply_patch" and not text.lstrip().startswith("Success")
            return list(self.result(line_no, ts, call_id, text, is_error, _MAIN))
        if item_type in _ITEM_METADATA:
            self.stats.skipped_metadata += 1
            return []
        self.stats.count_unknown(f"response_item:{item_type}")
        return []

    def _message(self, ts: str, item: dict[str, Any]) -> list[TraceEntry]:
        role = item.get("role")
        if role == "assistant":
            texts = [text.strip() for text in _texts(item.get("content"), ("output_text", "text")) if text.strip()]
            return [self.text_entry("assistant_message", ts, "\n\n".join(texts), _MAIN)] if texts else []
        if role != "user":
            self.stats.skipped_injected += 1
            return []
        texts = [text for text in _texts(item.get("content"), ("input_text", "text")) if text.strip()]
        kept = [text.strip() for text in texts if not text.lstrip().startswith(_INJECTED_PREFIXES)]
        if not kept:
            if texts:
                self.stats.skipped_injected += 1
            return []
        return [self.text_entry("user_message", ts, "\n\n".join(kept), _MAIN)]

    def _call(self, ts: str, item_type: str, item: dict[str, Any]) -> list[TraceEntry]:
        call_id = item.get("call_id") or item.get("id")
        if not isinstance(call_id, str):
            call_id = f"{item_type}@{ts}"
        if item_type == "function_call":
            name, arguments = item.get("name"), _decode_arguments(item.get("arguments"))
        elif item_type == "custom_tool_call":
            name, arguments = item.get("name"), {"input": item.get("input")}
        elif item_type == "local_shell_call":
            action = item.get("action")
            name, arguments = "local_shell", action if isinstance(action, dict) else {}
        else:
            action = item.get("action")
            name, arguments = "web_search", action if isinstance(action, dict) else {}
        tool = name if isinstance(name, str) and name else "unknown"
        out: list[TraceEntry] = list(self.invocation(ts, tool, call_id, arguments, _MAIN))
        if tool == "update_plan":
            plan = render_checklist(arguments.get("plan"), text_key="step", explanation=arguments.get("explanation"))
            if plan is not None:
                out.insert(1, self.text_entry("plan", ts, plan, _MAIN))
        return out

    # -- metadata -----------------------------------------------------------------------------

    def _session_meta(self, payload: dict[str, Any], ts: str) -> None:
        meta = self.stats.metadata
        if meta.session_id is None and isinstance(payload.get("id"), str):
            meta.session_id = payload["id"]
        if meta.cwd is None and isinstance(payload.get("cwd"), str):
            meta.cwd = payload["cwd"]
        if meta.agent_version is None and isinstance(payload.get("cli_version"), str):
            meta.agent_version = payload["cli_version"]
        git = payload.get("git")
        if isinstance(git, dict):
            if meta.git_branch is None and isinstance(git.get("branch"), str) and git["branch"]:
                meta.git_branch = git["branch"]
            if meta.git_commit is None and isinstance(git.get("commit_hash"), str):
                meta.git_commit = git["commit_hash"]
            if meta.repository_url is None and isinstance(git.get("repository_url"), str):
                meta.repository_url = git["repository_url"]

    def _turn_context(self, payload: dict[str, Any]) -> None:
        meta = self.stats.metadata
        if meta.model is None and isinstance(payload.get("model"), str):
            meta.model = payload["model"]
        if meta.cwd is None and isinstance(payload.get("cwd"), str):
            meta.cwd = payload["cwd"]
