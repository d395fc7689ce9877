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


async def test_a_refill_is_taken_on_the_callers_thread_and_moves_no_change_signal(reg: Registry) -> None:
    """On SQLite a refill is one statement on this thread's own connection, so the gateway's
    change signal (`Store.data_version`, the same connection's) does not move with it, and its
    admissions stay remembered; a write by any other connection still moves it."""
    still = lambda: 1_000_000.0  # noqa: E731
    limiter = StoreRateLimiter(reg.store, "tool_calls", clock=still, lease=True)
    before = reg.store.data_version()
    for _ in range(25):  # three leases of 10
        await limiter.aacquire("src", 600)
    left = reg.store.run(lambda db: RateBuckets(db, clock=still).tokens("tool_calls", "src"))
    assert left == 570 and reg.store.data_version() == before
    other = Registry.open(reg.data_dir)  # another process's write
    try:
        other.create_agent({"slug": "bot"})
    finally:
        other.close()
    assert reg.store.data_version() != before
    reg.create_agent({"slug": "bot2"})  # this process's own registry writes move it too
    moved = reg.store.data_version()
    await limiter.aacquire("src", 600)
    assert reg.store.data_version() == moved


async def test_a_refill_waits_for_another_writer_without_holding_up_the_loop(reg: Registry) -> None:
    """When another process holds the file's write lock, the take at once gives up without
    waiting, and the refill is awaited on the store's thread: the caller's loop runs on."""
    import sqlite3

    import anyio

    assert reg.store.path is not None
    still = lambda: 1_000_000.0  # noqa: E731
    limiter = StoreRateLimiter(reg.store, "tool_calls", clock=still, lease=True)
    holder = sqlite3.connect(reg.store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        from concierge.store.buckets import TAKE, take_args

        assert reg.store.write_at_once(TAKE, take_args("tool_calls", "src", 600, 1_000_000.0, 10)) is None
        done = anyio.Event()
        ticks = 0

        async def refill() -> None:
            await limiter.aacquire("src", 600)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(refill)
            for _ in range(20):  # the loop runs while the refill waits for the lock
                await anyio.sleep(0.01)
                ticks += 1
            assert not done.is_set()
            holder.execute("COMMIT")
            with anyio.fail_after(10):
                await done.wait()
        assert ticks == 20
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
    left = reg.store.run(lambda db: RateBuckets(db, clock=still).tokens("tool_calls", "src"))
    assert left == 590


async def test_a_refused_take_at_once_says_when_to_retry(reg: Registry) -> None:
    still = lambda: 1_000_000.0  # noqa: E731
    limiter = StoreRateLimiter(reg.store, "tool_calls", clock=still, lease=False)
    for _ in range(3):
        await limiter.aacquire("src", 3, label="Slow")
    with pytest.raises(RateLimited) as refused:
        await limiter.aacquire("src", 3, label="Slow")
    assert str(refused.value) == "rate cap reached for source Slow (src): 3 calls per minute; retry in 20 s"
    assert refused.value.retry_after == 20.0
