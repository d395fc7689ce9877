"""Rate caps shared by every process: one token bucket per (kind, subject) in the database.

A bucket with ``per_minute = N`` holds up to N tokens and earns one back every ``60 / N``
seconds. `RateBuckets.take` checks and takes in **one statement** (an upsert whose ``WHERE``
is the check), so N processes taking from one bucket together never take more than it holds:
on SQLite the statement runs under the file's write lock, on PostgreSQL under the bucket row's
lock, and each taker sees the tokens the previous one left.

Time is Unix seconds from the caller's clock (``time.time`` unless injected), so every process
and host shares one timeline; a clock that lags behind the bucket's last take refills nothing
(it never mints tokens). A changed cap starts the bucket afresh at the new cap. `evict` drops a
subject's buckets (revoke, pause, update), everywhere at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from concierge.errors import RateLimited
from concierge.store._base import Connection, Database

__all__ = ["BUCKET", "EVICT", "TAKE", "RateBuckets", "rate_limited", "take_args", "wait_for"]

_EPSILON = 1e-9  # float refill sums land a hair short of whole tokens

# $1 kind, $2 subject, $3 per_minute, $4 now, $5 tokens to take, $6 a fresh bucket's tokens after the take
_REFILLED = ("(CASE WHEN excluded.at > rate_buckets.at THEN"
             " (CASE WHEN rate_buckets.tokens + (excluded.at - rate_buckets.at) * rate_buckets.per_minute / 60.0"
             " > rate_buckets.per_minute THEN rate_buckets.per_minute"
             " ELSE rate_buckets.tokens + (excluded.at - rate_buckets.at) * rate_buckets.per_minute / 60.0 END)"
             " ELSE rate_buckets.tokens END)")
TAKE = f"""
INSERT INTO rate_buckets (kind, subject, per_minute, tokens, at)
VALUES ($1, $2, $3, $6, $4)
ON CONFLICT (kind, subject) DO UPDATE SET
    per_minute = excluded.per_minute,
    tokens = (CASE WHEN rate_buckets.per_minute <> excluded.per_minute THEN $6
              ELSE {_REFILLED} - $5 END),
    at = (CASE WHEN rate_buckets.per_minute <> excluded.per_minute OR excluded.at > rate_buckets.at
          THEN excluded.at ELSE rate_buckets.at END)
WHERE rate_buckets.per_minute <> excluded.per_minute OR {_REFILLED} >= $5 - {_EPSILON}
RETURNING tokens
"""
"""The check-and-take upsert (`take_args`): a row back when the tokens were taken, none when too few were left."""


def take_args(kind: str, subject: str, per_minute: int, now: float, n: float) -> tuple[object, ...]:
    """`TAKE`'s parameters: ``n`` tokens of ``subject``'s ``kind`` bucket at Unix time ``now``."""
    if per_minute < 1:
        raise ValueError("per_minute must be at least 1")
    return (kind, subject, per_minute, float(now), float(n), per_minute - float(n))


def wait_for(row: Mapping[str, float] | None, per_minute: int, now: float, n: float) -> float:
    """The seconds until ``n`` tokens are back, from the bucket's row (``tokens``, ``at``) as
    a refused take found it (None: the bucket was dropped meanwhile, so at once; never 0)."""
    if row is None:
        return 0.001
    rate = per_minute / 60.0
    tokens = min(float(per_minute), row["tokens"] + max(0.0, now - row["at"]) * rate)
    return float(max((n - tokens) / rate, 0.001))


def rate_limited(subject: str, per_minute: int, wait: float, *, label: str | None = None) -> RateLimited:
    """The refusal of a take that must wait ``wait`` seconds (``retry_after``: whole
    milliseconds, never rounded down)."""
    retry_after = math.ceil(wait * 1000) / 1000
    who = f"{label} ({subject})" if label else subject
    return RateLimited(f"rate cap reached for source {who}: {per_minute} calls per minute; "
                       f"retry in {retry_after:.3g} s", retry_after=retry_after)

BUCKET = "SELECT tokens, at FROM rate_buckets WHERE kind = $1 AND subject = $2"
"""A bucket's row, as `wait_for` reads it."""

EVICT = "DELETE FROM rate_buckets WHERE subject = $1"
"""Every bucket of a subject (the registry runs it in the transaction that changes a source)."""


class RateBuckets:
    """Token buckets in the store. ``kind`` says what is capped (``tool_calls``, ``webhooks``),
    ``subject`` whose (a source id)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def take(self, kind: str, subject: str, per_minute: int, *, n: float = 1.0) -> float:
        """Take ``n`` tokens and return 0.0, or take nothing and return the seconds to wait."""
        now = float(self._clock())
        args = take_args(kind, subject, per_minute, now, n)
        async with self._db.transaction() as cx:
            if await cx.fetchval(TAKE, *args) is not None:
                return 0.0
            row = await cx.fetchrow(BUCKET, kind, subject)
        assert row is not None  # the upsert found the row, or it would have inserted it
        return wait_for(row, per_minute, now, n)

    async def acquire(self, kind: str, subject: str, per_minute: int, *, label: str | None = None) -> None:
        """Spend one token or raise `RateLimited` (``retry_after``: whole milliseconds, never
        rounded down)."""
        wait = await self.take(kind, subject, per_minute)
        if wait > 0:
            raise rate_limited(subject, per_minute, wait, label=label)

    async def tokens(self, kind: str, subject: str) -> float | None:
        """The tokens the bucket holds now (None: no bucket, i.e. full)."""
        row = await self._db.fetchrow(
            "SELECT per_minute, tokens, at FROM rate_buckets WHERE kind = $1 AND subject = $2", kind, subject)
        if row is None:
            return None
        elapsed = max(0.0, float(self._clock()) - row["at"])
        return float(min(float(row["per_minute"]), row["tokens"] + elapsed * row["per_minute"] / 60.0))

    async def evict(self, subject: str, *, kind: str | None = None, cx: Connection | None = None) -> int:
        """Drop the subject's buckets (of one kind, or all); how many there were. Pass ``cx``
        to evict in the transaction that revokes."""
        sql, args = EVICT, [subject]
        if kind is not None:
            sql, args = sql + " AND kind = $2", [subject, kind]
        if cx is not None:
            return await cx.execute(sql, *args)
        return await self._db.execute(sql, *args)
