"""A per-tenant, per-container read cache whose entries expire a fixed number of seconds after they were stored."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

T = TypeVar("T")


class _Miss(enum.Enum):
    MISS = enum.auto()


# A distinct marker rather than None: a store may cache "nothing saved yet" (None) as a valid answer.
MISS: Literal[_Miss.MISS] = _Miss.MISS


class TenantTtlCache(Generic[T]):
    """The hot-path cache of a store's per-tenant head item (settings, judge catalog).

    `seconds <= 0` turns it off: nothing is kept and every read goes to the table. Time comes from the
    injected `monotonic` so tests can step it; the lock makes it safe for the worker's judge threads.
    """

    def __init__(self, seconds: float, monotonic: Callable[[], float]) -> None:
        self._seconds = seconds
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, T]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> T | Literal[_Miss.MISS]:
        """The cached value, or `MISS` when there is none, it expired, or the cache is off."""
        if self._seconds <= 0:
            return MISS
        with self._lock:
            hit = self._entries.get(tenant)
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        return MISS

    def remember(self, tenant: str, value: T) -> None:
        if self._seconds <= 0:
            return
        with self._lock:
            self._entries[tenant] = (self._monotonic() + self._seconds, value)

    def invalidate(self, tenant: str) -> None:
        with self._lock:
            self._entries.pop(tenant, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
