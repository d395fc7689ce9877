"""Blocking work (registry reads, serializing a big page) in a worker thread, one at a time
per event loop, so the loop keeps answering (``/healthz``, other requests) meanwhile.

One, not anyio's default forty: these jobs hold the GIL while they run, so more threads at
once only take it from the event loop. With two, ``/healthz`` took 7-10 ms (10x idle) while
4 clients pulled 1,000-row pages: whenever one thread let go of the GIL (an SQLite step)
the other took it, and the loop waited out the switch interval again; with one, 1-2x idle
at the same pages per second (``bench/lists.py``). A shorter switch interval
(`sys.setswitchinterval`) made no difference measurable over that noise.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

__all__ = ["OFF_LOOP_THREADS", "off_loop"]

T = TypeVar("T")
OFF_LOOP_THREADS = 1

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary())


def _limiter() -> anyio.CapacityLimiter:
    # One per loop: a limiter is not shared between the event loops of different threads.
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(OFF_LOOP_THREADS)
    return limiter


async def off_loop(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread (see the module docstring)."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=_limiter())
