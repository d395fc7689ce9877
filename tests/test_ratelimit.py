"""Token buckets per source, on an injected clock: exact and instant."""

from __future__ import annotations

import threading

import pytest

from concierge.errors import ConciergeError, RateLimited
from concierge.registry.ratelimit import RateLimiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_bursts_to_the_cap_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock)  # 60 a minute: one a second
    assert [bucket.try_take() for _ in range(60)] == [0.0] * 60
    assert bucket.try_take() == pytest.approx(1.0)
    clock.advance(0.25)
    assert bucket.try_take() == pytest.approx(0.75)  # a refused take spends nothing
    clock.advance(0.75)
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == pytest.approx(1.0)
    clock.advance(3600)
    assert bucket.tokens == pytest.approx(60)  # never above the capacity


def test_bucket_rate_for_small_caps_and_a_clock_that_steps_back() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, clock=clock)  # 2 a minute: one every 30 s
    assert bucket.try_take() == 0.0 and bucket.try_take() == 0.0
    assert bucket.try_take() == pytest.approx(30.0)
    clock.advance(-100)  # a clock going backwards must not mint tokens
    assert bucket.try_take() == pytest.approx(30.0)
    clock.advance(100 + 29.999)
    assert bucket.try_take() == pytest.approx(0.001)
    clock.advance(0.001)
    assert bucket.try_take() == 0.0
    with pytest.raises(ValueError):
        TokenBucket(0, clock=clock)


def test_limiter_raises_rate_limited_with_retry_after_and_a_clear_message() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(3):
        limiter.acquire("ds_1", 3, label="Acme")
    with pytest.raises(RateLimited) as info:
        limiter.acquire("ds_1", 3, label="Acme")
    err = info.value
    assert isinstance(err, ConciergeError) and err.error == "rate_limited"
    assert err.retry_after == pytest.approx(20.0)
    assert err.detail == "rate cap reached for source Acme (ds_1): 3 calls per minute; retry in 20 s"
    assert err.to_dict() == {"error": "rate_limited", "detail": err.detail}
    limiter.acquire("ds_2", 3)  # another source has its own bucket
    clock.advance(19.9)
    with pytest.raises(RateLimited) as again:
        limiter.acquire("ds_1", 3)
    assert again.value.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    limiter.acquire("ds_1", 3)


def test_evict_and_cap_change_start_a_fresh_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.acquire("ds_1", 1)
    with pytest.raises(RateLimited):
        limiter.acquire("ds_1", 1)
    assert "ds_1" in limiter
    assert limiter.evict("ds_1") is True and "ds_1" not in limiter
    assert limiter.evict("ds_1") is False
    limiter.acquire("ds_1", 1)  # a revoked-then-re-used id starts full
    limiter.acquire("ds_1", 2)  # raising the cap replaces the bucket at the new cap
    limiter.acquire("ds_1", 2)
    with pytest.raises(RateLimited):
        limiter.acquire("ds_1", 2)


def test_limiter_is_exact_under_threads() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    granted, refused = [], []

    def worker() -> None:
        for _ in range(50):
            try:
                limiter.acquire("ds_1", 100)
                granted.append(1)
            except RateLimited:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 100 and len(refused) == 300
