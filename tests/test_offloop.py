"""Blocking work off the event loop: one job at a time per loop (see `concierge.offloop`)."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from concierge.offloop import off_loop

pytestmark = pytest.mark.anyio


async def test_jobs_off_the_loop_run_one_at_a_time_and_the_loop_keeps_running() -> None:
    """Two page-building threads took the GIL from each other and from the loop (/healthz
    10x slower under 1,000-row pages); one at a time, the loop waits far less."""
    lock = threading.Lock()
    running, peak, ticks = 0, 0, 0

    def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)  # blocking, as a big registry read is
        with lock:
            running -= 1

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        async with anyio.create_task_group() as jobs:
            for _ in range(4):
                jobs.start_soon(off_loop, job)
        tg.cancel_scope.cancel()
    assert peak == 1
    assert ticks > 4  # the loop ran while the jobs blocked their threads
