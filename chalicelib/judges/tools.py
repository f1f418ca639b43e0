"""The session tools a judge may call — `get_tool_result`, `search_session`, `get_session_summary` — answered
over one session's trace, with the per-question limits (at most six calls, bounded answers).

Both runners answer tool calls with this module: the server worker in-process (vendor tool use /
function calling), and the daemon's MCP server (`daemon/mcp_server.py`), which runs inside the judge's
sandbox from a copy of this file and nothing else. So this module is **stdlib only** (no pydantic, no
chalicelib imports): keep it that way.

What a tool can see is the judge's own session data and nothing else:
- `entries`: the session's eval-context trace (redacted when stored; compacted: outputs over the run's
  threshold are `<truncated: …>` markers), position = index (the `pos` judges cite);
- `full_output(pos)`: the redacted output of a truncated tool result, already capped with `cap_output`
  by whoever stored it (None when unknown): the stored output, at most TOOL_RESULT_MAX_BYTES plus the
  omission marker.

Limits (documented in the README, "Tool-using judges"):
- at most MAX_TOOL_CALLS calls per question; a further call gets a tool error telling the judge to answer;
- `get_tool_result`: outputs are stored capped at TOOL_RESULT_MAX_BYTES (UTF-8: their first OUTPUT_HEAD_BYTES
  and last OUTPUT_TAIL_BYTES around a marker saying how much was left out). A call answers a stored output of
  up to RESULT_VIEW_BYTES whole, a longer one as its first VIEW_HEAD_BYTES and last VIEW_TAIL_BYTES (test
  summaries and errors sit at the end) with the byte range left out; `offset` (and `max_bytes`, at most
  RESULT_PAGE_MAX_BYTES) reads any other part. A judge pays for the evidence it reads, not for a whole log
  it did not need (bench/tools);
- `search_session`: literal, case-insensitive terms (all must occur in an entry; no patterns, so matching is
  linear in the trace), at most SEARCH_MAX_LIMIT matches with a snippet each, query at most
  SEARCH_QUERY_MAX_CHARS;
- `get_session_summary`: the session's outline, lists cut to fixed lengths;
- all answers of one question together at most ANSWER_BUDGET_CHARS characters (less for a model with a
  small context window; an answer past it is cut and says so), which bounds what tool rounds add to the
  judge's prompt (`conversation_allowance`, reserved by the context fit).
Unknown call ids, bad arguments, unknown tools and calls past the limit are tool errors the judge can read,
never exceptions.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_TOOL_CALLS = 6
TOOL_RESULT_MAX_BYTES = 16_000
OUTPUT_HEAD_BYTES = 4_000
OUTPUT_TAIL_BYTES = TOOL_RESULT_MAX_BYTES - OUTPUT_HEAD_BYTES
# What one `get_tool_result` call shows of a stored output, unless it asks for a part (about 1,000 tokens):
# the opening (the command's banner, the first error) and the end (summaries, the last traceback).
RESULT_VIEW_BYTES = 4_000
VIEW_HEAD_BYTES = 1_000
VIEW_TAIL_BYTES = RESULT_VIEW_BYTES - VIEW_HEAD_BYTES
RESULT_PAGE_MAX_BYTES = 8_000
SEARCH_DEFAULT_LIMIT = 10
SEARCH_MAX_LIMIT = 20
SEARCH_QUERY_MAX_CHARS = 200
SEARCH_MAX_TERMS = 8
SEARCH_COUNT_CAP = 1_000
SNIPPET_CHARS = 160
CALL_ID_MAX_CHARS = 200
ANSWER_BUDGET_CHARS = 40_000
# Per call: the call itself and the vendors' framing of a round.
_ROUND_OVERHEAD_CHARS = 600
# What tool rounds can add to one question's prompt at most: every answer (the budget) plus each call's
# overhead. The context fit reserves it for tool questions (`conversation_allowance` for a smaller budget).
TOOL_CONVERSATION_ALLOWANCE_CHARS = ANSWER_BUDGET_CHARS + MAX_TOOL_CALLS * _ROUND_OVERHEAD_CHARS


def conversation_allowance(budget_chars: int) -> int:
    """What one question's tool rounds add at most when its answers share `budget_chars`."""
    return budget_chars + MAX_TOOL_CALLS * _ROUND_OVERHEAD_CHARS


