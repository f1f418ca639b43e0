"""Spend governance rules (pure): money units, budget periods, a run's admission record and the ledger's state.

Money is held as integer micro-dollars (1 USD = 1_000_000) wherever it is stored or compared, so
DynamoDB's conditional arithmetic is exact and no float rounding can let a dispatch through.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

MICROS_PER_USD = 1_000_000


def usd_to_micros(usd: float) -> int:
    """Round up: a reservation or a cost is never understated by a rounding step."""
    return math.ceil(round(usd * MICROS_PER_USD, 6))


def micros_to_usd(micros: int) -> float:
    return round(micros / MICROS_PER_USD, 6)


def budget_day(now: datetime) -> str:
    """The UTC calendar day a user's daily budget counts in."""
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def budget_month(now: datetime) -> str:
    """The UTC calendar month a tenant's monthly budget counts in."""
    return now.astimezone(UTC).strftime("%Y-%m")


class RunAdmission(BaseModel):
    """What dispatch (or a rerun) committed for one attempt of a run, stored on the run item so the
    finalizer settles exactly that: the periods it counted in and the amount it reserved."""

    model_config = ConfigDict(extra="ignore")

    day: str
    month: str
    reserved_micros: int = Field(default=0, ge=0)
    # The run's cost when this attempt started (a rerun keeps what earlier attempts billed): the
    # attempt's actual cost is the run's cost at the end minus this.
    base_cost_micros: int = Field(default=0, ge=0)
    admitted_at: str
