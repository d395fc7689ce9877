"""`SessionPool`: one open `McpSession` per key (a source), shared by listings and calls.

    session(key, make_endpoint)  the pooled session, opening one if needed. Concurrent callers
                                 share one opening attempt (single flight) and its outcome.
    slot(key)                    bounds the requests in flight per key; callers queue for a
                                 slot (back-pressure) instead of piling requests on the server
    evict(key)                   forget the key's session (closed at the next await point we own)

A stdio program that dies is started again by the next request; one that cannot start (it
exits at once, it is missing) is not started again for a while (1 s, doubling to 30 s): the
requests meanwhile get its last error at once, so a crash loop cannot fork per call.

Every session that is opened is closed: on eviction, on a broken transport, when it was
opened for a generation that was evicted meanwhile, and in ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable

import anyio

from concierge.errors import ConnectorError
from concierge.mcp_client.endpoint import Endpoint
from concierge.mcp_client.kinds import ErrorKind
from concierge.mcp_client.session import McpSession

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "RESTART_BACKOFF", "SessionPool"]

DEFAULT_MAX_IN_FLIGHT = 32
"""Requests in flight per source before further ones wait for a slot."""

RESTART_BACKOFF = (1.0, 30.0)
"""Seconds a stdio program that failed to start waits before the next try: first, at most."""

SessionFactory = Callable[..., McpSession]
ListChangedListener = Callable[[str, str], None]  # (key, "tools" | "resources" | "prompts")


class SessionPool:
    """Pooled sessions by key; see the module docstring."""

    def __init__(self, *, session_factory: SessionFactory = McpSession,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self._factory = session_factory
        self.max_in_flight = max_in_flight
        self._sessions: dict[str, McpSession] = {}
        self._opening: dict[str, asyncio.Future[McpSession]] = {}
        self._generation: dict[str, int] = {}
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._retired: list[McpSession] = []
        self._closers: set[asyncio.Task[None]] = set()
        self._listeners: list[ListChangedListener] = []
        self.sessions_opened: dict[str, int] = {}
        """How many sessions were opened per key (reuse shows as 1 for many requests)."""
        self._backoff: dict[str, tuple[float, float, ConnectorError]] = {}
        """key -> (monotonic time of the next try, the wait that set it, the last failure)."""

    # -- observers --------------------------------------------------------------------------

    def on_list_changed(self, listener: ListChangedListener) -> None:
        """Hear upstream list-changed notifications of every pooled session."""
        self._listeners.append(listener)

    def _changed(self, key: str, what: str) -> None:
        for listener in list(self._listeners):
            listener(key, what)

    def pooled(self, key: str) -> McpSession | None:
        """The open pooled session of ``key``, if any."""
        session = self._sessions.get(key)
        return session if session is not None and not session.closed else None

    @property
    def size(self) -> int:
        return sum(1 for s in self._sessions.values() if not s.closed)

    # -- sessions ---------------------------------------------------------------------------

    def evict(self, key: str) -> None:
        """Forget ``key``'s session; sync (listeners call it), so it is closed in a task."""
        self._generation[key] = self._generation.get(key, 0) + 1
        self._backoff.pop(key, None)  # (the source changed: try its program again at once)
        session = self._sessions.pop(key, None)
        if session is not None:
            self._retired.append(session)
            self._close_soon()

    def _close_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a sync caller): closed at the next await point we own
            return
        task = loop.create_task(self.close_retired())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def discard(self, key: str, session: McpSession) -> None:
        """Retire ``session`` (it broke); the next request opens a new one."""
        if self._sessions.get(key) is session:
            del self._sessions[key]
        self._retired.append(session)
        self._close_soon()

    async def close_retired(self) -> None:
        while self._retired:
            await self._retired.pop().aclose()

    async def session(self, key: str, make_endpoint: Callable[[], Endpoint]) -> tuple[McpSession, bool]:
        """The pooled session of ``key`` and whether it was opened for this call.

        ``make_endpoint`` is called only when a session must be opened (it may raise, e.g. a
        vault error). Failures to open raise ``ConnectorError`` with ``delivered=False``.
        """
        await self.close_retired()
        session = self.pooled(key)
        if session is not None:
            return session, False
        flight = self._opening.get(key)
        if flight is None:
            held = self._backoff.get(key)
            if held is not None and time.monotonic() < held[0]:
                last = held[2]
                raise ConnectorError(last.kind, f"{last.sentence} (not started again for another "
                                     f"{held[0] - time.monotonic():.0f} s)", http_status=last.http_status,
                                     delivered=False)
            stale = self._sessions.pop(key, None)
            if stale is not None:
                self._retired.append(stale)
            endpoint = make_endpoint()
            flight = asyncio.get_running_loop().create_task(self._open(key, endpoint))
            self._opening[key] = flight
            flight.add_done_callback(functools.partial(self._done_opening, key))
        session = await asyncio.shield(flight)
        return session, True

    def _done_opening(self, key: str, flight: asyncio.Future[McpSession]) -> None:
        if self._opening.get(key) is flight:
            del self._opening[key]
        if not flight.cancelled():
            flight.exception()  # seen by the waiters; don't let asyncio log it

    async def _open(self, key: str, endpoint: Endpoint) -> McpSession:
        generation = self._generation.get(key, 0)
        session = self._factory(endpoint, on_list_changed=lambda what: self._changed(key, what))
        try:
            await session.open()  # raises ConnectorError
        except ConnectorError as err:
            if endpoint.command is not None and self._generation.get(key, 0) == generation:
                previous = self._backoff.get(key)
                first, most = RESTART_BACKOFF
                wait = min(most, previous[1] * 2) if previous is not None else first
                self._backoff[key] = (time.monotonic() + wait, wait, err)
            raise
        self._backoff.pop(key, None)
        self.sessions_opened[key] = self.sessions_opened.get(key, 0) + 1
        if self._generation.get(key, 0) == generation:
            self._sessions[key] = session
        else:  # evicted while we connected: serve the callers waiting now, then close
            self._retired.append(session)
        return session

    def slot(self, key: str, *, wait: float | None = None) -> _Slot:
        """One of ``max_in_flight`` places for a request to ``key`` (``async with``): waits (at
        most ``wait`` seconds, then ``ConnectorError`` timeout, not delivered) when all are taken."""
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = anyio.CapacityLimiter(self.max_in_flight)
        return _Slot(limiter, wait)

    def in_flight(self, key: str) -> int:
        limiter = self._limiters.get(key)
        return int(limiter.borrowed_tokens) if limiter is not None else 0

    async def aclose(self) -> None:
        """Close every pooled session (and wait for openings in flight, then close them too)."""
        for flight in list(self._opening.values()):
            with contextlib.suppress(BaseException):
                await asyncio.shield(flight)
        self._retired.extend(self._sessions.values())
        self._sessions.clear()
        await self.close_retired()
        for task in list(self._closers):
            with contextlib.suppress(BaseException):
                await task

    def __repr__(self) -> str:
        return f"SessionPool(size={self.size}, opening={len(self._opening)})"


class _Slot:
    """`SessionPool.slot`: a plain context manager, as it is entered on every call."""

    __slots__ = ("_limiter", "_wait")

    def __init__(self, limiter: anyio.CapacityLimiter, wait: float | None) -> None:
        self._limiter, self._wait = limiter, wait

    async def __aenter__(self) -> None:
        try:  # a free place at once (the common case) needs no cancel scope
            self._limiter.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        acquired = False
        with anyio.move_on_after(self._wait if self._wait is not None else float("inf")):
            await self._limiter.acquire()
            acquired = True
        if not acquired:
            raise ConnectorError(ErrorKind.TIMEOUT, f"{self._limiter.total_tokens:g} requests to this server are "
                                 f"in flight and none finished within {self._wait:g} s — try again", delivered=False)

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter.release()
