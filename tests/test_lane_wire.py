"""The gateway lane's HTTP/1.1 client (`concierge.mcp_client.lane_wire`) against real servers on
loopback: asyncio servers written here that answer exactly what a test needs (a size, a broken
answer, a closed connection), and the gateway's lane over a real MCP upstream."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2
import pytest

from concierge.gateway_server import build_gateway_app
from concierge.mcp_client._errors import MessageTooLarge, Observed, current_observed
from concierge.mcp_client._pinned import Blocked, GuardedBackend
from concierge.mcp_client.endpoint import tls_context
from concierge.mcp_client.lane_wire import LaneWire
from concierge.mcp_client.url_policy import UrlPolicy
from tests.catalog_fixtures import register, serve_here
from tests.mcp_servers import Rich, rich_app, serve_in_thread
from tests.test_gateway_lane import _post

pytestmark = pytest.mark.anyio


@pytest.fixture(params=[pytest.param(("asyncio", {}), id="asyncio"),
                        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Both loops the lane runs on: asyncio's (tests, embedding) and uvloop (`concierge gateway`)."""
    return request.param  # type: ignore[no-any-return]

Answer = Callable[[int], bytes]
"""The bytes a server writes for its n-th request (0-based) on a connection."""


class _Server:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []


@asynccontextmanager
async def _raw_server(answer: Answer, *, close_after: float | None = None) -> AsyncIterator[tuple[str, _Server]]:
    """An HTTP server at the byte level: reads each request (head and content-length body)
    and writes ``answer(n)``; closes an idle connection after ``close_after`` seconds."""
    seen = _Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        n = 0
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), close_after)
                except (asyncio.IncompleteReadError, TimeoutError):
                    break
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                seen.requests.append(head + await reader.readexactly(length))
                writer.write(answer(n))
                await writer.drain()
                n += 1
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp", seen
    finally:
        server.close()


def _json(body: bytes, *, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


def _wire(policy: UrlPolicy | None = None, limit: int = 10_000, boxes: list[Observed] | None = None) -> LaneWire:
    return LaneWire(GuardedBackend(policy), tls_context(True), limit=limit, connect_timeout=5, boxes=boxes or [])


async def _post_to(wire: LaneWire, url: str, body: bytes = b"{}") -> Any:
    target = httpx2.URL(url)
    head = b"POST %s HTTP/1.1\r\nhost: %s\r\n" % (target.raw_path, target.netloc)
    return await wire.post(target, head, body)


async def test_kept_alive_connections_carry_one_request_after_another() -> None:
    async with _raw_server(lambda n: _json(b'{"n": %d}' % n)) as (url, seen):
        wire = _wire()
        for n in range(5):
            response = await _post_to(wire, url, b'{"call": %d}' % n)
            assert response.status_code == 200 and json.loads(await response.aread()) == {"n": n}
            await response.aclose()
        assert seen.connections == 1 and wire.connections_opened == 1
        assert seen.requests[3].endswith(b'{"call": 3}') and b"content-length: 11\r\n" in seen.requests[3]
        wire.close()


async def test_a_connection_the_server_ends_is_not_used_again() -> None:
    # the server says "connection: close" on its first answer, and drops idle ones after 50 ms
    async with _raw_server(lambda n: _json(b"{}", extra=b"connection: close\r\n" if n == 0 else b""),
                           close_after=0.05) as (url, seen):
        wire = _wire()
        for pause in (0.0, 0.0, 0.2):
            await asyncio.sleep(pause)
            response = await _post_to(wire, url)
            assert response.status_code == 200 and await response.aread() == b"{}"
            await response.aclose()
        assert seen.connections == 3 and wire.connections_opened == 3  # closed, kept, dropped while idle
        wire.close()


@contextmanager
def _threaded_server(idle_close: float) -> Iterator[tuple[str, _Server]]:
    """A server on its own thread (it runs while the test's loop is blocked): answers each
    request with ``{"n": <request number on the connection>}`` and closes a connection left
    idle for ``idle_close`` seconds."""
    seen = _Server()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()

    def serve(conn: socket.socket) -> None:
        seen.connections += 1
        buffered, n = b"", 0
        with conn:
            conn.settimeout(idle_close)
            while True:
                try:
                    while b"\r\n\r\n" not in buffered:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffered += chunk
                except TimeoutError:
                    return  # idle: close it
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffered) < length:
                    buffered += conn.recv(65536)
                seen.requests.append(head + b"\r\n\r\n" + buffered[:length])
                buffered = buffered[length:]
                conn.sendall(_json(b'{"n": %d}' % n))
                n += 1

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/mcp", seen
    finally:
        done.set()
        thread.join(5)
        listener.close()


async def test_a_connection_the_server_closed_during_a_stall_is_not_used_again() -> None:
    # The server closes connections idle for 50 ms; the gateway's loop is blocked for 300 ms
    # (a busy gateway): the close has reached the socket, but no callback has seen it yet.
    with _threaded_server(idle_close=0.05) as (url, seen):
        wire = _wire()
        response = await _post_to(wire, url)
        assert json.loads(await response.aread()) == {"n": 0}
        await response.aclose()
        time.sleep(0.3)  # blocks the loop
        response = await _post_to(wire, url)
        assert response.status_code == 200 and json.loads(await response.aread()) == {"n": 0}
        await response.aclose()
        assert seen.connections == 2 and wire.connections_opened == 2
        wire.close()


