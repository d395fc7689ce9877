"""Blocking work (registry reads, serializing a big page) in a worker thread, one at a time
per event loop, so the loop keeps answering (``/healthz``, other requests) meanwhile.

The worker still shares the GIL with the loop, and while 4 clients pulled 1,000-row pages
``/healthz`` took 7-10 ms instead of 0.7 (``bench/lists.py``). Three things, measured there:

- one thread, not two (nor anyio's default forty): whenever one let go of the GIL (an
  SQLite step) the other took it, and the loop waited again (median 7-10 ms → 1-2 ms);
- `loop_first` while a server runs: a thread that wants the GIL waits the *switch interval*
  (5 ms by default) before its holder must let go, and the loop wants it back after every
  socket call; 0.5 ms (p90 8-10 ms → 2.5-5.5 ms);
- `json_in_slices`: one `to_json` call for a whole page held the GIL for 5-9 ms; 50 rows at
  a time, the loop gets it between slices (p90 → 2.3-3.5 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel
from pydantic_core import to_json

__all__ = ["JSON_SLICE", "LOOP_SWITCH_INTERVAL", "OFF_LOOP_THREADS", "json_in_slices", "loop_first", "off_loop"]

T = TypeVar("T")
OFF_LOOP_THREADS = 1
LOOP_SWITCH_INTERVAL = 0.0005
"""Seconds a thread waits for the GIL before its holder must let go, while a server runs."""
JSON_SLICE = 50
"""Rows serialized per call of `json_in_slices` (one call holds the GIL throughout)."""

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary())
_switch_lock = threading.Lock()
_switch_holders = 0
_switch_before = 0.0


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


@contextlib.contextmanager
def loop_first(interval: float = LOOP_SWITCH_INTERVAL) -> Iterator[None]:
    """The process's GIL switch interval at most ``interval`` while inside (servers running at
    once share it; the last one out restores the value the first one found)."""
    global _switch_holders, _switch_before
    with _switch_lock:
        if _switch_holders == 0:
            _switch_before = sys.getswitchinterval()
        _switch_holders += 1
        sys.setswitchinterval(min(interval, _switch_before))
    try:
        yield
    finally:
        with _switch_lock:
            _switch_holders -= 1
            if _switch_holders == 0:
                sys.setswitchinterval(_switch_before)


def json_in_slices(value: Any, *, rows: int = JSON_SLICE) -> bytes:
    """``pydantic_core.to_json(value)`` (the same bytes) for a list, or a page (a model whose
    first field is its ``items`` list), ``rows`` rows per call."""
    if isinstance(value, list):
        return _list_json(value, rows)
    if (isinstance(value, BaseModel) and next(iter(type(value).model_fields), None) == "items"
            and isinstance(getattr(value, "items", None), list)):
        rest = to_json(value, exclude={"items"})  # b'{"next_cursor":...}' or b'{}'
        items = b'{"items":' + _list_json(value.items, rows)  # type: ignore[attr-defined]
        return items + (b"}" if rest == b"{}" else b"," + rest[1:])
    return to_json(value)


def _list_json(items: list[Any], rows: int) -> bytes:
    if len(items) <= rows:
        return to_json(items)
    parts = [to_json(items[i:i + rows])[1:-1] for i in range(0, len(items), rows)]
    return b"[" + b",".join(p for p in parts if p) + b"]"
