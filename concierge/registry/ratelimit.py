"""Per-source rate caps: one token bucket per source, on an injectable clock.

A source with ``rate_cap_per_minute = N`` may burst up to N calls, then earns one call back
every ``60 / N`` seconds. An exhausted bucket raises `RateLimited` saying when to retry.
Buckets live in memory (one gateway process); revoke, pause and update evict them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from concierge.errors import RateLimited

__all__ = ["Clock", "RateLimited", "RateLimiter", "TokenBucket"]

Clock = Callable[[], float]
_EPSILON = 1e-9


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``per_minute / 60`` tokens a second."""

    def __init__(self, per_minute: int, *, clock: Clock = time.monotonic,
                 capacity: float | None = None) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.capacity = float(capacity if capacity is not None else per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)  # a clock that steps back never mints tokens

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def try_take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens and return 0.0, or take nothing and return the seconds to wait."""
        self._refill()
        if self._tokens >= n - _EPSILON:  # float refill sums land a hair short of whole tokens
            self._tokens = max(0.0, self._tokens - n)
            return 0.0
        return (n - self._tokens) / self.rate


class RateLimiter:
    """The buckets of every source, keyed by source id. Thread-safe."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def __contains__(self, source_id: object) -> bool:
        return source_id in self._buckets

    def bucket(self, source_id: str, per_minute: int) -> TokenBucket:
        """The source's bucket; a changed cap starts a fresh bucket at the new cap."""
        with self._lock:
            bucket = self._buckets.get(source_id)
            if bucket is None or bucket.per_minute != per_minute:
                bucket = self._buckets[source_id] = TokenBucket(per_minute, clock=self._clock)
            return bucket

    def acquire(self, source_id: str, per_minute: int, *, label: str | None = None) -> None:
        """Spend one call of the source's budget or raise `RateLimited` (``retry_after`` seconds)."""
        bucket = self.bucket(source_id, per_minute)
        with self._lock:
            wait = bucket.try_take()
        if wait > 0:
            retry_after = math.ceil(wait * 1000) / 1000  # whole milliseconds, never rounded down
            who = f"{label} ({source_id})" if label else source_id
            raise RateLimited(
                f"rate cap reached for source {who}: {per_minute} calls per minute; "
                f"retry in {retry_after:.3g} s", retry_after=retry_after)

    def evict(self, source_id: str) -> bool:
        """Forget the source's bucket (revoke, pause, update). True if there was one."""
        with self._lock:
            return self._buckets.pop(source_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()
