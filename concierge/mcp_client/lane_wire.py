"""The gateway lane's HTTP/1.1 client: one POST shape on kept-alive connections, parsed by
httptools (the C parser uvicorn uses), for a session's stateless ``tools/call`` requests.

The lane (`concierge.gateway_lane`) forwards a call as one POST and streams the answer back;
going through httpx2 and httpcore2 cost more than half of the gateway's CPU per call. This
client does only that one exchange, with the session's own rules:

- connections are dialled by the session's `GuardedBackend` (the same pinned, policy-checked
  addresses as its httpx2 client; the self-connection check; recorded as Concierge's own);
- the request carries the session client's headers (its static credentials), never
  ``accept-encoding`` (the answer is read as sent);
- what a response hook and the size-capped stream record for the SDK path is recorded here
  too, on the same boxes (`Observed`): an HTTP error status, an unexpected content type, an
  answer over the size cap (`MessageTooLarge`, refused on ``content-length`` alone when it says so);
- failures are httpx2's exception types (``ConnectError``, ``ConnectTimeout``, ``ReadError``,
  ``RemoteProtocolError``, ``HTTPStatusError``), so the error mapping is the SDK path's.

A connection is reused only after a complete answer the server let it keep; one closed (or
expired: ``keepalive_expiry``) while idle is dropped, and so is one whose socket is readable
while idle: the server closed it (or wrote out of turn) and the loop has not yet seen it, as
after a stall (httpcore's check before reusing a connection). A response abandoned early (a client that
cancelled, a failure) closes its connection, which is how the 2026-07-28 protocol cancels.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final, cast

import anyio
import httpcore2
import httptools
import httpx2

from concierge.mcp_client._errors import MessageTooLarge, Observed, current_observed
from concierge.mcp_client._pinned import GuardedBackend

__all__ = ["MAX_HEAD_BYTES", "LaneWire", "WireResponse"]

_PAUSE_AT: Final = 1 << 20
"""Buffered answer bytes past which the socket stops being read until the lane catches up."""
_BAD_HEADER_CHARS: Final = frozenset("\r\n\0")
MAX_HEAD_BYTES: Final = 64 * 1024
"""The most an answer's status line and headers may take (h11, under httpx2, allows 16 KiB a line)."""


class WireResponse:
    """The answer to one POST: status and headers once they came, then the body as it comes."""

    def __init__(self, conn: _Connection, limit: int, boxes: list[Observed]) -> None:
        self._conn, self._limit, self._boxes = conn, limit, boxes
        self.status_code = 0
        self.headers: dict[str, str] = {}
        self.set_cookies: list[str] = []
        """Every ``set-cookie`` value (not joined: a cookie's date has a comma)."""
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._head_done = self._complete = self._closed = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.keep_alive = False

    # -- fed by the connection (on the event loop, from its parser) -----------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()

    def _head(self, status: int) -> None:
        self.status_code, self._head_done = status, True
        ctype = self.headers.get("content-type", "").lower()
        for box in self._boxes:  # as the httpx2 client's response hook records it
            if status >= 400:
                box.status = status
            elif status == 200 and ctype and not ctype.startswith(("application/json", "text/event-stream")):
                box.content_type = ctype.split(";")[0].strip()
        self._wake()

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _PAUSE_AT:
            self._conn.pause()
        self._wake()

    def _done(self, keep_alive: bool) -> None:
        self._complete, self.keep_alive = True, keep_alive
        self._wake()

    # -- read by the lane ---------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _started(self) -> None:
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def _chunk(self) -> bytes | None:
        """The next piece of the body; None at its end."""
        while not self._chunks:
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            await self._wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered <= _PAUSE_AT // 2:
            self._conn.resume()
        return data

    def _too_large(self) -> MessageTooLarge:
        for box in self._boxes:
            box.too_large = self._limit
        return MessageTooLarge(self._limit)

    async def aread(self) -> bytes:
        """The whole body, refused past the size cap (on ``content-length`` alone when it says so)."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            raise self._too_large()
        parts: list[bytes] = []
        size = 0
        while (data := await self._chunk()) is not None:
            size += len(data)
            if size > self._limit:
                raise self._too_large()
            parts.append(data)
        return b"".join(parts)

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive (an SSE stream), each event held to the size cap."""
        pending = b""
        event = 0  # bytes of the event so far (since the last blank line)
        while (data := await self._chunk()) is not None:
            *lines, pending = (pending + data).split(b"\n")
            for raw in lines:
                line = raw[:-1] if raw.endswith(b"\r") else raw
                event = event + len(raw) + 1 if line else 0
                yield line.decode("utf-8", "replace")
            if event + len(pending) > self._limit:
                raise self._too_large()
        if pending:
            yield pending.decode("utf-8", "replace")

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            request = httpx2.Request("POST", self._conn.url)
            response = httpx2.Response(self.status_code, headers=list(self.headers.items()), request=request)
            response.raise_for_status()

    async def aclose(self) -> None:
        """Done with it: the connection goes back to the pool after a complete, kept-alive
        answer, and is closed otherwise (an abandoned request is cancelled that way)."""
        if not self._closed:
            self._closed = True
            self._conn.finished(self)