# Bounds on what the runner sends back of a tool round (the judge's own text and calls, echoed in the next
# request), so a request's size has a true upper bound the spend estimate can price:
MAX_TOOL_ROUNDS = MAX_TOOL_CALLS + 1  # six answered calls and, at most, one more round whose calls are refused
CALLS_PER_ROUND_ECHOED = MAX_TOOL_CALLS + 1  # calls past this in one round are dropped from the conversation
ROUND_TEXT_MAX_CHARS = 2_000  # the judge's text beside its calls, cut
CALL_ARGUMENTS_MAX_BYTES = 2_048  # longer arguments are not echoed: the call gets a tool error
CALL_NAME_MAX_CHARS = 64
# A judge's requests for one tool question: the ask, its tool rounds, one repair re-ask.
REQUESTS_PER_TOOL_QUESTION_MAX = 1 + MAX_TOOL_ROUNDS + 1
_ANSWER_NOTE_CHARS = 200  # a refusal or a "budget reached" answer past the budget, per call


def tool_rounds_bytes_max(budget_chars: int = ANSWER_BUDGET_CHARS) -> int:
    """The most UTF-8 bytes the tool rounds add to one request (what the spend estimate's upper bound adds
    per call of a tool question): every answer (4 bytes a character at most; past the budget only short
    notes) and every round's echoed text and calls."""
    answers = budget_chars + MAX_TOOL_ROUNDS * CALLS_PER_ROUND_ECHOED * _ANSWER_NOTE_CHARS
    echoed_call = CALL_ARGUMENTS_MAX_BYTES + 4 * (CALL_ID_MAX_CHARS + CALL_NAME_MAX_CHARS) + _ROUND_OVERHEAD_CHARS
    per_round = 4 * ROUND_TEXT_MAX_CHARS + CALLS_PER_ROUND_ECHOED * echoed_call
    return 4 * answers + MAX_TOOL_ROUNDS * per_round

GET_TOOL_RESULT = "get_tool_result"
SEARCH_SESSION = "search_session"
GET_SESSION_SUMMARY = "get_session_summary"
TOOL_NAMES: tuple[str, ...] = (GET_SESSION_SUMMARY, SEARCH_SESSION, GET_TOOL_RESULT)

_TEXT_KINDS = frozenset({"user_message", "assistant_message", "assistant_thinking", "plan"})
_FILE_KEYS = ("file_path", "path", "notebook_path", "filename")
_COMMAND_KEYS = ("command", "cmd")
_SUMMARY_LIMITS = {"user_messages": 10, "plans": 3, "commands": 20, "files_touched": 40, "errors": 20,
                   "truncated_results": 30}


def _schema(properties: dict[str, Any]) -> dict[str, Any]:
    # Every property required and nullable where optional: the shape OpenAI's strict function calling wants,
    # which Anthropic's `input_schema` and MCP accept as is.
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


TOOL_SPECS: tuple[dict[str, Any], ...] = (
    {
        "name": GET_SESSION_SUMMARY,
        "description": (
            "The session's outline: entry counts by kind, the user's requests and plans with their positions, "
            "tools used, commands run, files touched, failed tool calls, and the tool results whose output "
            "the trace shows only as a <truncated: ...> marker. Start here."
        ),
        "parameters": _schema({}),
    },
    {
        "name": SEARCH_SESSION,
        "description": (
            "Find trace entries containing every word of `query` (literal, case-insensitive; full tool outputs "
            "included, also those truncated in the trace). Answers each match's position (`pos`), kind, tool, "
            f"call_id and a snippet; at most {SEARCH_MAX_LIMIT} matches."
        ),
        "parameters": _schema({
            "query": {"type": "string", "description": f"Words to find, at most {SEARCH_QUERY_MAX_CHARS} characters."},
            "limit": {"type": ["integer", "null"],
                      "description": f"Matches to return, 1-{SEARCH_MAX_LIMIT} (null: {SEARCH_DEFAULT_LIMIT})."},
        }),
    },
    {
        "name": GET_TOOL_RESULT,
        "description": (
            "The stored output of one tool call, by the `call_id` of its tool_invocation / tool_result entry "
            f"(redacted; stored outputs keep at most their first {OUTPUT_HEAD_BYTES} and last "
            f"{OUTPUT_TAIL_BYTES} bytes). Without `offset`: an output of up to {RESULT_VIEW_BYTES} bytes whole, "
            f"a longer one as its first {VIEW_HEAD_BYTES} and last {VIEW_TAIL_BYTES} bytes, naming the byte "
            "range not shown. With `offset`: the bytes from there (`max_bytes` of them, "
            f"{RESULT_VIEW_BYTES} by default, at most {RESULT_PAGE_MAX_BYTES}) and the offset to read on from."
        ),
        "parameters": _schema({
            "call_id": {"type": "string", "description": "The call_id as it appears in the trace."},
            "offset": {"type": ["integer", "null"],
                       "description": "Byte offset in the stored output to read from (null: its opening and end)."},
            "max_bytes": {"type": ["integer", "null"],
                          "description": f"Bytes to read from `offset`, 1-{RESULT_PAGE_MAX_BYTES} "
                                         f"(null: {RESULT_VIEW_BYTES})."},
        }),
    },
)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def omitted_bytes(text: str, *, head_bytes: int = OUTPUT_HEAD_BYTES, tail_bytes: int = OUTPUT_TAIL_BYTES) -> int:
    """How many bytes `cap_output` leaves out of `text` (0 when it fits)."""
    raw = _utf8(text)
    if len(raw) <= head_bytes + tail_bytes:
        return 0
    head = raw[:head_bytes].decode("utf-8", "ignore")
    tail = raw[len(raw) - tail_bytes:].decode("utf-8", "ignore")
    return len(raw) - len(_utf8(head)) - len(_utf8(tail))


