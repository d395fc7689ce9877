"""Blocking work (registry reads, serializing a big page) in a worker thread, two at a time
per event loop, so the loop keeps answering (``/healthz``, other requests) meanwhile.

Two, not anyio's default forty: these jobs hold the GIL while they run, so more threads at
once only take it from the event loop; the store serializes its queries on one lock anyway.
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
OFF_LOOP_THREADS = 2

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
