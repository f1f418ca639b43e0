"""FAKE LLM vendor for local development and tests only: speaks the Anthropic and OpenAI wire formats.

It never talks to a real vendor and binds 127.0.0.1 only. The real `anthropic` / `openai` SDKs are
pointed at it through `base_url`, so adapters, the worker, e2e tests and benchmarks run offline.

Endpoints (vendor wire formats, shapes taken from the SDKs' response types):
  POST /v1/messages                 Anthropic Messages (structured output via `output_config.format`)
  POST /v1/messages/count_tokens    Anthropic token counting
  POST /v1/chat/completions         OpenAI Chat Completions (`response_format` json_schema)
  GET  /v1/models/{id}              either vendor (Anthropic when `anthropic-version` is sent)
  …/messages/batches, /v1/files, /v1/batches   both vendors' batch APIs (devstack/fake_vendor_batches.py)
Control endpoints (drive a separate process, e.g. `python -m devstack.fake_vendor --port 5100`):
  POST /_fake/script    a rule object, or {"rules": [...], "options": {...}} → {"rule_ids": [...]}
  POST /_fake/options   global options (see `FakeVendorOptions`) → the effective options
  POST /_fake/reset     drop rules, recorded requests, caches, rate-limit state and options
  GET  /_fake/requests  {"requests": [...]} (`?since=<n>` skips the first n)
  GET  /_fake/stats     counters: requests by path/status, cache reads/writes, tokens, max in-flight
  GET  /_fake/health    {"ok": true}

Rate limits: with `rate_limit_per_minute` = R, generate calls draw on a token bucket of R calls refilled
at R a minute (past it: 429 with retry-after), and every generate answer advertises the budget the
way each vendor does (`anthropic-ratelimit-requests-limit/-remaining/-reset`,
`x-ratelimit-limit-requests` / `x-ratelimit-remaining-requests` / `x-ratelimit-reset-requests`).

Default behaviour: a valid JSON object for the requested schema. When the user prompt carries
`Category: <category>` and `ID: <question_id>` lines it is a verdict with a deterministic score
(2..5 from a hash of the question id) and a finding that cites a file from the trace; otherwise a
minimal instance of the schema (probes, retrospectives). Rules (`FakeVendor.script`) override that per
question id / prompt substring for a number of requests: latency, HTTP status (429 with retry-after,
500, 529, 401...), malformed or fenced output, wrong ids, a fixed score, hang, prompt too long, tool calls.

Tool use (`devstack.fake_vendor_tools`): when a request offers tools and does not forbid them, the answer is
a tool call (Anthropic `tool_use`, OpenAI `tool_calls`; scripted with a rule's `tool_calls`, else one call:
`get_tool_result` of the first output the trace shows truncated, or `get_session_summary`) until the script is
done, then the verdict, whose `evidence_entries` cite the positions the tool results named.

Prompt caching is simulated: Anthropic blocks marked `cache_control` are a cache write the first
time their (model, prefix) is seen and a cache read within the TTL afterwards; OpenAI gives
`cached_tokens` for the longest prefix, up to a message boundary before the last message, that the same
(model, prompt_cache_key) was seen with. As with the real vendors a
prefix becomes readable only once the response that wrote it has begun (its first token), so judges
fired concurrently with the first one, before that moment, all pay the cache write.

Timing: `latency` (L) is the whole call; `ttft` the time to the first token (None: the response
begins only when it is complete, L). A streamed request (`"stream": true`: Anthropic server-sent
events, OpenAI `chat.completion.chunk`s with `stream_options.include_usage`) gets its first event at
TTFT and the rest at L; the prefix cache is written at TTFT either way.

Context limits: `context_windows` (exact model name → tokens) lowers a model's window below the
fake's own table, like a gateway or a regional deployment whose real limit is lower than the model's.
Over it, generate and count-tokens answer 400 with each vendor's own "too long" message
(`prompt is too long: X tokens > N maximum`; OpenAI `context_length_exceeded`).

Tokens are estimated as ceil(chars / 4) everywhere (context window, usage, count_tokens).
The API key is never logged, recorded or echoed (unless `echo_key_in_errors` is set, which exists
only to test that callers scrub keys from vendor error text); recorded requests carry a
non-reversible `key_fingerprint` instead.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import math
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from devstack import fake_vendor_batches
from devstack.fake_vendor_tools import (
    ToolTurns,
    anthropic_tool_events,
    anthropic_tool_message,
    arguments_json,
    block_texts,
    openai_tool_chunks,
    openai_tool_completion,
)


class _FakeVendorHTTPServer(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections when a run fans out 12 judges at once,
    # which would make the local stack look slow for reasons real vendors do not have.
    request_queue_size = 128
    daemon_threads = True

HOST = "127.0.0.1"
CHARS_PER_TOKEN = 4
DEFAULT_HANG_SECONDS = 3600.0
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"})
_ANTHROPIC_ALIASES = ("sonnet", "opus", "haiku")
_OPENAI_PREFIXES = ("gpt-", "gpt", "o1", "o3", "o4", "chatgpt", "ft:gpt")

Vendor = Literal["anthropic", "openai"]
Endpoint = Literal["generate", "count_tokens", "any"]


def estimate_tokens(text: str) -> int:
    """The fake's tokenizer: ceil(chars / 4). Callers estimating without a count API use the same rule."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def key_fingerprint(api_key: str) -> str:
    """Non-reversible id of a key, so tests can tell which key a request used without recording it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def context_window_for(model: str, *, one_million_beta: bool = False) -> int:
    """The fake's own window table (deliberately independent of the runner's table)."""
    name = model.lower()
    is_claude = name.removesuffix("[1m]").startswith("claude") or name.removesuffix("[1m]") in _ANTHROPIC_ALIASES
    if is_claude and (name.endswith("[1m]") or one_million_beta):
        return 1_000_000
    if is_claude:
        return 200_000
    if name.startswith("gpt-4.1"):
        return 1_047_576
    if name.startswith("gpt-5"):
        return 400_000
    if re.match(r"^o\d", name):
        return 200_000
    return 128_000


@dataclass
class FakeVendorOptions:
    """Global behaviour, set via `FakeVendor(options=...)`, `.configure(**kw)` or `POST /_fake/options`."""

    latency: float = 0.0  # seconds every generate call takes, L (benchmarks)
    ttft: float | None = None  # seconds to the first token (cache readable, first streamed event); None → L
    rate_limit_per_minute: float | None = None  # token bucket over generate calls; past it → 429
    enforce_context_window: bool = True
    context_windows: dict[str, int] = field(default_factory=dict)  # exact model name → window
    revoked_keys: list[str] = field(default_factory=list)  # besides keys containing "bad"/"revoked"
    allowed_models: list[str] | None = None  # extra accepted models; None → name heuristics only
    cache_ttl_seconds: float = 300.0
    min_cacheable_tokens: int = 0  # real vendors: ~1024; 0 keeps small test traces cacheable
    echo_key_in_errors: bool = False  # ONLY for testing that callers scrub vendor error text
    output_tokens_floor: int = 1


@dataclass
class Rule:
    """One scripted behaviour; `match` is a question id (exact), a substring of the user prompt, or "*"."""

    match: str = "*"
    times: int | None = 1  # None → forever
    vendor: Vendor | None = None
    model: str | None = None
    endpoint: Endpoint = "generate"
    latency: float = 0.0
    status: int | None = None
    retry_after: float | None = None  # seconds; sent as `retry-after-ms` and (ceil) `retry-after`
    should_retry: bool | None = None  # sends `x-should-retry`
    message: str | None = None  # error message override
    error_type: str | None = None
    error_code: str | None = None
    malformed: bool = False
    fenced: bool = False
    wrong_ids: bool = False
    score: int | None = None
    hang: bool = False
    hang_seconds: float = DEFAULT_HANG_SECONDS
    prompt_too_long: bool = False
    text: str | None = None  # raw assistant text override
    # Tool calls to answer with, one per round, before the verdict (see devstack.fake_vendor_tools). A rule
    # applies to each request, and a tool-using question makes one request per round: give it enough `times`.
    tool_calls: list[dict[str, Any]] | None = None
    ignore_tool_choice: bool = False
    id: str = ""
    used: int = 0

    def live(self) -> bool:
        return self.times is None or self.used < self.times

    def applies(self, *, vendor: Vendor, model: str, endpoint: str, question_id: str | None, prompt: str) -> bool:
        if not self.live():
            return False
        if self.vendor is not None and self.vendor != vendor:
            return False
        if self.model is not None and self.model != model:
            return False
        if self.endpoint != "any" and self.endpoint != endpoint:
            return False
        return self.match == "*" or self.match == question_id or self.match in prompt


_RULE_FIELDS = {f.name for f in dataclasses.fields(Rule)} - {"id", "used"}
_OPTION_FIELDS = {f.name for f in dataclasses.fields(FakeVendorOptions)}


def _rule_from(data: Mapping[str, Any]) -> Rule:
    unknown = set(data) - _RULE_FIELDS
    if unknown:
        raise ValueError(f"unknown rule field(s): {sorted(unknown)}; allowed: {sorted(_RULE_FIELDS)}")
    return Rule(**dict(data))


@dataclass
class _Parsed:
    """What the fake needs from one generate/count request, vendor-neutral."""

    vendor: Vendor
    model: str
    blocks: list[tuple[str, dict[str, Any] | None]]  # (text, cache_control) in prompt order
    prompt: str  # text of the last user message
    schema: dict[str, Any] | None
    schema_name: str | None
    max_tokens: int | None
    cache_key: str | None
    one_million_beta: bool
    top_level_cache_control: bool = False
    stream: bool = False
    tools: ToolTurns = field(default_factory=ToolTurns)

    @property
    def total_tokens(self) -> int:
        return sum(estimate_tokens(text) for text, _ in self.blocks)


@dataclass
class _Outcome:
    status: int
    body: bytes
    headers: dict[str, str]
    record: dict[str, Any]
    events: Iterator[bytes] | None = None  # a streamed answer: server-sent events, written as they come


class _VendorHTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.headers = dict(headers or {})


class _TokenBucket:
    def __init__(self, per_minute: float) -> None:
        self.capacity = max(per_minute, 1.0)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float | None:
        """None when a request may proceed, else seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 60.0

    def headers(self, vendor: Vendor) -> dict[str, str]:
        """The key's request budget as each vendor advertises it on every answer (429s included)."""
        limit, remaining = int(self.capacity), int(self.tokens)
        until_full = (self.capacity - self.tokens) / self.rate if self.rate > 0 else 0.0
        if vendor == "anthropic":
            reset = datetime.fromtimestamp(time.time() + until_full, UTC).isoformat(timespec="seconds")
            return {"anthropic-ratelimit-requests-limit": str(limit),
                    "anthropic-ratelimit-requests-remaining": str(remaining),
                    "anthropic-ratelimit-requests-reset": reset.replace("+00:00", "Z")}
        return {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": f"{until_full:.3f}s"}


class FakeVendor:
    """In-process fake vendor. `start()` → base URL on an ephemeral port; use as a context manager too.

    Anthropic SDK: `base_url=fake.anthropic_base_url`; OpenAI SDK: `base_url=fake.openai_base_url`.
    """

    def __init__(self, *, port: int = 0, options: FakeVendorOptions | None = None) -> None:
        self._port = port
        self._initial_options = copy.deepcopy(options) if options else FakeVendorOptions()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._options: FakeVendorOptions = FakeVendorOptions()
        self._bucket: _TokenBucket | None = None
        self._rules: list[Rule] = []
        self._requests: list[dict[str, Any]] = []
        self._cache: dict[str, float] = {}
        self._inflight = 0
        self._max_inflight = 0
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._reset_state()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        server = _FakeVendorHTTPServer((HOST, self._port), _make_handler(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-vendor", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # releases `hang` / latency sleeps so handler threads finish
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeVendor:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeVendor is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    # ----------------------------------------------------------------- scripting

    def script(self, match: str = "*", *, times: int | None = 1, **behaviour: Any) -> str:
        """Add a rule (see `Rule` for fields); returns its id. Rules are tried in insertion order."""
        return self.add_rule({"match": match, "times": times, **behaviour})

    def add_rule(self, data: Mapping[str, Any]) -> str:
        rule = _rule_from(data)
        with self._lock:
            rule.id = f"rule-{next(self._ids)}"
            self._rules.append(rule)
        return rule.id

    def configure(self, **options: Any) -> FakeVendorOptions:
        unknown = set(options) - _OPTION_FIELDS
        if unknown:
            raise ValueError(f"unknown option(s): {sorted(unknown)}; allowed: {sorted(_OPTION_FIELDS)}")
        with self._lock:
            self._options = dataclasses.replace(self._options, **options)
            if "rate_limit_per_minute" in options:
                rate = self._options.rate_limit_per_minute
                self._bucket = _TokenBucket(rate) if rate else None
            return copy.deepcopy(self._options)

    @property
    def options(self) -> FakeVendorOptions:
        with self._lock:
            return copy.deepcopy(self._options)

    def reset(self) -> None:
        with self._lock:
            self._reset_state()

    def _reset_state(self) -> None:
        self._options = copy.deepcopy(self._initial_options)
        rate = self._options.rate_limit_per_minute
        self._bucket = _TokenBucket(rate) if rate else None
        self._rules = []
        self._requests = []
        self._cache = {}
        self._inflight = 0
        self._max_inflight = 0
        self.batches = fake_vendor_batches.BatchState()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request seen (control endpoints excluded), oldest first; never contains an API key."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def requests_for(self, question_id: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("question_id") == question_id]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            reqs = list(self._requests)
            max_inflight = self._max_inflight
        generate = [r for r in reqs if r["endpoint"] == "generate"]
        return {
            "requests": len(reqs),
            "by_path": dict(Counter(r["path"] for r in reqs)),
            "by_status": {str(k): v for k, v in Counter(r["status"] for r in reqs).items()},
            "generate_requests": len(generate),
            "cache_reads": sum(1 for r in generate if r["cache"] == "read"),
            "cache_writes": sum(1 for r in generate if r["cache"] == "write"),
            "input_tokens": sum(r.get("input_tokens", 0) for r in generate),
            "output_tokens": sum(r.get("output_tokens", 0) for r in generate),
            "cache_read_input_tokens": sum(r.get("cache_read_input_tokens", 0) for r in generate),
            "cache_creation_input_tokens": sum(r.get("cache_creation_input_tokens", 0) for r in generate),
            "max_inflight": max_inflight,
        }

    # ----------------------------------------------------------------- request handling

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _enter(self) -> None:
        with self._lock:
            self._inflight += 1
            self._max_inflight = max(self._max_inflight, self._inflight)

    def _leave(self) -> None:
        with self._lock:
            self._inflight -= 1

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            entry["seq"] = len(self._requests)
            self._requests.append(entry)

    def _pick_rule(self, parsed: _Parsed, endpoint: str, question_id: str | None) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.applies(
                    vendor=parsed.vendor,
                    model=parsed.model,
                    endpoint=endpoint,
                    question_id=question_id,
                    prompt=parsed.prompt,
                ):
                    rule.used += 1
                    return rule
        return None

    def _key_error(self, vendor: Vendor, api_key: str | None) -> _VendorHTTPError | None:
        if not api_key:
            return _auth_error(vendor, "No API key provided.")
        with self._lock:
            revoked = api_key in self._options.revoked_keys
            echo = self._options.echo_key_in_errors
        if revoked or "bad" in api_key.lower() or "revoked" in api_key.lower():
            detail = f" ({api_key})" if echo else ""
            return _auth_error(vendor, f"Invalid API key{detail}.")
        return None

    def _model_known(self, vendor: Vendor, model: str) -> bool:
        name = model.lower()
        if "unknown" in name:
            return False
        with self._lock:
            allowed = self._options.allowed_models
        if allowed is not None and model in allowed:
            return True
        if vendor == "anthropic":
            base = name.removesuffix("[1m]")
            return base.startswith("claude") or base in _ANTHROPIC_ALIASES
        return name.startswith(_OPENAI_PREFIXES)

    def _window(self, parsed: _Parsed) -> int:
        with self._lock:
            override = self._options.context_windows.get(parsed.model)
        return override or context_window_for(parsed.model, one_million_beta=parsed.one_million_beta)

    def handle_generate(
        self,
        vendor: Vendor,
        endpoint: Literal["generate", "count_tokens"],
        body: dict[str, Any],
        headers: Mapping[str, str],
        api_key: str | None,
    ) -> _Outcome:
        started = time.monotonic()
        at = _now_iso()
        request_id = f"req_fake_{next(self._ids):06d}"
        record: dict[str, Any] = {
            "at": at,
            "vendor": vendor,
            "endpoint": endpoint,
            "path": headers.get(":path", ""),
            "request_id": request_id,
            "headers": {k: v for k, v in headers.items() if k not in _SECRET_HEADERS and not k.startswith(":")},
            "key_fingerprint": key_fingerprint(api_key) if api_key else None,
            "retry_count": _int_or_none(headers.get("x-stainless-retry-count")),
            "model": None,
            "question_id": None,
            "category": None,
            "rule": None,
            "cache": "none",
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
        self._enter()
        events: Iterator[bytes] | None = None
        try:
            try:
                status, payload, extra_headers = self._generate(vendor, endpoint, body, headers, api_key, record)
            except _VendorHTTPError as err:
                status = err.status
                payload = _error_body(vendor, err, request_id)
                extra_headers = err.headers
                record["error"] = err.message.replace(api_key, "[key]") if api_key else err.message
            if isinstance(payload, _Stream):
                events = self._streamed(payload, record, started)
        finally:
            if events is None:
                self._leave()
        id_header = "request-id" if vendor == "anthropic" else "x-request-id"
        out_headers = {id_header: request_id, **extra_headers}
        record.update(status=status, duration_ms=int((time.monotonic() - started) * 1000))
        self._record(record)
        if events is not None:
            return _Outcome(status, b"", {**out_headers, "content-type": "text/event-stream"}, record, events)
        return _Outcome(status, json.dumps(payload).encode(), out_headers, record)

    def _streamed(self, stream: _Stream, record: dict[str, Any], started: float) -> Iterator[bytes]:
        """The answer's events: the first at once (the response has begun), the rest after the remaining
        generation time. Counted in flight until the last event is written."""
        try:
            events = iter(stream.events)
            yield next(events)
            self._sleep(stream.remaining_seconds)
            yield from events
        finally:
            self._leave()
            with self._lock:
                record["duration_ms"] = int((time.monotonic() - started) * 1000)

    def _generate(
        self,
        vendor: Vendor,
        endpoint: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        api_key: str | None,
        record: dict[str, Any],
    ) -> tuple[int, Any, dict[str, str]]:
        if (err := self._key_error(vendor, api_key)) is not None:
            raise err
        parsed = _parse_request(vendor, body, headers)
        question_id, category = _find_question(parsed.prompt)
        record.update(
            model=parsed.model,
            question_id=question_id,
            category=category,
            prompt_cache_key=parsed.cache_key,
            schema_name=parsed.schema_name,
            structured_output=parsed.schema is not None,
            cache_control_blocks=sum(1 for _, cc in parsed.blocks if cc) + int(parsed.top_level_cache_control),
            max_tokens=parsed.max_tokens,
            prompt_chars=len(parsed.prompt),
            total_chars=sum(len(t) for t, _ in parsed.blocks),
        )
        if not self._model_known(vendor, parsed.model):
            raise _not_found(vendor, parsed.model)

        with self._lock:
            enforce = self._options.enforce_context_window
            floor = self._options.output_tokens_floor
        window = self._window(parsed)
        if enforce and parsed.total_tokens > window:
            raise _too_long(vendor, parsed.total_tokens, window)  # vendors reject these up front

        rule = self._pick_rule(parsed, endpoint, question_id)
        record["rule"] = rule.id if rule else None
        latency = ttft = 0.0
        budget: dict[str, str] = {}
        if endpoint == "generate":
            with self._lock:
                latency = self._options.latency
                ttft = latency if self._options.ttft is None else min(max(self._options.ttft, 0.0), latency)
                wait = self._bucket.take() if self._bucket is not None else None
                budget = self._bucket.headers(vendor) if self._bucket is not None else {}
            if wait is not None:
                error = _rate_limited(vendor, wait)
                error.headers.update(budget)
                raise error
        # The cache is looked up on arrival and written when the response begins, like the real vendors:
        # requests that arrive before the first token of the one writing a prefix cannot read it yet.
        usage, outcome, commit = self._cache_usage(parsed)
        self._sleep(ttft)
        if rule is not None:
            self._sleep(rule.latency)
            if rule.hang:
                self._sleep(rule.hang_seconds)
                raise _VendorHTTPError(504, "fake vendor hang ended", error_type="api_error")
            if rule.prompt_too_long:
                raise _too_long(vendor, parsed.total_tokens + 1_000_000, self._window(parsed))
            if rule.status is not None and rule.status >= 400:
                raise _scripted_error(vendor, rule)

        total = parsed.total_tokens
        if endpoint == "count_tokens":
            record["input_tokens"] = total
            return 200, {"input_tokens": total}, {}

        call = parsed.tools.next_call(rule.tool_calls if rule is not None else None,
                                      context="\n".join(text for text, _ in parsed.blocks),
                                      ignore_choice=rule is not None and rule.ignore_tool_choice)
        # Tool results are session data the judge sent back (dev fake only: recorded for tests to inspect).
        record.update(tools_offered=parsed.tools.offered, tool_choice=parsed.tools.choice,
                      tool_results_seen=len(parsed.tools.results), tool_results=list(parsed.tools.results),
                      tool_call=call["name"] if call else None)
        if call is not None:
            if rule is not None and rule.tool_calls is None:
                with self._lock:
                    rule.used -= 1  # a rule about the answer (malformed, score, ...) waits for the verdict
            return self._tool_answer(parsed, call, usage, commit, outcome, record, latency - ttft, floor)
        text = _reply_text(parsed, question_id, category, rule)
        output_tokens = max(estimate_tokens(text), floor)
        commit()
        record.update(usage, output_tokens=output_tokens, streamed=parsed.stream)
        record["cache"] = outcome
        if vendor == "anthropic":
            message = _anthropic_message(parsed.model, text, usage, output_tokens, record["request_id"])
            if parsed.stream:
                return 200, _Stream(_anthropic_events(message), latency - ttft), budget
            self._sleep(latency - ttft)
            return 200, message, budget
        completion = _openai_completion(parsed.model, text, usage, output_tokens)
        if parsed.stream:
            return 200, _Stream(_openai_chunks(completion), latency - ttft), budget
        self._sleep(latency - ttft)
        return 200, completion, budget

    def _tool_answer(self, parsed: _Parsed, call: dict[str, Any], usage: dict[str, int], commit: Callable[[], None],
                     outcome: str, record: dict[str, Any], remaining: float,
                     floor: int) -> tuple[int, Any, dict[str, str]]:
        """Answer with one tool call (devstack.fake_vendor_tools) in the request's wire format."""
        output_tokens = max(estimate_tokens(arguments_json(call)) + 10, floor)
        commit()
        record.update(usage, output_tokens=output_tokens, streamed=parsed.stream, cache=outcome)
        if parsed.vendor == "anthropic":
            message = anthropic_tool_message(parsed.model, call, f"toolu_fake_{next(self._ids):06d}", usage,
                                             output_tokens, record["request_id"])
            if parsed.stream:
                return 200, _Stream(anthropic_tool_events(message, _sse), remaining), {}
            self._sleep(remaining)
            return 200, message, {}
        completion = openai_tool_completion(_openai_completion(parsed.model, "", usage, output_tokens), call,
                                            f"call_fake_{next(self._ids):06d}")
        if parsed.stream:
            return 200, _Stream(openai_tool_chunks(completion, _sse), remaining), {}
        self._sleep(remaining)
        return 200, completion, {}

    def _cache_usage(self, parsed: _Parsed) -> tuple[dict[str, int], str, Callable[[], None]]:
        """Usage split into uncached / cache read / cache write, the outcome ("read"|"write"|"none"), and
        a callback that makes the prefix readable (called once the response is ready)."""
        total = parsed.total_tokens
        with self._lock:
            ttl = self._options.cache_ttl_seconds
            floor = self._options.min_cacheable_tokens
        now = time.monotonic()
        breakpoints: list[tuple[str, int, float]] = []  # (cache key, prefix tokens, ttl)
        digest = hashlib.sha256()
        prefix_tokens = 0
        last_index = len(parsed.blocks) - 1
        for index, (text, cache_control) in enumerate(parsed.blocks):
            digest.update(text.encode())
            digest.update(b"\x00")
            prefix_tokens += estimate_tokens(text)
            if parsed.vendor == "anthropic":
                marked = cache_control is not None or (parsed.top_level_cache_control and index == last_index)
                if not marked:
                    continue
                block_ttl = 3600.0 if (cache_control or {}).get("ttl") == "1h" else ttl
                key = f"anthropic|{parsed.model}|{digest.hexdigest()}"
            else:
                if index == last_index:  # OpenAI caches the prefix before the final user turn
                    continue
                block_ttl = ttl
                key = f"openai|{parsed.model}|{parsed.cache_key or ''}|{digest.hexdigest()}"
            if prefix_tokens >= max(floor, 1):
                breakpoints.append((key, prefix_tokens, block_ttl))
        # OpenAI keeps every message boundary of the prefix (the longest one seen before is read), so a tool
        # round, which repeats the conversation so far and adds to it, reads what earlier requests wrote.

        read = 0
        with self._lock:
            for key, tokens, _ in reversed(breakpoints):
                if self._cache.get(key, 0.0) > now:
                    read = tokens
                    break
        cached_upto = breakpoints[-1][1] if breakpoints else 0
        write = cached_upto - read if parsed.vendor == "anthropic" else 0
        usage = {
            "input_tokens": total - read - write,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": write,
        }

        def commit() -> None:
            done = time.monotonic()
            with self._lock:
                for key, _, block_ttl in breakpoints:
                    self._cache[key] = done + block_ttl

        outcome = "read" if read else "write" if breakpoints else "none"
        return usage, outcome, commit

    def handle_model(self, vendor: Vendor, model: str, api_key: str | None) -> tuple[int, Any]:
        if (err := self._key_error(vendor, api_key)) is not None:
            return err.status, _error_body(vendor, err, "req_fake_models")
        if not self._model_known(vendor, model):
            err = _not_found(vendor, model)
            return err.status, _error_body(vendor, err, "req_fake_models")
        if vendor == "anthropic":
            return 200, {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "2025-01-01T00:00:00Z",
            }
        return 200, {"id": model, "object": "model", "created": 1735689600, "owned_by": "fake-vendor"}


# ------------------------------------------------------------------------------------- wire helpers


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_text(content: Any) -> list[tuple[str, dict[str, Any] | None]]:
    if isinstance(content, str):
        return [(content, None)]
    blocks: list[tuple[str, dict[str, Any] | None]] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                cc = block.get("cache_control")
                blocks.append((block["text"], cc if isinstance(cc, dict) else None))
            elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result"):
                blocks.extend(block_texts("anthropic", {"content": [block]}))
    return blocks


def _has_text(content: Any) -> bool:
    """A user turn that says something (the question), as opposed to one that only returns tool results."""
    return isinstance(content, str) or (isinstance(content, list) and any(
        isinstance(b, dict) and isinstance(b.get("text"), str) for b in content))


def _parse_request(vendor: Vendor, body: dict[str, Any], headers: Mapping[str, str]) -> _Parsed:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad_request(vendor, "model: field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad_request(vendor, "messages: at least one message is required")
    tools = ToolTurns.parse(vendor, body)
    if len(tools.results) != len(tools.calls_made):
        raise _bad_request(vendor, "messages: every tool call needs exactly one tool result in the next turn")
    # Offered tools come first in the prompt (and its cache prefix), before the system prompt, as on both vendors.
    blocks: list[tuple[str, dict[str, Any] | None]] = [(tools.definitions, None)] if tools.definitions else []
    prompt = ""
    if vendor == "anthropic":
        system = body.get("system")
        if system is not None:
            system_blocks = _content_text(system)
            if isinstance(system, list) and any(not text for text, _ in system_blocks):
                raise _bad_request(vendor, "system: text content blocks must be non-empty")
            blocks.extend(system_blocks)
        for message in messages:
            if not isinstance(message, dict):
                raise _bad_request(vendor, "messages: each message must be an object")
            message_blocks = _content_text(message.get("content"))
            if any(not text for text, _ in message_blocks) or not message_blocks:
                raise _bad_request(vendor, "messages: text content blocks must be non-empty")
            blocks.extend(message_blocks)
            if message.get("role") == "user" and _has_text(message.get("content")):
                prompt = "".join(text for text, _ in message_blocks)
        fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
        schema = fmt.get("schema") if isinstance(fmt, dict) else None
        beta = headers.get("anthropic-beta", "")
        return _Parsed(
            vendor=vendor,
            model=model,
            blocks=blocks,
            prompt=prompt,
            schema=schema if isinstance(schema, dict) else None,
            schema_name=None,
            max_tokens=body.get("max_tokens"),
            cache_key=None,
            one_million_beta="context-1m" in beta,
            top_level_cache_control=isinstance(body.get("cache_control"), dict),
            stream=body.get("stream") is True,
            tools=tools,
        )
    for message in messages:
        if not isinstance(message, dict):
            raise _bad_request(vendor, "messages: each message must be an object")
        message_blocks = _content_text(message.get("content")) + block_texts("openai", message)
        joined = "".join(text for text, _ in message_blocks)
        blocks.append((joined, None))
        if message.get("role") == "user":
            prompt = joined
    response_format = body.get("response_format") or {}
    json_schema = response_format.get("json_schema") if isinstance(response_format, dict) else None
    schema = json_schema.get("schema") if isinstance(json_schema, dict) else None
    if isinstance(response_format, dict) and response_format.get("type") == "json_object":
        schema = {}
    return _Parsed(
        vendor=vendor,
        model=model,
        blocks=blocks,
        prompt=prompt,
        schema=schema if isinstance(schema, dict) else None,
        schema_name=json_schema.get("name") if isinstance(json_schema, dict) else None,
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        cache_key=body.get("prompt_cache_key"),
        one_million_beta=False,
        stream=body.get("stream") is True,
        tools=tools,
    )


_ID_LINE = re.compile(r"(?m)^[^\w\n]*ID[^\w\n]*:[^\w\n]*([\w.\-]+)")
_CATEGORY_LINE = re.compile(r"(?m)^[^\w\n]*Category[^\w\n]*:[^\w\n]*([\w.\-]+)")
_ID_ANY = re.compile(r"\bID:\s*(\S+)")
_CATEGORY_ANY = re.compile(r"\bCategory:\s*(\S+)")
_FILE_REF = re.compile(r"[\w./-]+\.(?:py|ts|tsx|js|json|md|cs|go|rs|java|yaml|yml|toml|sql|sh)\b")


def _find_question(prompt: str) -> tuple[str | None, str | None]:
    def first(strict: re.Pattern[str], loose: re.Pattern[str]) -> str | None:
        found = strict.search(prompt) or loose.search(prompt)
        return found.group(1).strip("`*.,;\"'") if found else None

    return first(_ID_LINE, _ID_ANY), first(_CATEGORY_LINE, _CATEGORY_ANY)


def _deterministic_score(question_id: str) -> int:
    return 2 + int(hashlib.sha256(question_id.encode()).hexdigest(), 16) % 4


def _verdict_for(score: int) -> str:
    return "pass" if score >= 4 else "warn" if score >= 2 else "fail"


def _reply_text(parsed: _Parsed, question_id: str | None, category: str | None, rule: Rule | None) -> str:
    if rule is not None and rule.text is not None:
        return rule.text
    if rule is not None and rule.malformed:
        return "I think the session went fine overall, score: four-ish {not json"
    schema = parsed.schema or {}
    obj = minimal_instance(schema, include_optional=question_id is not None)
    if not schema or (question_id is not None and not isinstance(obj, dict)):
        obj = {}  # no schema requested: still answer with a JSON object
    if question_id is not None and isinstance(obj, dict):
        score = rule.score if rule is not None and rule.score is not None else _deterministic_score(question_id)
        context = "\n".join(text for text, _ in parsed.blocks)
        cited = _FILE_REF.search(context)
        where = f"`{cited.group(0)}`" if cited else "turn 1"
        verdict = {
            "category": category or "unknown",
            "question_id": question_id,
            "score": score,
            "verdict": _verdict_for(score) if isinstance(score, int) else "warn",
            "finding": f"Fake judge finding for {question_id}: the agent's change to {where} was reviewed.",
            "evidence": f"See {where} in the trace.",
            "recommendation": None if score == 5 else f"Add a regression test covering {where} before merging.",
            "retain_fact": None,
            "evidence_entries": parsed.tools.cited_positions(context),
        }
        if rule is not None and rule.wrong_ids:
            verdict.update(category="banana", question_id="hallucinated_question")
        properties = schema.get("properties")
        for key, value in verdict.items():
            if not isinstance(properties, dict) or key in properties:
                obj[key] = value
    text = json.dumps(obj)
    if rule is not None and rule.fenced:
        return f"```json\n{text}\n```"
    return text


def minimal_instance(schema: Any, *, include_optional: bool = False, _root: Any = None, _depth: int = 0) -> Any:
    """A small value valid against a JSON schema (the subset structured-output APIs accept)."""
    root = _root if _root is not None else schema
    if not isinstance(schema, dict) or _depth > 32:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return minimal_instance(target, include_optional=include_optional, _root=root, _depth=_depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        non_null = [v for v in schema["enum"] if v is not None]
        return non_null[0] if non_null else None
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            pick = non_null[0] if non_null else options[0]
            return minimal_instance(pick, include_optional=include_optional, _root=root, _depth=_depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        if "null" in kind:
            return None
        kind = kind[0] if kind else None
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        names = list(properties) if include_optional else [n for n in properties if n in required]
        return {
            name: minimal_instance(properties[name], include_optional=include_optional, _root=root, _depth=_depth + 1)
            for name in names
        }
    if kind == "array":
        count = int(schema.get("minItems", 0))
        item = minimal_instance(
            schema.get("items", {}), include_optional=include_optional, _root=root, _depth=_depth + 1
        )
        return [item for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        exclusive_low = schema.get("exclusiveMinimum")
        value: float = 0
        if isinstance(low, int | float):
            value = low
        elif isinstance(exclusive_low, int | float):
            value = exclusive_low + 1
        high = schema.get("maximum")
        if isinstance(high, int | float) and value > high:
            value = high
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string":
        return "x" * max(int(schema.get("minLength", 0)), 2)
    return None


def _anthropic_message(model: str, text: str, usage: dict[str, int], output_tokens: int, request_id: str) -> Any:
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["input_tokens"],
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
            "cache_read_input_tokens": usage["cache_read_input_tokens"],
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage["cache_creation_input_tokens"],
                "ephemeral_1h_input_tokens": 0,
            },
            "service_tier": "standard",
        },
    }


def _openai_completion(model: str, text: str, usage: dict[str, int], output_tokens: int) -> Any:
    prompt_tokens = usage["input_tokens"] + usage["cache_read_input_tokens"]
    return {
        "id": f"chatcmpl-fake{int(time.time() * 1000)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": prompt_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage["cache_read_input_tokens"], "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fake_vendor",
    }


@dataclass
class _Stream:
    """A streamed answer: its wire events, and the generation time left after the first one (L - TTFT)."""

    events: list[bytes]
    remaining_seconds: float


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _chunks_of(text: str, size: int = 40) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _anthropic_events(message: dict[str, Any]) -> list[bytes]:
    """Messages streaming: message_start (input usage), one text block in deltas, message_delta, message_stop."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 1}}
    text = message["content"][0]["text"]
    events = [_sse("message_start", {"type": "message_start", "message": start}),
              _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": "", "citations": None}})]
    events += [_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}})
               for piece in _chunks_of(text)]
    events += [_sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
               _sse("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                      "usage": {"output_tokens": usage["output_tokens"],
                                                "input_tokens": usage["input_tokens"],
                                                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                                                "cache_read_input_tokens": usage["cache_read_input_tokens"]}}),
               _sse("message_stop", {"type": "message_stop"})]
    return events


def _openai_chunks(completion: dict[str, Any]) -> list[bytes]:
    """Chat Completions streaming: a role chunk, content chunks, the finish chunk, the usage chunk, [DONE]."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"], "system_fingerprint": completion["system_fingerprint"]}
    choice = completion["choices"][0]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(None, {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in _chunks_of(choice["message"]["content"])]
    events.append(chunk({}, choice["finish_reason"]))
    events.append(_sse(None, {**base, "choices": [], "usage": completion["usage"]}))
    events.append(b"data: [DONE]\n\n")
    return events


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
    529: "server_error",
}
_DEFAULT_MESSAGES = {
    401: "Invalid API key.",
    403: "This key does not have permission to use this resource.",
    429: "Rate limit exceeded; retry later.",
    500: "Internal server error.",
    503: "The server is overloaded or not ready yet.",
    529: "Overloaded",
}
_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def _error_body(vendor: Vendor, err: _VendorHTTPError, request_id: str) -> Any:
    if vendor == "anthropic":
        error_type = err.error_type or _ANTHROPIC_TYPES.get(err.status, "api_error")
        return {
            "type": "error",
            "error": {"type": error_type, "message": err.message},
            "request_id": request_id,
        }
    error_type = err.error_type or _OPENAI_TYPES.get(err.status, "server_error")
    code = err.code if err.code is not None else _OPENAI_CODES.get(err.status)
    return {"error": {"message": err.message, "type": error_type, "param": None, "code": code}}


def _retry_headers(seconds: float) -> dict[str, str]:
    return {
        "retry-after-ms": str(max(int(seconds * 1000), 1)),
        "retry-after": str(max(math.ceil(seconds), 1)),
    }


def _auth_error(vendor: Vendor, message: str) -> _VendorHTTPError:
    return _VendorHTTPError(401, message)


def _bad_request(vendor: Vendor, message: str) -> _VendorHTTPError:
    return _VendorHTTPError(400, message)


def _not_found(vendor: Vendor, model: str) -> _VendorHTTPError:
    if vendor == "anthropic":
        return _VendorHTTPError(404, f"model: {model}", error_type="not_found_error")
    return _VendorHTTPError(
        404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
    )


def _rate_limited(vendor: Vendor, wait: float) -> _VendorHTTPError:
    return _VendorHTTPError(429, "Rate limit exceeded: too many requests per minute.", headers=_retry_headers(wait))


def _too_long(vendor: Vendor, tokens: int, window: int) -> _VendorHTTPError:
    if vendor == "anthropic":
        return _VendorHTTPError(400, f"prompt is too long: {tokens} tokens > {window} maximum")
    return _VendorHTTPError(
        400,
        f"This model's maximum context length is {window} tokens. However, your messages resulted in "
        f"{tokens} tokens. Please reduce the length of the messages.",
        code="context_length_exceeded",
    )


def _scripted_error(vendor: Vendor, rule: Rule) -> _VendorHTTPError:
    status = int(rule.status or 500)
    headers: dict[str, str] = {}
    if rule.retry_after is not None:
        headers.update(_retry_headers(rule.retry_after))
    if rule.should_retry is not None:
        headers["x-should-retry"] = "true" if rule.should_retry else "false"
    message = rule.message or _DEFAULT_MESSAGES.get(status, f"Scripted error {status}.")
    return _VendorHTTPError(status, message, error_type=rule.error_type, code=rule.error_code, headers=headers)


# ------------------------------------------------------------------------------------- HTTP plumbing


def _make_handler(fake: FakeVendor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeVendor/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # silent: request lines could carry nothing secret, but tests stay quiet

        def _headers(self) -> dict[str, str]:
            out = {k.lower(): v for k, v in self.headers.items()}
            out[":path"] = urlsplit(self.path).path
            return out

        def _api_key(self) -> str | None:
            if key := self.headers.get("x-api-key"):
                return key
            auth = self.headers.get("authorization") or ""
            return auth[7:].strip() or None if auth.lower().startswith("bearer ") else None

        def _body(self) -> Any:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else {}

        def _send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before we answered

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if fake_vendor_batches.route(self, fake, "GET", parts.path):
                return
            if parts.path == "/_fake/requests":
                since = int(parse_qs(parts.query).get("since", ["0"])[0])
                self._send(200, {"requests": fake.requests[since:]})
            elif parts.path == "/_fake/stats":
                self._send(200, fake.stats())
            elif parts.path == "/_fake/health":
                self._send(200, {"ok": True})
            elif parts.path == "/_fake/options":
                self._send(200, dataclasses.asdict(fake.options))
            elif parts.path.startswith("/v1/models/"):
                vendor: Vendor = "anthropic" if self.headers.get("anthropic-version") else "openai"
                status, payload = fake.handle_model(vendor, parts.path.removeprefix("/v1/models/"), self._api_key())
                self._send(status, payload)
            else:
                self._send(404, {"error": {"type": "not_found_error", "message": f"no route {parts.path}"}})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if fake_vendor_batches.route(self, fake, "POST", path):
                return  # before the JSON body is read: a file upload is multipart
            try:
                body = self._body()
            except (ValueError, UnicodeDecodeError):
                self._send(
                    400,
                    {
                        "type": "error",
                        "error": {"type": "invalid_request_error", "message": "body is not valid JSON"},
                    },
                )
                return
            if path.startswith("/_fake/"):
                self._control(path, body)
                return
            routes: dict[str, tuple[Vendor, Literal["generate", "count_tokens"]]] = {
                "/v1/messages": ("anthropic", "generate"),
                "/v1/messages/count_tokens": ("anthropic", "count_tokens"),
                "/v1/chat/completions": ("openai", "generate"),
            }
            if path not in routes or not isinstance(body, dict):
                self._send(404, {"error": {"type": "not_found_error", "message": f"no route {path}"}})
                return
            vendor, endpoint = routes[path]
            outcome = fake.handle_generate(vendor, endpoint, body, self._headers(), self._api_key())
            if outcome.events is not None:
                self._send_events(outcome.status, outcome.events, outcome.headers)
            else:
                self._send(outcome.status, outcome.body, outcome.headers)

        def _send_events(self, status: int, events: Iterator[bytes], headers: Mapping[str, str]) -> None:
            """Server-sent events in HTTP/1.1 chunks, each flushed as it is produced."""
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("transfer-encoding", "chunked")
                self.send_header("cache-control", "no-cache")
                self.end_headers()
                for event in events:
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up mid-stream (a cancelled judge)
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()  # ends the generator, which leaves the in-flight count

        def _control(self, path: str, body: Any) -> None:
            try:
                if path == "/_fake/script":
                    if isinstance(body, dict) and ("rules" in body or "options" in body):
                        if body.get("options"):
                            fake.configure(**body["options"])
                        ids = [fake.add_rule(rule) for rule in body.get("rules") or []]
                    elif isinstance(body, list):
                        ids = [fake.add_rule(rule) for rule in body]
                    else:
                        ids = [fake.add_rule(body)]
                    self._send(200, {"rule_ids": ids})
                elif path == "/_fake/options":
                    self._send(200, dataclasses.asdict(fake.configure(**(body or {}))))
                elif path == "/_fake/reset":
                    fake.reset()
                    self._send(200, {"ok": True})
                else:
                    self._send(404, {"error": {"message": f"no control route {path}"}})
            except (TypeError, ValueError) as exc:
                self._send(400, {"error": {"message": str(exc)}})

    return Handler


@contextlib.contextmanager
def running(options: FakeVendorOptions | None = None) -> Iterator[FakeVendor]:
    """`with running() as fake:` — a started FakeVendor, stopped on exit."""
    fake = FakeVendor(options=options)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


class FakeVendorProcess:
    """The fake vendor in its own process, driven over its control endpoints: what a benchmark measures
    against, so the fake's own CPU (parsing, hashing, streaming) does not compete with the client's."""

    def __init__(self, options: FakeVendorOptions | None = None) -> None:
        self._options = options or FakeVendorOptions()
        self._proc: Any = None
        self.base_url = self.anthropic_base_url = self.openai_base_url = ""

    def __enter__(self) -> FakeVendorProcess:
        import os
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._proc = subprocess.Popen([sys.executable, "-m", "devstack.fake_vendor", "--port", "0"],
                                      stdout=subprocess.PIPE, text=True, cwd=root)
        line = self._proc.stdout.readline()  # "fake vendor (dev only) listening on http://127.0.0.1:<port>"
        found = re.search(r"http://[\d.]+:\d+", line)
        if found is None:
            self.__exit__()
            raise RuntimeError(f"fake vendor did not start: {line!r}")
        self.base_url = self.anthropic_base_url = found.group(0)
        self.openai_base_url = f"{self.base_url}/v1"
        self.configure(**dataclasses.asdict(self._options))
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._call("POST", "/_fake/reset", {})
        self.configure(**dataclasses.asdict(self._options))

    def configure(self, **options: Any) -> None:
        self._call("POST", "/_fake/options", options)

    def script(self, *rules: Mapping[str, Any]) -> list[str]:
        """Add rules (see `Rule`); their ids."""
        return list(self._call("POST", "/_fake/script", {"rules": list(rules)})["rule_ids"])

    @property
    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/requests")["requests"])

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_fake/stats"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FAKE LLM vendor (dev/test only; binds 127.0.0.1).")
    parser.add_argument("--port", type=int, default=5100)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every judge call takes (L)")
    parser.add_argument("--ttft", type=float, default=None, help="seconds to the first token (default: L)")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per minute (429 past it)")
    parser.add_argument("--min-cacheable-tokens", type=int, default=0)
    args = parser.parse_args(argv)
    options = FakeVendorOptions(
        latency=args.latency,
        ttft=args.ttft,
        rate_limit_per_minute=args.rate_limit,
        min_cacheable_tokens=args.min_cacheable_tokens,
    )
    fake = FakeVendor(port=args.port, options=options)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"fake vendor (dev only) listening on {fake.start()}", flush=True)
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