async def test_an_answer_over_the_size_cap_is_refused_and_recorded() -> None:
    big = b'{"x": "' + b"a" * 5000 + b'"}'
    chunked = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
               b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
    sse = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
           b"%x\r\n%s\r\n0\r\n\r\n") % (len(big) + 21, b"event: message\r\ndata: " + big)
    for what, raw in (("content-length", _json(big)), ("chunked", chunked), ("one SSE event", sse)):
        async with _raw_server(lambda n, raw=raw: raw) as (url, _):
            session_box, call_box = Observed(), Observed()
            wire = _wire(limit=1000, boxes=[session_box])
            token = current_observed.set(call_box)
            try:
                response = await _post_to(wire, url)
                with pytest.raises(MessageTooLarge):
                    if what == "one SSE event":
                        async for _line in response.aiter_lines():
                            pass
                    else:
                        await response.aread()
                await response.aclose()
            finally:
                current_observed.reset(token)
            assert session_box.too_large == call_box.too_large == 1000, what
            wire.close()


async def test_error_statuses_and_odd_answers_are_recorded_as_the_sdk_path_records_them() -> None:
    answers = {
        503: b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        200: b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nhi",
    }
    for status, raw in answers.items():
        async with _raw_server(lambda n, raw=raw: raw) as (url, _):
            box = Observed()
            wire = _wire(boxes=[box])
            response = await _post_to(wire, url)
            assert response.status_code == status
            if status == 503:
                assert box.status == 503
                with pytest.raises(httpx2.HTTPStatusError) as caught:
                    response.raise_for_status()
                assert caught.value.response.status_code == 503
            else:
                assert box.content_type == "text/html" and box.status is None
            await response.aclose()
            wire.close()


async def test_broken_answers_are_httpx2_errors() -> None:
    cases = {
        "not HTTP": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", httpx2.RemoteProtocolError),
        "cut short": (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{\"a\"",
                      httpx2.RemoteProtocolError),
    }
    for what, (raw, error) in cases.items():
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes = raw) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(raw)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
        wire = _wire()
        with pytest.raises(error):
            response = await _post_to(wire, url, b"")
            await response.aread()
        assert not wire._open, what
        wire.close()
        server.close()


async def test_connections_go_only_where_the_url_policy_allows() -> None:
    async with _raw_server(lambda n: _json(b"{}")) as (url, seen):
        policy = UrlPolicy()
        policy.add_self("127.0.0.1", httpx2.URL(url).port)  # as if the server were Concierge itself
        wire = _wire(policy)
        with pytest.raises(httpx2.ConnectError) as caught:
            await _post_to(wire, url)
        assert isinstance(caught.value.__cause__, Blocked) and "itself" in str(caught.value)
        assert seen.requests == []
        wire.close()
    refused = _wire()
    with pytest.raises(httpx2.ConnectError):
        await _post_to(refused, url)  # the server is gone: refused
    refused.close()


def test_the_gateway_command_runs_on_uvloop() -> None:
    from concierge.cli.app import _uvloop_for

    assert _uvloop_for("gateway") and not _uvloop_for("chat") and not _uvloop_for(None)


def test_headers_that_would_break_the_request_are_not_written() -> None:
    assert LaneWire.headers_ok([(b"authorization", b"Bearer abc")])
    for bad in (b"Bearer abc\r\nx-injected: 1", b"abc\n", b"a\0b"):
        assert not LaneWire.headers_ok([(b"authorization", bad)])
    assert not LaneWire.headers_ok([(b"x-a\r\nb", b"1")])


async def test_the_gateway_lane_keeps_one_connection_per_session_and_closes_it_with_the_session(backend) -> None:
    state = Rich()
    with serve_in_thread(factory=lambda: rich_app(state)) as up:
        sid = await register(backend.registry, up.url(), "rich")
        backend.registry.create_agent({"slug": "bot"})
        app = build_gateway_app(backend, agent="bot", fast_lane=True)
        async with serve_here(app) as base:
            for n in range(6):
                status, _, body = await _post(base, "rich_lookup", {"q": f"x{n}"})
                assert status == 200 and json.loads(body)["result"]["structuredContent"] == {"answer": "42"}
            assert app.state.lane.served == 6
            session = backend.gateway.pool.pooled(sid)
            wire = session.lane_wire
            assert wire is not None and wire.connections_opened == 1
            await session.aclose()
            assert wire.closed and not wire._open and session.lane_wire is None


async def test_headers_without_end_are_cut_off() -> None:
    """A server that sends header lines forever (httptools sets no limit) is refused past
    MAX_HEAD_BYTES, and the connection closed; a large body is not mistaken for headers."""
    from concierge.mcp_client.lane_wire import MAX_HEAD_BYTES

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        try:
            for n in range(100_000):
                writer.write(b"x-filler-%d: %s\r\n" % (n, b"a" * 200))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
    wire = _wire()
    with pytest.raises(httpx2.RemoteProtocolError, match="headers are over 64 KiB"):
        await _post_to(wire, url, b"")
    assert not wire._open
    wire.close()
    server.close()
    big = b'{"x": "' + b"a" * (4 * MAX_HEAD_BYTES) + b'"}'
    async with _raw_server(lambda n: _json(big)) as (url, _):
        wire = _wire(limit=len(big) + 1)
        response = await _post_to(wire, url)
        assert await response.aread() == big
        await response.aclose()
        wire.close()
