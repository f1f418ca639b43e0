"""The upload rate limit per user: so many uploads (direct PUTs and presigned starts) per fixed window.

Parsing, redacting and storing a session is the most expensive thing a member can ask of the API;
this caps how often one member can ask for it, whatever the stage's overall throttling allows.
Defaults (README "Sessions", limits): 60 uploads per user per 60-second window, set per stage with
`UPLOAD_RATE_LIMIT` (uploads) and `UPLOAD_RATE_WINDOW_SECONDS`.
"""

from __future__ import annotations

import math
from typing import Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.errors import RateLimited
from chalicelib.domain.principal import Principal

DEFAULT_UPLOAD_RATE_LIMIT = 60
DEFAULT_UPLOAD_RATE_WINDOW_SECONDS = 60


class UploadCounter(Protocol):
    def take(self, tenant: str, user: str, *, window_start: int, window_seconds: int, limit: int) -> bool: ...


class UploadRateLimited(RateLimited):
    code = "upload_rate_limited"

    def __init__(self, message: str, *, retry_after: int, details: dict[str, int]) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class UploadRateLimit:
    def __init__(self, counter: UploadCounter, clock: Clock, *, limit: int = DEFAULT_UPLOAD_RATE_LIMIT,
                 window_seconds: int = DEFAULT_UPLOAD_RATE_WINDOW_SECONDS) -> None:
        self._counter = counter
        self._clock = clock
        self._limit = limit
        self._window = window_seconds

    def check(self, principal: Principal) -> None:
        """Count one upload for the caller, or raise `UploadRateLimited` (429 with Retry-After)."""
        now = self._clock.now().timestamp()
        window_start = int(now // self._window * self._window)
        if self._counter.take(principal.tenant, principal.user, window_start=window_start,
                              window_seconds=self._window, limit=self._limit):
            return
        retry_after = max(1, math.ceil(window_start + self._window - now))
        raise UploadRateLimited(
            f"You have uploaded {self._limit} sessions in the last {self._window} s, the most allowed; "
            f"retry in {retry_after} s.", retry_after=retry_after,
            details={"limit": self._limit, "window_seconds": self._window, "retry_after_seconds": retry_after})
