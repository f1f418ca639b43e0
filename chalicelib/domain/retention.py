"""Retention: how a tenant's `retention_days` becomes a DynamoDB TTL and an S3 lifecycle tag.

A bucket lifecycle configuration is one list of rules for the whole bucket (at most 1,000), so a
per-tenant number of days cannot be a rule per tenant. Instead the bucket has one rule per value
of a fixed ladder (`infra/eval-runner.json`: `Retention<N>d`, objects under `sessions/` tagged
`retention-days=<N>` expire N days after they were written), and each trace object is tagged with
the tenant's retention rounded *down* to the ladder: the content never outlives what the admin
set. The session record and its runs get the same effective period as a DynamoDB TTL, so the
metadata, the runs and the trace leave together. Daily aggregates carry no TTL: they hold no
content and stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

RETENTION_TAG_KEY = "retention-days"
# Days a tenant's retention rounds down to; keep in step with the bucket's `Retention<N>d` rules
# (`tests/unit/test_history_infra.py` checks the template against this tuple).
RETENTION_LADDER_DAYS: tuple[int, ...] = (1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90, 120, 180, 270, 365, 545,
                                          730, 1095, 1825, 3650)


def effective_retention_days(retention_days: int | None) -> int | None:
    """The ladder value a tenant's retention maps to (None: keep forever)."""
    if retention_days is None:
        return None
    fitting = [d for d in RETENTION_LADDER_DAYS if d <= retention_days]
    # Below the first rung (0 or negative, which the limits API refuses anyway) still expires data
    # as soon as the ladder can: keeping it forever would be the opposite of what was asked.
    return fitting[-1] if fitting else RETENTION_LADDER_DAYS[0]


@dataclass(frozen=True)
class RetentionStamp:
    """What a write carries when the tenant has a retention: the S3 tag and the TTL epoch."""

    days: int
    expires_at: int

    @property
    def object_tags(self) -> dict[str, str]:
        return {RETENTION_TAG_KEY: str(self.days)}


def retention_stamp(retention_days: int | None, written_at: datetime) -> RetentionStamp | None:
    days = effective_retention_days(retention_days)
    if days is None:
        return None
    return RetentionStamp(days=days, expires_at=int((written_at + timedelta(days=days)).timestamp()))
