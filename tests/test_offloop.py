"""Blocking work off the event loop, and the GIL given back to it (see `concierge.offloop`)."""

from __future__ import annotations

import sys
import threading
import time

import anyio
import pytest
from pydantic import BaseModel
from pydantic_core import to_json

from concierge.offloop import JSON_SLICE, LOOP_SWITCH_INTERVAL, json_in_slices, off_loop
from concierge.registry import Registry
from concierge.registry.pages import Page
from concierge.server import build_app

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


async def test_a_running_server_shortens_the_switch_interval_and_restores_it(registry: Registry) -> None:
    """The loop waited the default 5 ms for the GIL after each socket call while a thread
    built a page; a server runs with a shorter interval, and leaves the process as it was."""
    before = sys.getswitchinterval()
    assert before > LOOP_SWITCH_INTERVAL
    first, second = build_app(registry), build_app(registry)
    async with first.router.lifespan_context(first):
        assert sys.getswitchinterval() == LOOP_SWITCH_INTERVAL
        async with second.router.lifespan_context(second):
            assert sys.getswitchinterval() == LOOP_SWITCH_INTERVAL
        assert sys.getswitchinterval() == LOOP_SWITCH_INTERVAL  # the first one still runs
    assert sys.getswitchinterval() == before


class Row(BaseModel):
    n: int
    text: str


class OnlyItems(BaseModel):
    items: list[Row]


@pytest.mark.parametrize("count", [0, 1, JSON_SLICE - 1, JSON_SLICE, JSON_SLICE + 1, 3 * JSON_SLICE + 7])
def test_a_page_serialized_in_slices_is_the_same_json(count: int) -> None:
    rows = [Row(n=i, text=f"row {i} \u201cquoted\u201d") for i in range(count)]
    for value in (rows, Page[Row](items=rows, total=count, next_cursor="abc" if count else None, more=count),
                  OnlyItems(items=rows), {"not": "a page"}):
        assert json_in_slices(value) == to_json(value)