def cap_output(text: str, *, head_bytes: int = OUTPUT_HEAD_BYTES, tail_bytes: int = OUTPUT_TAIL_BYTES) -> str:
    """`text` whole when it fits head + tail bytes, else its first and last bytes around a marker that says
    how many bytes were left out (cut on UTF-8 character boundaries)."""
    raw = _utf8(text)
    if len(raw) <= head_bytes + tail_bytes:
        return text
    head = raw[:head_bytes].decode("utf-8", "ignore")
    tail = raw[len(raw) - tail_bytes:].decode("utf-8", "ignore")
    omitted = len(raw) - len(_utf8(head)) - len(_utf8(tail))
    return f"{head}\n<omitted: {omitted} bytes from the middle of this output ({len(raw)} bytes in all)>\n{tail}"


def _whole_chars(raw: bytes, start: int, stop: int) -> tuple[int, int]:
    """`start` and `stop` moved onto UTF-8 character boundaries of `raw` (start forward, stop back)."""
    while start < len(raw) and raw[start] & 0xC0 == 0x80:
        start += 1
    while stop < len(raw) and stop > start and raw[stop] & 0xC0 == 0x80:
        stop -= 1
    return start, max(start, stop)


def view_output(text: str, offset: int | None = None, max_bytes: int | None = None) -> dict[str, Any]:
    """What `get_tool_result` shows of a stored output: the part asked for, where it is, and where to read on.

    Without `offset`, an output of up to RESULT_VIEW_BYTES whole and a longer one as its opening and end with
    the byte range between them named; with `offset`, up to `max_bytes` bytes from there (cut on character
    boundaries) and `next_offset` (None at the end). Offsets count UTF-8 bytes of the stored output.
    """
    raw = _utf8(text)
    size = len(raw)
    if offset is None:
        if size <= RESULT_VIEW_BYTES:
            return {"stored_bytes": size, "output": text}
        _, head_end = _whole_chars(raw, 0, VIEW_HEAD_BYTES)
        tail_start, _ = _whole_chars(raw, size - VIEW_TAIL_BYTES, size)
        head = raw[:head_end].decode("utf-8", "surrogatepass")
        tail = raw[tail_start:].decode("utf-8", "surrogatepass")
        gap = (f"\n<not shown: bytes {head_end}-{tail_start} of {size}; read them with "
               f"get_tool_result(call_id, offset={head_end})>\n")
        return {"stored_bytes": size, "shown": [[0, head_end], [tail_start, size]], "next_offset": head_end,
                "output": head + gap + tail}
    length = RESULT_VIEW_BYTES if max_bytes is None else max_bytes
    start, stop = _whole_chars(raw, offset, min(offset + length, size))
    return {"stored_bytes": size, "shown": [[start, stop]], "next_offset": stop if stop < size else None,
            "output": raw[start:stop].decode("utf-8", "surrogatepass")}


