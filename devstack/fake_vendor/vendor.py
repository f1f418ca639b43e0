"""The fake vendor itself: keys, models, windows, rules, the token bucket, the prompt cache, and the requests it saw."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any, Literal

from devstack.fake_vendor import batches as fake_vendor_batches
from devstack.fake_vendor.answers import _find_question, _reply_text
from devstack.fake_vendor.anthropic_wire import _anthropic_events, _anthropic_message
from devstack.fake_vendor.errors import (
    _auth_error,
    _error_body,
    _not_found,
    _rate_limited,
    _scripted_error,
    _too_long,
    _VendorHTTPError,
)
from devstack.fake_vendor.handler import _FakeVendorHTTPServer, _make_handler
from devstack.fake_vendor.openai_wire import _openai_chunks, _openai_completion
from devstack.fake_vendor.options import (
    _ANTHROPIC_ALIASES,
    _OPENAI_PREFIXES,
    _OPTION_FIELDS,
    _SECRET_HEADERS,
    HOST,
    FakeVendorOptions,
    Rule,
    Vendor,
    _rule_from,
    context_window_for,
    estimate_tokens,
    key_fingerprint,
)
from devstack.fake_vendor.tools import (
    anthropic_tool_events,
    anthropic_tool_message,
    arguments_json,
    openai_tool_chunks,
    openai_tool_completion,
)
from devstack.fake_vendor.wire import _int_or_none, _now_iso, _parse_request, _Parsed, _sse, _Stream

OPENAI_CACHE_BLOCK = 128  # OpenAI reports cache hits in whole blocks of this many tokens


@dataclass
class _Outcome:
    status: int
    body: bytes
    headers: dict[str, str]
    record: dict[str, Any]
    events: Iterator[bytes] | None = None  # a streamed answer: server-sent events, written as they come


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
                block_ttl = ttl  # the whole prompt is cacheable, its last message included
                key = f"openai|{parsed.model}|{parsed.cache_key or ''}|{digest.hexdigest()}"
            if prefix_tokens >= max(floor, 1):
                breakpoints.append((key, prefix_tokens, block_ttl))
        # OpenAI keeps every message boundary of the prompt (the longest one seen before is read, in whole
        # 128-token blocks: "a match until the first mismatched token in 128 token blocks", OpenAI's Prompt
        # Caching 201), so a tool round, which repeats the previous request and adds to it, reads all of it.

        read = 0
        with self._lock:
            for key, tokens, _ in reversed(breakpoints):
                if self._cache.get(key, 0.0) > now:
                    read = tokens if parsed.vendor == "anthropic" else tokens // OPENAI_CACHE_BLOCK * OPENAI_CACHE_BLOCK
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
