"""Per-source rate caps: one token bucket per source, on an injectable clock.

A source with ``rate_cap_per_minute = N`` may burst up to N calls, then earns one call back
every ``60 / N`` seconds. An exhausted bucket raises `RateLimited` saying when to retry.

`StoreRateLimiter` (what the gateway and the webhooks use) keeps the buckets in the registry's
database (`concierge.store.buckets`), checked and taken in one statement, so every process on
that database — ``concierge tool call`` next to ``serve``, N ``serve`` instances on one
PostgreSQL — shares one bucket per source and together they never exceed the cap. Revoke,
pause, update and delete evict a source's buckets in the registry's own transaction (every
process sees the bucket gone). `RateLimiter` is the same rule in one process's memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from concierge.errors import RateLimited

if TYPE_CHECKING:
    from concierge.registry.store import Store
    from concierge.store import Database
    from concierge.store.buckets import RateBuckets

__all__ = ["Clock", "RateLimited", "RateLimiter", "StoreRateLimiter", "TokenBucket"]

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


class StoreRateLimiter:
    """The buckets of one ``kind`` (``tool_calls``, ``webhooks``) in the registry's database,
    shared by every process using it. ``clock``: Unix seconds (every process's common timeline)."""

    def __init__(self, store: Store, kind: str, *, clock: Clock = time.time) -> None:
        self._store = store
        self.kind = kind
        self._clock = clock

    def _buckets(self, db: Database) -> RateBuckets:
        from concierge.store.buckets import RateBuckets

        return RateBuckets(db, clock=self._clock)

    def __contains__(self, source_id: object) -> bool:
        if not isinstance(source_id, str):
            return False
        return self._store.run(lambda db: self._buckets(db).tokens(self.kind, source_id)) is not None

    def acquire(self, source_id: str, per_minute: int, *, label: str | None = None) -> None:
        """Spend one call of the source's budget or raise `RateLimited` (``retry_after`` seconds)."""
        self._store.run(lambda db: self._buckets(db).acquire(self.kind, source_id, per_minute, label=label))

    async def aacquire(self, source_id: str, per_minute: int, *, label: str | None = None) -> None:
        """`acquire`, awaited (the caller's event loop keeps running meanwhile)."""
        await self._store.arun(
            lambda db: self._buckets(db).acquire(self.kind, source_id, per_minute, label=label))

    def evict(self, source_id: str) -> bool:
        """Forget the source's bucket of this kind, in every process. True if there was one."""
        return bool(self._store.run(lambda db: self._buckets(db).evict(source_id, kind=self.kind)))
