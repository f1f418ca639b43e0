"""What the daemon-protocol tests share: a settable clock, so deadlines pass and long polls end without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FrozenClock:
    """A settable clock so deadlines can pass without sleeping."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC)
        self.mono = 0.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        # Every look at the clock moves it, so a long poll ends after a few iterations, instantly.
        self.mono += 5.0
        return self.mono

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)
