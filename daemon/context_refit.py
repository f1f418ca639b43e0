"""The daemon's side of "never prompt too long": one job's eval context, shared by its judge threads, refit
once for all of them when the local CLI refuses the prompt as too long.

The same fit as the server runner's (`chalicelib.services.context_fit.ContextFitter`: the tool-output
threshold halved, then the middle of the trace elided), aimed at the limit the CLI's message states
(`prompt is too long: X tokens > N maximum`, or OpenAI's "maximum context length is N tokens"); a
message without a number elides a quarter more. Lower thresholds are fetched from the service (the
job's `eval_context_path` with another `threshold`). A limit the fixed prompt alone exceeds, a trace
that cannot shrink further, or too many refits raise `ContextTooSmall`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from chalicelib.domain.context_limits import ContextTooSmall, parse_stated_limit
from chalicelib.judges.catalog import Question
from chalicelib.judges.prompts import PROMPT_SEPARATOR, build_question_prompt, build_repair_prompt
from chalicelib.judges.tools import TOOL_CONVERSATION_ALLOWANCE_CHARS
from chalicelib.services.context_fit import ContextFitter, FittedContext, TokenMeter

MAX_REFITS = 3
# The CLIs answer with their own output budget; the fit keeps this much room for it.
OUTPUT_TOKENS = 4096
_UNBOUNDED = 10**9  # the first "fit" changes nothing: the daemon sends what the service prepared


def threshold_of(path: str, default: int = 2000) -> int:
    """The tool-output threshold the job's eval-context path asks for."""
    value = dict(parse_qsl(urlsplit(path).query)).get("threshold", "")
    return int(value) if value.isdigit() else default


def with_threshold(path: str, threshold: int) -> str:
    """The job's eval-context path asking for another tool-output threshold."""
    parts = urlsplit(path)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "threshold"] + [("threshold", str(threshold))]
    return urlunsplit(parts._replace(query=urlencode(query)))


class SharedContext:
    """The job's context JSON and its generation; `refit` is called by any judge thread the CLI refused,
    and every thread refused on the same generation waits for that one refit."""

    def __init__(self, doc: dict[str, Any], *, session_id: str, run_id: str, model: str, requested_threshold: int,
                 questions: list[Question], fetch: Callable[[int], dict[str, Any]],
                 render: Callable[[str], str]) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._refits = 0
        self._failure: ContextTooSmall | None = None
        longest = max((build_question_prompt(q) for q in questions), key=len, default="")
        if any(q.needs_tools for q in questions):
            # What up to six tool answers add to a tool question's conversation (the CLI's MCP tools).
            longest += PROMPT_SEPARATOR + "t" * TOOL_CONVERSATION_ALLOWANCE_CHARS

        async def no_count_api(_shared: str, _prompt: str) -> int | None:
            return None  # the CLIs have none: the fit estimates (calibrated by what the CLI states)

        self._fitter = ContextFitter(
            doc=doc, reload=fetch, requested_threshold=requested_threshold, render=render,
            longest_prompt=longest + PROMPT_SEPARATOR + build_repair_prompt("x" * 2100, "e" * 600),
            meter=TokenMeter(no_count_api, window=_UNBOUNDED), output_tokens=OUTPUT_TOKENS, model=model)
        self._fitted: FittedContext = asyncio.run(self._fitter.fit(_UNBOUNDED))
        self.json = _dumps(self._fitted.doc)

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def report(self) -> Mapping[str, Any]:
        return self._fitted.report

    def refit(self, generation: int, message: str, refused_chars: int) -> None:
        """The CLI refused a prompt built on `generation` as too long: return once the context has been
        refit (by this thread or another). Raises ContextTooSmall when it cannot be."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if generation != self._generation:
                return
            stated = parse_stated_limit(message)
            if self._refits >= MAX_REFITS:
                self._failure = ContextTooSmall(
                    f"The judge CLI still refuses the prompt as too long after {self._refits} refits of the trace.",
                    details={"refits": self._refits})
                raise self._failure
            self._refits += 1
            try:
                self._fitted = asyncio.run(self._fitter.refit(self._fitted, stated, refused_chars=refused_chars,
                                                              source="cli"))
            except ContextTooSmall as exc:
                self._failure = exc
                raise
            self.json = _dumps(self._fitted.doc)
            self._generation += 1


def _dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False)
