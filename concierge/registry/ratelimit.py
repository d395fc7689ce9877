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

import asyncio
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

__all__ = ["Clock", "LEASE_SECONDS", "MAX_LEASE", "RateLimited", "RateLimiter", "StoreRateLimiter", "TokenBucket",
           "lease_size"]

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


LEASE_SECONDS = 1.0
"""How long tokens taken ahead (`StoreRateLimiter` with ``lease=True``) stay usable."""
MAX_LEASE = 10


def lease_size(per_minute: int) -> int:
    """Tokens taken ahead at once for a cap: one second's refill, 1 (none ahead) below 120 a
    minute, at most `MAX_LEASE`."""
    return max(1, min(MAX_LEASE, per_minute // 60))


class StoreRateLimiter:
    """The buckets of one ``kind`` (``tool_calls``, ``webhooks``) in the registry's database,
    shared by every process using it. ``clock``: Unix seconds (every process's common timeline).

    ``lease=True`` (the gateway's): a cap of 120 a minute or more is taken from the shared
    bucket `lease_size` tokens at a time, spent here for at most `LEASE_SECONDS`, so a busy
    source costs one database write per second's worth of calls, not one per call. Tokens are
    taken before they are spent, so the processes together still never exceed the cap; tokens
    not spent within the lease are lost (a cap of N may admit up to a second's refill fewer),
    and `forget` drops a source's lease (its update, pause, revoke or delete)."""

    def __init__(self, store: Store, kind: str, *, clock: Clock = time.time, lease: bool = False) -> None:
        self._store = store
        self.kind = kind
        self._clock = clock
        self._lease = lease
        self._leases: dict[str, tuple[int, int, float]] = {}
        """source id -> (tokens left, the cap they were taken under, monotonic expiry)."""
        self._refilling: dict[tuple[int, str], asyncio.Lock] = {}

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
        size = lease_size(per_minute) if self._lease else 1
        if size > 1:
            if self._spend(source_id, per_minute):
                return
            # One refill at a time per source: callers that missed meanwhile spend what it took.
            key = (id(asyncio.get_running_loop()), source_id)
            lock = self._refilling.get(key)
            if lock is None:
                lock = self._refilling[key] = asyncio.Lock()
            async with lock:
                if self._spend(source_id, per_minute):
                    return
                if await self._take(source_id, per_minute, size) == 0:
                    self._leases[source_id] = (size - 1, per_minute, time.monotonic() + LEASE_SECONDS)
                    return
                self._leases.pop(source_id, None)  # fewer left than a lease: one at a time, as without
        wait = await self._take(source_id, per_minute, 1)
        if wait > 0:
            from concierge.store.buckets import rate_limited

            raise rate_limited(source_id, per_minute, wait, label=label)

    async def _take(self, source_id: str, per_minute: int, n: int) -> float:
        """Take ``n`` tokens from the shared bucket: 0.0, or the seconds to wait (none taken).
        On SQLite the one statement is first tried on this thread at once (`Store.write_at_once`);
        only when another writer holds the file is it awaited on the store's thread."""
        from concierge.store.buckets import BUCKET, TAKE, take_args, wait_for

        now = float(self._clock())
        rows = self._store.write_at_once(TAKE, take_args(self.kind, source_id, per_minute, now, n))
        if rows is None:
            return await self._store.arun(lambda db: self._buckets(db).take(self.kind, source_id, per_minute, n=n))
        if rows:
            return 0.0
        return wait_for(self._store.query_one(BUCKET, (self.kind, source_id)), per_minute, now, n)

    def _spend(self, source_id: str, per_minute: int) -> bool:
        held = self._leases.get(source_id)
        if held is None or held[0] < 1 or held[1] != per_minute or time.monotonic() >= held[2]:
            return False
        self._leases[source_id] = (held[0] - 1, per_minute, held[2])
        return True

    def forget(self, source_id: str) -> None:
        """Drop the source's lease in this process (the shared bucket is evicted elsewhere)."""
        self._leases.pop(source_id, None)

    def evict(self, source_id: str) -> bool:
        """Forget the source's bucket of this kind, in every process. True if there was one."""
        self.forget(source_id)
        return bool(self._store.run(lambda db: self._buckets(db).evict(source_id, kind=self.kind)))
