"""What a run may cost before it is dispatched (pure): the expected cost and a true upper bound.

The upper bound (`usd_high`) counts every call the server runner (`services/judge_runner.py`) can
send for a run, each at its worst:

- judge calls: one per question (the warm-up judge is one of them; the fan-out are the others), plus
  at most one repair re-ask per question, each carrying the whole shared context again:
  `2 x questions` context calls; a tool-using question (`needs_tools`) instead makes at most
  `REQUESTS_PER_TOOL_QUESTION_MAX` requests (the ask, its tool rounds, one repair), each also carrying
  the tool rounds so far (at most `tool_rounds_bytes_max()` bytes, `chalicelib/judges/tools.py`), and
  when a run has any tool question every call carries the tool definitions;
- the retrospective: one call and at most one repair re-ask, without the trace: `2` calls;
- not billed, so not counted: token counting for the context fit (free), a refit after the vendor
  refused an oversized prompt (a rejected request is not billed; the retry is smaller), 429/5xx/529
  answers and their retries, a 401 followed by the re-read key;
- prompt tokens of a context call <= UTF-8 bytes of what is sent (every token of a byte-level BPE
  tokenizer covers at least one byte): the shared context rendered at the requested threshold (the
  fit only ever removes from it), the longest question prompt with the repair allowance, the verdict
  schema, plus `FRAMING_TOKENS` for message framing and structured-output instructions; capped at the
  largest window the vendor accepts for the model family, when known (a longer prompt is refused,
  unbilled);
- every prompt token at the dearest input rate (cache write, if caching missed on every call), and
  every call answering `max_output_tokens` (the request's `max_tokens`);
- the retrospective's prompt: its fixed text plus every verdict, each at most what a judge could
  answer (`max_output_tokens` tokens, at most 4 bytes a character).

  usd_high = 2 x text_questions x (T_ctx x p_in_max + O x p_out)
           + R_tool x tool_questions x (T_tool x p_in_max + O x p_out) + 2 x (T_retro x p_in_max + O x p_out)

The runner's spend guard (`services/spend_guard.py`) enforces the bound at run time: a call whose
worst case no longer fits in what is left of the reservation is not sent (the run stops
`budget_exhausted`), so what a run is billed never exceeds the `usd_high` it reserved.

The expected cost (`usd_low`) is the common case: every judge answers first time, the context is as
fitted, at 4 characters a token, the first judge writes the prompt cache and the others read it, and
a verdict is about `TYPICAL_VERDICT_OUTPUT_TOKENS` long.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.spend import micros_to_usd
from chalicelib.domain.spend_prices import ModelPrice, worst_case_call_micros

FRAMING_TOKENS = 1_000
# Message framing of one tool round, call or result block (role and block markers), counted as bytes.
TOOL_BLOCK_FRAMING_BYTES = 256
TYPICAL_VERDICT_OUTPUT_TOKENS = 400
TYPICAL_RETROSPECTIVE_PROMPT_TOKENS_PER_VERDICT = 300
CHARS_PER_TOKEN = 4.0
RETROSPECTIVE_CALLS = 2
CALLS_PER_QUESTION = 2  # the question and at most one repair re-ask
BYTES_PER_CHAR_MAX = 4

# The largest prompt (tokens) each model family accepts at all, with any window option; a request
# over it is refused before it is billed. Families not listed have no cap (bytes bound only).
_PROMPT_CEILINGS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"^(claude-|sonnet|opus|haiku)"), 1_000_000),
    (re.compile(r"^gpt-4\.1"), 1_047_576),
    (re.compile(r"^gpt-4o"), 128_000),
    (re.compile(r"^gpt-5"), 1_050_000),
    (re.compile(r"^o\d"), 200_000),
)


def prompt_token_ceiling(model: str | None) -> int | None:
    name = (model or "").strip().lower()
    for pattern, ceiling in _PROMPT_CEILINGS:
        if pattern.search(name):
            return ceiling
    return None


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def call_prompt_tokens_high(*, prompt_bytes: int, model: str | None) -> int:
    """The most prompt tokens one call with `prompt_bytes` of text can be billed for."""
    tokens = prompt_bytes + FRAMING_TOKENS
    ceiling = prompt_token_ceiling(model)
    return min(tokens, ceiling) if ceiling is not None else tokens


@dataclass(frozen=True)
class EstimateInputs:
    model: str | None
    questions: int
    max_output_tokens: int
    shared_context_bytes: int  # the shared context rendered at the requested threshold (unfitted)
    longest_prompt_bytes: int  # the longest question prompt + separator + repair allowance
    schema_bytes: int  # the verdict JSON schema as sent
    retrospective_fixed_bytes: int  # the retrospective prompt without verdicts, plus its schema
    fitted_context_chars: int  # the shared context the run is expected to send, after the fit
    mean_prompt_chars: int
    retrospective: bool = True
    tool_questions: int = 0  # of `questions`, the tool-using ones
    tool_specs_bytes: int = 0  # the tool definitions every call of a run with tool questions carries
    tool_request_bytes: int = 0  # the most a tool question's rounds add to one of its requests
    requests_per_tool_question: int = 0
    price: ModelPrice | None = None
    batch: bool = False


@dataclass(frozen=True)
class RunEstimate:
    input_tokens: int
    max_output_tokens: int
    max_calls: int
    usd_low: float | None
    usd_high: float | None
    high_micros: int
    low_micros: int
    breakdown: dict[str, Any] = field(default_factory=dict)


def estimate_run(e: EstimateInputs) -> RunEstimate:
    text_questions = e.questions - e.tool_questions
    tool_calls = e.tool_questions * e.requests_per_tool_question
    ctx_calls = CALLS_PER_QUESTION * text_questions + tool_calls
    retro_calls = RETROSPECTIVE_CALLS if e.retrospective and e.questions else 0
    base_bytes = e.shared_context_bytes + e.longest_prompt_bytes + e.schema_bytes + \
        (e.tool_specs_bytes if e.tool_questions else 0)
    t_ctx = call_prompt_tokens_high(prompt_bytes=base_bytes, model=e.model)
    t_tool = call_prompt_tokens_high(prompt_bytes=base_bytes + e.tool_request_bytes, model=e.model)
    retro_bytes = e.retrospective_fixed_bytes + e.questions * e.max_output_tokens * BYTES_PER_CHAR_MAX
    t_retro = call_prompt_tokens_high(prompt_bytes=retro_bytes, model=e.model)
    max_calls = ctx_calls + retro_calls
    max_output = max_calls * e.max_output_tokens

    shared_tokens = math.ceil(e.fitted_context_chars / CHARS_PER_TOKEN)
    prompt_tokens = math.ceil(e.mean_prompt_chars / CHARS_PER_TOKEN) + FRAMING_TOKENS // 4
    retro_tokens = e.questions * TYPICAL_RETROSPECTIVE_PROMPT_TOKENS_PER_VERDICT if retro_calls else 0
    expected_input = e.questions * (shared_tokens + prompt_tokens) + retro_tokens
    breakdown: dict[str, Any] = {
        "context_calls_max": ctx_calls, "retrospective_calls_max": retro_calls, "tool_questions": e.tool_questions,
        "tool_call_prompt_tokens_max": t_tool if e.tool_questions else None,
        "context_call_prompt_tokens_max": t_ctx, "retrospective_prompt_tokens_max": t_retro,
        "max_output_tokens_per_call": e.max_output_tokens, "framing_tokens_per_call": FRAMING_TOKENS,
        "expected_shared_context_tokens": shared_tokens,
    }
    if e.price is None:
        return RunEstimate(input_tokens=expected_input, max_output_tokens=max_output, max_calls=max_calls,
                           usd_low=None, usd_high=None, high_micros=0, low_micros=0, breakdown=breakdown)
    p = e.price
    high = CALLS_PER_QUESTION * text_questions * worst_case_call_micros(
        input_tokens=t_ctx, output_tokens=e.max_output_tokens, price=p, batch=e.batch)
    high += tool_calls * worst_case_call_micros(input_tokens=t_tool, output_tokens=e.max_output_tokens, price=p,
                                                batch=e.batch)
    high += retro_calls * worst_case_call_micros(input_tokens=t_retro, output_tokens=e.max_output_tokens, price=p,
                                                 batch=e.batch)
    # Expected: the first judge writes the shared prefix to the cache, the rest read it.
    readers = max(e.questions - 1, 0)
    low = (shared_tokens * p.cache_write_usd_per_mtok + readers * shared_tokens * p.cache_read_usd_per_mtok
           + e.questions * prompt_tokens * p.input_usd_per_mtok + retro_tokens * p.input_usd_per_mtok
           + (e.questions + (1 if retro_calls else 0)) * TYPICAL_VERDICT_OUTPUT_TOKENS * p.output_usd_per_mtok)
    if e.batch:
        low *= 1 - p.batch_discount
    low_micros = min(math.ceil(low), high)
    return RunEstimate(input_tokens=expected_input, max_output_tokens=max_output, max_calls=max_calls,
                       usd_low=micros_to_usd(low_micros), usd_high=micros_to_usd(high), high_micros=high,
                       low_micros=low_micros, breakdown=breakdown)
