"""Tokens taken ahead (`StoreRateLimiter(lease=True)`, the gateway's): two limiters on one
database (two processes) together never exceed the cap, and a source change drops a lease."""

from __future__ import annotations

import pytest

from concierge.errors import RateLimited
from concierge.registry import Registry
from concierge.registry.ratelimit import StoreRateLimiter, lease_size
from concierge.store.buckets import RateBuckets

pytestmark = pytest.mark.anyio


def test_lease_size_is_one_seconds_refill_and_none_below_two_a_second() -> None:
    assert [lease_size(n) for n in (1, 60, 119, 120, 600)] == [1, 1, 1, 2, 10]


async def test_two_processes_leasing_one_bucket_never_exceed_the_cap(reg: Registry) -> None:
    other = Registry.open(reg.data_dir)  # a second process's registry on the same file
    try:
        still = lambda: 1_000_000.0  # noqa: E731 - no refill while we count
        a = StoreRateLimiter(reg.store, "tool_calls", clock=still, lease=True)
        b = StoreRateLimiter(other.store, "tool_calls", clock=still, lease=True)
        admitted = 0
        refused = {id(a): False, id(b): False}
        while not all(refused.values()):
            for limiter in (a, b):
                if refused[id(limiter)]:
                    continue
                try:
                    await limiter.aacquire("src", 600, label="S")
                    admitted += 1
                except RateLimited:
                    refused[id(limiter)] = True
        # the burst is 600; what a process took ahead and did not spend is lost, never minted
        assert 600 - 2 * lease_size(600) <= admitted <= 600
    finally:
        other.close()


async def test_forget_drops_the_lease(reg: Registry) -> None:
    still = lambda: 1_000_000.0  # noqa: E731
    limiter = StoreRateLimiter(reg.store, "tool_calls", clock=still, lease=True)
    await limiter.aacquire("src", 120)  # takes 2, spends 1
    def left() -> float | None:
        return reg.store.run(lambda db: RateBuckets(db, clock=still).tokens("tool_calls", "src"))

    assert left() == 118
    await limiter.aacquire("src", 120)  # the one taken ahead: no database write
    assert left() == 118
    limiter.forget("src")
    await limiter.aacquire("src", 120)  # a new lease from the database
    assert left() == 116


async def test_concurrent_callers_share_one_refill(reg: Registry) -> None:
    import anyio

    still = lambda: 1_000_000.0  # noqa: E731
    limiter = StoreRateLimiter(reg.store, "tool_calls", clock=still, lease=True)
    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(limiter.aacquire, "src", 600)
    left = reg.store.run(lambda db: RateBuckets(db, clock=still).tokens("tool_calls", "src"))
    assert left == 580  # 20 calls, two leases of 10: nothing taken twice over
