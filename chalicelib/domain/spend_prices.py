"""Judge model prices (pure): the shipped default table, admin overrides, and a run's cost from vendor usage.

Prices are USD per million tokens for the four token classes the vendors report (`TokenUsage`):
uncached input, output, cache writes and cache reads. OpenAI has no cache-write surcharge (a prompt
that fills its cache bills as plain input), so its cache-write price equals its input price.
`batch_discount` is the fraction taken off every class when the run goes through the vendor's batch
API (both vendors: 50 %).

Sources of the default table, read 2026-12-04:
- Anthropic: the model pricing table of https://platform.claude.com/docs/en/about-claude/pricing
  (Opus 4.5-4.8, Opus 5, Fable 5.1, Sonnet 4) and the model pages
  https://platform.claude.com/docs/en/models/{opus-5,sonnet-5,sonnet-5-5}/overview ("5m cache write",
  "Cache read", "Batch API: 50% discount on input and output"). Sonnet 4.5/4.6 are at the Sonnet 4
  list price ($3/$15), Haiku 4.5 at $1/$5 with the standard 1.25x cache write and 0.1x read. Cache
  writes are the 5-minute ones (the judges' `cache_control: ephemeral`). Not shipped, because a flat
  row would misprice them: Claude Haiku 5.5 (priced by prompt length), Opus 5.5 (cache rates not on
  the pages read). Third-party trackers report a Sonnet 5.5 cache-read cut to $0.10 (2026-10-07) that
  the official model page read did not show; an admin override settles either way.
- OpenAI: https://developers.openai.com/api/docs/pricing (standard tier) as captured on 2026-05-04 in
  the api-evangelist/openai pricing plans file, for gpt-5.5, gpt-5.4, gpt-5.4-mini and gpt-5.4-nano;
  gpt-4.1 ($2 / $0.50 cached / $8) and gpt-4o ($2.50 / $1.25 / $10) at their long-standing list
  prices. Batch API: 50 % off.
Prices change; admins override per model (`PUT /admin/settings/eval-runner/prices`), and a model
without any price still runs with `cost.usd: null`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.domain.evaluation import TokenUsage

PriceSource = Literal["default", "admin"]
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/\[\]-]{0,127}$"
# A dated snapshot id prices like its alias: claude-sonnet-4-5-20250929, gpt-4o-2024-08-06.
_SNAPSHOT_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


class ModelPrice(BaseModel):
    """One row of the price table (`GET /admin/settings/eval-runner/prices`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: Literal["anthropic", "openai"]
    model: str = Field(pattern=MODEL_ID_PATTERN)
    input_usd_per_mtok: float = Field(ge=0, le=10_000)
    output_usd_per_mtok: float = Field(ge=0, le=10_000)
    cache_write_usd_per_mtok: float = Field(ge=0, le=10_000)
    cache_read_usd_per_mtok: float = Field(ge=0, le=10_000)
    batch_discount: float = Field(ge=0, le=1)
    source: PriceSource = "default"

    @property
    def max_input_usd_per_mtok(self) -> float:
        """The dearest way an input token can be billed (a cache write, usually)."""
        return max(self.input_usd_per_mtok, self.cache_write_usd_per_mtok, self.cache_read_usd_per_mtok)


def _anthropic(model: str, inp: float, out: float, write: float, read: float) -> ModelPrice:
    return ModelPrice(vendor="anthropic", model=model, input_usd_per_mtok=inp, output_usd_per_mtok=out,
                      cache_write_usd_per_mtok=write, cache_read_usd_per_mtok=read, batch_discount=0.5)


def _openai(model: str, inp: float, cached: float, out: float) -> ModelPrice:
    return ModelPrice(vendor="openai", model=model, input_usd_per_mtok=inp, output_usd_per_mtok=out,
                      cache_write_usd_per_mtok=inp, cache_read_usd_per_mtok=cached, batch_discount=0.5)


DEFAULT_PRICES: tuple[ModelPrice, ...] = (
    _anthropic("claude-fable-5-1", 10.0, 50.0, 12.5, 0.25),
    _anthropic("claude-opus-5", 5.0, 25.0, 6.25, 0.5),
    _anthropic("claude-opus-4-8", 5.0, 25.0, 6.25, 0.5),
    _anthropic("claude-opus-4-7", 5.0, 25.0, 6.25, 0.5),
    _anthropic("claude-opus-4-6", 5.0, 25.0, 6.25, 0.5),
    _anthropic("claude-opus-4-5", 5.0, 25.0, 6.25, 0.5),
    _anthropic("claude-sonnet-5-5", 2.0, 10.0, 2.5, 0.2),
    _anthropic("claude-sonnet-5", 2.0, 10.0, 2.5, 0.2),
    _anthropic("claude-sonnet-4-6", 3.0, 15.0, 3.75, 0.3),
    _anthropic("claude-sonnet-4-5", 3.0, 15.0, 3.75, 0.3),
    _anthropic("claude-sonnet-4", 3.0, 15.0, 3.75, 0.3),
    _anthropic("claude-haiku-4-5", 1.0, 5.0, 1.25, 0.1),
    _openai("gpt-5.5", 5.0, 0.5, 30.0),
    _openai("gpt-5.4", 2.5, 0.25, 15.0),
    _openai("gpt-5.4-mini", 0.75, 0.075, 4.5),
    _openai("gpt-5.4-nano", 0.2, 0.02, 1.25),
    _openai("gpt-4.1", 2.0, 0.5, 8.0),
    _openai("gpt-4o", 2.5, 1.25, 10.0),
)
DEFAULT_PRICE_BY_MODEL: dict[str, ModelPrice] = {p.model: p for p in DEFAULT_PRICES}


class PriceTable(BaseModel):
    """The tenant's effective table: shipped defaults with its admin overrides on top."""

    model_config = ConfigDict(frozen=True)

    overrides: tuple[ModelPrice, ...] = ()
    version: int = 0

    def rows(self) -> list[ModelPrice]:
        merged = dict(DEFAULT_PRICE_BY_MODEL)
        merged.update({p.model: p for p in self.overrides})
        return sorted(merged.values(), key=lambda p: (p.vendor, p.source != "admin", p.model))

    def price_for(self, model: str | None) -> ModelPrice | None:
        """Exact model id first, then its alias without a dated snapshot suffix."""
        if not model:
            return None
        table = {p.model: p for p in self.rows()}
        for candidate in (model, _SNAPSHOT_SUFFIX.sub("", model)):
            found = table.get(candidate)
            if found is not None:
                return found
        return None


def known_models(table: PriceTable, configured: Iterable[str | None] = ()) -> set[str]:
    """Models an admin may price: the shipped table, models already overridden, the tenant's judges."""
    return {p.model for p in table.rows()} | {m for m in configured if m}


def cost_micros(usage: TokenUsage, price: ModelPrice, *, batch: bool = False) -> int:
    """Exact integer micro-dollars for `usage` (rounded up once, at the end)."""
    # USD per MTok x tokens = micro-dollars, exactly: 1 USD/MTok is 1 micro-dollar per token.
    micros = (usage.input_tokens * price.input_usd_per_mtok
              + usage.output_tokens * price.output_usd_per_mtok
              + usage.cache_creation_input_tokens * price.cache_write_usd_per_mtok
              + usage.cache_read_input_tokens * price.cache_read_usd_per_mtok)
    if batch:
        micros *= 1 - price.batch_discount
    return math.ceil(round(micros, 6))


def worst_case_call_micros(*, input_tokens: int, output_tokens: int, price: ModelPrice, batch: bool = False) -> int:
    """The most one call with this many prompt and output tokens can be billed: every input token at
    the dearest input rate (an uncached prompt written to the cache), every output token billed."""
    micros = input_tokens * price.max_input_usd_per_mtok + output_tokens * price.output_usd_per_mtok
    if batch:
        micros *= 1 - price.batch_discount
    return math.ceil(round(micros, 6))


def override_table(rows: Iterable[ModelPrice]) -> tuple[ModelPrice, ...]:
    """Admin rows as stored: source `admin`, one per model (the last one wins), sorted."""
    latest: dict[str, ModelPrice] = {}
    for row in rows:
        latest[row.model] = row.model_copy(update={"source": "admin"})
    return tuple(sorted(latest.values(), key=lambda p: (p.vendor, p.model)))


def prices_by_model(rows: Iterable[ModelPrice]) -> Mapping[str, ModelPrice]:
    return {p.model: p for p in rows}