class _Connection(asyncio.Protocol):
    """One kept-alive connection and its parser; at most one request at a time."""

    def __init__(self, wire: LaneWire, url: httpx2.URL) -> None:
        self.wire, self.url = wire, url
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: WireResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused = False
        self._head_bytes = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's are not asyncio's subclasses)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(httpx2.RemoteProtocolError(f"the server's answer is not valid HTTP/1.1: {exc}"))
            self.close()
            return
        if not response._head_done:  # (httptools itself would read headers without end)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                response._fail(httpx2.RemoteProtocolError(
                    f"the server's answer headers are over {MAX_HEAD_BYTES // 1024} KiB"))
                self.close()

    def eof_received(self) -> bool | None:
        try:
            self.parser.feed_data(b"")  # an answer delimited by the end of the connection
        except httptools.HttpParserError:
            pass
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.wire._open.discard(self)
        if self.response is not None:
            self.response._fail(httpx2.RemoteProtocolError("the server closed the connection before its answer ended")
                                if exc is None else httpx2.ReadError(str(exc) or type(exc).__name__))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key == "set-cookie":
            self.response.set_cookies.append(text)
        headers = self.response.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers and key != "content-type" else text

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response._head(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._body(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response._done(self.parser.should_keep_alive())

    def get_extra_info(self, name: str) -> Any:
        """As a network stream answers it (``url_policy.remember_outbound`` asks for the socket)."""
        return self.transport.get_extra_info(name) if self.transport is not None else None

    # the wire's use of it
    def dropped(self) -> bool:
        """Whether this idle connection's socket is readable: the server has closed it (or sent
        what nobody asked for), though the loop has not handled that yet."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        try:
            if not hasattr(select, "poll"):  # (Windows)
                return bool(select.select([sock.fileno()], [], [], 0)[0])
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):  # (a socket already closed)
            return True

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def send(self, response: WireResponse, data: bytes) -> None:
        assert self.transport is not None
        self.response, self._head_bytes = response, 0
        self.transport.write(data)

    def finished(self, response: WireResponse) -> None:
        if self.response is response:
            self.response = None
            if response._complete and response.keep_alive and not self.closed and response._error is None:
                self.wire._release(self)
                return
        self.close()

    def close(self) -> None:
        self.closed = True
        self.wire._open.discard(self)
        if self.transport is not None:
            self.transport.close()


class LaneWire:
    """POSTs to one session's server over connections of its own (``max_idle`` kept alive)."""

    def __init__(self, backend: GuardedBackend, ssl_context: Any, *, limit: int, connect_timeout: float,
                 boxes: list[Observed], keepalive_expiry: float = 4.0, max_idle: int = 20) -> None:
        self._backend, self._ssl, self._limit = backend, ssl_context, limit
        self._connect_timeout, self._boxes = connect_timeout, boxes
        self._expiry, self._max_idle = keepalive_expiry, max_idle
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self.closed = False
        self.connections_opened = 0
        """Connections dialled so far (for tests)."""

    @staticmethod
    def headers_ok(pairs: list[tuple[bytes, bytes]]) -> bool:
        """Whether every header can be written as it is (no line breaks or NULs)."""
        return all(not (_BAD_HEADER_CHARS & set(k.decode("latin-1"))) and
                   not (_BAD_HEADER_CHARS & set(v.decode("latin-1"))) for k, v in pairs)

    async def post(self, url: httpx2.URL, head: bytes, body: bytes) -> WireResponse:
        """Send ``head`` (the request line and headers, without ``content-length`` and the
        blank line) and ``body``; the response once its status and headers came."""
        conn = await self._connection(url)
        boxes = self._boxes + [b for b in (current_observed.get(),) if b is not None and b not in self._boxes]
        response = WireResponse(conn, self._limit, boxes)
        conn.send(response, b"%scontent-length: %d\r\n\r\n%s" % (head, len(body), body))
        try:
            await response._started()
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _connection(self, url: httpx2.URL) -> _Connection:
        if self.closed:
            raise httpx2.ConnectError("the session's connections are closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to have expired
            if not conn.closed and now - conn.idle_since < self._expiry and not conn.dropped():
                return conn
            conn.close()
        return await self._dial(url)

    async def _dial(self, url: httpx2.URL) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port = url.host, url.port or (443 if url.scheme == "https" else 80)
        tls = url.scheme == "https"
        conn = _Connection(self, url)
        try:
            with anyio.fail_after(self._connect_timeout):
                await self._backend.open_protocol(
                    host, port, lambda: conn, loop=loop,
                    ssl=self._ssl if tls else None, server_hostname=host if tls else None)
        except TimeoutError:
            conn.close()
            raise httpx2.ConnectTimeout(f"no connection to {host}:{port} within {self._connect_timeout:g} s") \
                from None
        except (OSError, httpcore2.ConnectError) as exc:  # refused, TLS, DNS, or the URL policy (Blocked)
            conn.close()
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
        self.connections_opened += 1
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if self.closed or len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        """Close every connection (a request still running fails with a read error)."""
        self.closed = True
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
