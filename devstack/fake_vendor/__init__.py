"""FAKE LLM vendor for local development and tests only: speaks the Anthropic and OpenAI wire formats.

It never talks to a real vendor and binds 127.0.0.1 only. The real `anthropic` / `openai` SDKs are
pointed at it through `base_url`, so adapters, the worker, e2e tests and benchmarks run offline.

Endpoints (vendor wire formats, shapes taken from the SDKs' response types):
  POST /v1/messages                 Anthropic Messages (structured output via `output_config.format`)
  POST /v1/messages/count_tokens    Anthropic token counting
  POST /v1/chat/completions         OpenAI Chat Completions (`response_format` json_schema)
  GET  /v1/models/{id}              either vendor (Anthropic when `anthropic-version` is sent)
  …/messages/batches, /v1/files, /v1/batches   both vendors' batch APIs (`batches`)
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

Tool use (`tools`): when a request offers tools and does not forbid them, the answer is
a tool call (Anthropic `tool_use`, OpenAI `tool_calls`; scripted with a rule's `tool_calls`, else one call:
`get_tool_result` of the first output the trace shows truncated, or `get_session_summary`) until the script is
done, then the verdict, whose `evidence_entries` cite the positions the tool results named.

Prompt caching is simulated: Anthropic blocks marked `cache_control` are a cache write the first
time their (model, prefix) is seen and a cache read within the TTL afterwards; OpenAI gives
`cached_tokens` for the longest prefix, up to a message boundary (the last message's included) and rounded
down to whole 128-token blocks, that the same (model, prompt_cache_key) was seen with. As with the real vendors a
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

from devstack.fake_vendor.answers import minimal_instance
from devstack.fake_vendor.options import (
    HOST,
    FakeVendorOptions,
    Rule,
    context_window_for,
    estimate_tokens,
    key_fingerprint,
)
from devstack.fake_vendor.server import FakeVendorProcess, main, running
from devstack.fake_vendor.vendor import FakeVendor

__all__ = ["HOST", "FakeVendor", "FakeVendorOptions", "FakeVendorProcess", "Rule", "context_window_for",
           "estimate_tokens", "key_fingerprint", "main", "minimal_instance", "running"]