def _whole_number_in(value: Any, low: int, high: int) -> bool:
    """A JSON integer (not a boolean, which Python counts as one) from `low` to `high`."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _short(text: str, limit: int) -> str:
    text = _collapse(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass(frozen=True)
class ToolAnswer:
    """What a tool call answers: JSON text for the judge, whether it is an error, and the call as recorded
    for the verdict's `tools_used` (None for a call past the limit, which is refused, not made)."""

    content: str
    is_error: bool
    record: dict[str, Any] | None


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


class SessionTools:
    """The tools over one session (shared by every question of a run; read-only after construction)."""

    def __init__(self, entries: Sequence[Mapping[str, Any]], *, session_id: str = "",
                 session_chain: Sequence[str] = (),
                 full_output: Callable[[int], str | None] = lambda _pos: None) -> None:
        self._entries = entries
        self._full_output = full_output
        self.session_id = session_id
        self.session_chain = list(session_chain) or ([session_id] if session_id else [])
        self._results: dict[str, int] = {}
        self._invocations: dict[str, int] = {}
        for pos, entry in enumerate(entries):
            call_id = entry.get("call_id")
            if not isinstance(call_id, str):
                continue
            if entry.get("kind") == "tool_result":
                self._results.setdefault(call_id, pos)
            elif entry.get("kind") == "tool_invocation":
                self._invocations.setdefault(call_id, pos)
        self._summary: str | None = None

    @property
    def entry_count(self) -> int:
        return len(self._entries)

    def conversation(self, budget_chars: int = ANSWER_BUDGET_CHARS) -> ToolConversation:
        """A fresh per-question call counter and answer budget (smaller for a small context window)."""
        return ToolConversation(self, budget_chars=budget_chars)

    # -- the tools ---------------------------------------------------------------------------------
    def output_of(self, pos: int) -> str:
        """A tool result's output as a tool shows it: the full (capped) output when the trace truncated it."""
        entry = self._entries[pos]
        if entry.get("truncated"):
            full = self._full_output(pos)
            if full is not None:
                return full  # capped by whoever stored it, with the same `cap_output`
        output = entry.get("output")
        return cap_output(output if isinstance(output, str) else "")

    def get_tool_result(self, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        call_id = arguments.get("call_id")
        if not isinstance(call_id, str) or not call_id.strip() or len(call_id) > CALL_ID_MAX_CHARS:
            return _error(f"call_id must be a non-empty string of at most {CALL_ID_MAX_CHARS} characters, as "
                          "in the trace's tool_invocation / tool_result entries."), True
        call_id = call_id.strip()
        pos = self._results.get(call_id)
        if pos is None:
            invoked = self._invocations.get(call_id)
            if invoked is not None:
                tool = self._entries[invoked].get("tool")
                return _error(f"The call {call_id!r} ({tool}, pos {invoked}) has no recorded result in this "
                              "session."), True
            return _error(f"No tool call with call_id {call_id!r} in this session. Use a call_id exactly as the "
                          "trace shows it; search_session finds calls by their content."), True
        entry = self._entries[pos]
        full_size = entry.get("output_bytes")
        output = self.output_of(pos)
        offset, max_bytes = arguments.get("offset"), arguments.get("max_bytes")
        stored = len(_utf8(output))
        if offset is not None and not _whole_number_in(offset, 0, max(stored - 1, 0)):
            return _error(f"offset must be null or a whole number from 0 to {max(stored - 1, 0)} (the stored "
                          f"output of {call_id!r} is {stored} bytes)."), True
        if max_bytes is not None and not _whole_number_in(max_bytes, 1, RESULT_PAGE_MAX_BYTES):
            return _error(f"max_bytes must be null or a whole number from 1 to {RESULT_PAGE_MAX_BYTES}."), True
        available = not entry.get("truncated") or self._full_output(pos) is not None
        answer: dict[str, Any] = {"call_id": call_id, "tool": entry.get("tool"), "pos": pos,
                                  "is_error": bool(entry.get("is_error")),
                                  "output_bytes": full_size if isinstance(full_size, int) else stored,
                                  **view_output(output, offset, max_bytes)}
        if not available:
            answer["note"] = "The full output of this call is not available; only its marker is stored."
        return json.dumps(answer, ensure_ascii=False), False

    def search_session(self, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            return _error("query must be a non-empty string of words to find."), True
        if len(query) > SEARCH_QUERY_MAX_CHARS:
            return _error(f"query is longer than {SEARCH_QUERY_MAX_CHARS} characters; search for fewer words."), True
        limit = arguments.get("limit")
        if limit is None:
            limit = SEARCH_DEFAULT_LIMIT
        if not _whole_number_in(limit, 1, SEARCH_MAX_LIMIT):
            return _error(f"limit must be an integer from 1 to {SEARCH_MAX_LIMIT}, or null."), True
        terms = list(dict.fromkeys(query.lower().split()))[:SEARCH_MAX_TERMS]
        matches: list[dict[str, Any]] = []
        total = 0
        for pos, entry in enumerate(self._entries):
            text = self._searchable(pos, entry)
            lowered = text.lower()
            # Literal substring tests (linear in the text): the query is never compiled into a pattern.
            if not all(term in lowered for term in terms):
                continue
            total += 1
            if len(matches) < limit:
                matches.append(self._match(pos, entry, text, lowered, terms[0]))
            if total >= SEARCH_COUNT_CAP:
                break
        answer = {"query": query.strip(), "terms": terms, "total_matches": total,
                  "more": total > len(matches), "matches": matches}
        if total >= SEARCH_COUNT_CAP:
            answer["note"] = f"Counting stopped at {SEARCH_COUNT_CAP} matches; narrow the query."
        return json.dumps(answer, ensure_ascii=False), False

    def get_session_summary(self, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        if self._summary is None:
            self._summary = json.dumps(self._outline(), ensure_ascii=False)
        return self._summary, False

    # -- internals ---------------------------------------------------------------------------------
    def _searchable(self, pos: int, entry: Mapping[str, Any]) -> str:
        kind = entry.get("kind")
        if kind == "tool_result":
            return f"{entry.get('tool', '')}\n{self.output_of(pos)}"
        if kind == "tool_invocation":
            return f"{entry.get('tool', '')}\n{json.dumps(entry.get('arguments') or {}, ensure_ascii=False)}"
        text = entry.get("text")
        return text if isinstance(text, str) else ""

    @staticmethod
    def _match(pos: int, entry: Mapping[str, Any], text: str, lowered: str, term: str) -> dict[str, Any]:
        at = lowered.find(term)
        # `lower()` keeps positions for almost all text; where it does not, quote the lowered text instead.
        source = text if len(lowered) == len(text) else lowered
        start = max(0, at - SNIPPET_CHARS // 3)
        snippet = source[start:start + SNIPPET_CHARS]
        match: dict[str, Any] = {"pos": pos, "kind": entry.get("kind"), "timestamp": entry.get("timestamp")}
        for key in ("tool", "call_id"):
            if entry.get(key) is not None:
                match[key] = entry.get(key)
        match["snippet"] = ("…" if start else "") + _collapse(snippet) + ("…" if start + SNIPPET_CHARS < len(source)
                                                                          else "")
        return match

    def _outline(self) -> dict[str, Any]:
        kinds: Counter[str] = Counter()
        tools: Counter[str] = Counter()
        lists: dict[str, list[Any]] = {name: [] for name in _SUMMARY_LIMITS}
        counts: Counter[str] = Counter()
        files: dict[str, None] = {}
        first_user: dict[str, Any] | None = None
        subagent_entries = 0
        for pos, entry in enumerate(self._entries):
            kind = str(entry.get("kind"))
            kinds[kind] += 1
            if entry.get("agent_id") is not None:
                subagent_entries += 1
            if kind == "user_message":
                text = str(entry.get("text") or "")
                if first_user is None:
                    first_user = {"pos": pos, "text": _short(text, 600)}
                self._add(lists, counts, "user_messages", {"pos": pos, "text": _short(text, 200)})
            elif kind == "plan":
                self._add(lists, counts, "plans", {"pos": pos, "text": _short(str(entry.get("text") or ""), 300)})
            elif kind == "tool_invocation":
                tools[str(entry.get("tool"))] += 1
                args = entry.get("arguments") or {}
                if isinstance(args, Mapping):
                    command = next((args[k] for k in _COMMAND_KEYS if isinstance(args.get(k), str)), None)
                    if command is not None:
                        self._add(lists, counts, "commands", {"pos": pos, "command": _short(command, 200)})
                    for key in _FILE_KEYS:
                        if isinstance(args.get(key), str) and args[key].strip():
                            files.setdefault(_short(args[key], 200))
            elif kind == "tool_result":
                ref = {"pos": pos, "tool": entry.get("tool"), "call_id": entry.get("call_id")}
                if entry.get("is_error"):
                    self._add(lists, counts, "errors", ref)
                if entry.get("truncated"):
                    self._add(lists, counts, "truncated_results", {**ref, "output_bytes": entry.get("output_bytes")})
        file_list = list(files)
        counts["files_touched"] = len(file_list)
        lists["files_touched"] = file_list[:_SUMMARY_LIMITS["files_touched"]]
        first = self._entries[0].get("timestamp") if self._entries else None
        last = self._entries[-1].get("timestamp") if self._entries else None
        outline: dict[str, Any] = {
            "session_id": self.session_id, "session_chain": self.session_chain, "entries": len(self._entries),
            "entries_by_kind": dict(sorted(kinds.items())), "first_timestamp": first, "last_timestamp": last,
            "first_user_message": first_user, "tools_used": dict(tools.most_common()),
            "subagent_entries": subagent_entries,
        }
        for name, items in lists.items():
            outline[name] = items
            if counts[name] > len(items):
                outline[f"{name}_total"] = counts[name]
        return outline

    @staticmethod
    def _add(lists: dict[str, list[Any]], counts: Counter[str], name: str, item: Any) -> None:
        counts[name] += 1
        if len(lists[name]) < _SUMMARY_LIMITS[name]:
            lists[name].append(item)


@dataclass
class ToolConversation:
    """One question's tool calls: the limit of MAX_TOOL_CALLS, the answer budget and the record of the calls."""

    tools: SessionTools
    calls: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    answered_chars: int = 0
    budget_chars: int = ANSWER_BUDGET_CHARS

    @property
    def exhausted(self) -> bool:
        return len(self.calls) >= MAX_TOOL_CALLS

    def call(self, name: str, arguments: Any) -> ToolAnswer:
        """Answer one call. Never raises for anything the judge sends."""
        if self.exhausted:
            self.refused += 1
            refusal = _error(f"The limit of {MAX_TOOL_CALLS} tool calls for this question is reached; answer now "
                             "with the JSON verdict from what you have.")
            self.answered_chars += len(refusal)
            return ToolAnswer(refusal, True, None)
        handlers: dict[str, Callable[[Mapping[str, Any]], tuple[str, bool]]] = {
            GET_TOOL_RESULT: self.tools.get_tool_result,
            SEARCH_SESSION: self.tools.search_session,
            GET_SESSION_SUMMARY: self.tools.get_session_summary,
        }
        handler = handlers.get(name)
        if handler is None:
            content, is_error = _error(f"There is no tool {str(name)[:64]!r}; the tools are "
                                       f"{', '.join(TOOL_NAMES)}."), True
        elif not isinstance(arguments, Mapping):
            content, is_error = _error(f"The arguments must be a JSON object of at most {CALL_ARGUMENTS_MAX_BYTES} "
                                       "bytes."), True
        else:
            content, is_error = handler(arguments)
        content = self._within_budget(content)
        record = {"tool": name if name in handlers else "unknown_tool",
                  "arguments": _recorded_arguments(name, arguments), "is_error": is_error}
        self.calls.append(record)
        return ToolAnswer(content, is_error, record)

    def _within_budget(self, content: str) -> str:
        left = self.budget_chars - self.answered_chars
        if len(content) > left:
            note = (f"\n<cut: this question's tool answers reached {self.budget_chars} characters; answer now "
                    "from what you have>")
            content = content[:max(left - len(note), 0)] + note
        self.answered_chars += len(content)
        return content


# A null that says something ("the default limit"); a null offset is just the call without one.
_NULL_RECORDED = frozenset({"query", "limit"})


def _recorded_arguments(name: str, arguments: Any) -> dict[str, Any]:
    """The arguments kept in `tools_used`: the known parameters of a known tool, bounded."""
    if not isinstance(arguments, Mapping):
        return {}
    keep: dict[str, Any] = {}
    for key in {GET_TOOL_RESULT: ("call_id", "offset", "max_bytes"), SEARCH_SESSION: ("query", "limit")}.get(name, ()):
        value = arguments.get(key)
        if isinstance(value, str):
            keep[key] = value[:200]
        elif isinstance(value, int) and not isinstance(value, bool):
            keep[key] = value
        elif key in arguments and value is None and key in _NULL_RECORDED:
            keep[key] = None
    return keep

