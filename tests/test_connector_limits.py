"""The connector's size cap, its one-sentence errors, and SSE found by fallback: real (and
deliberately broken) servers on loopback."""

from __future__ import annotations

import time

import anyio
import pytest

from concierge.errors import ConnectorError
from concierge.mcp_client import Endpoint, ErrorKind, McpSession, call_tool, probe
from tests.mcp_servers import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    closed_port_url,
    demo_app,
    demo_sse_app,
    serve_in_thread,
    tools_app,
)

pytestmark = pytest.mark.anyio


def endless_app(content_type: str, *, length: int | None = None) -> ASGIApp:
    """Answers every POST with 200 and a body that never ends (64 KB chunks, no newline), or a
    ``content-length`` header announcing ``length`` bytes."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", content_type.encode())]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        chunk = b"data: " + b"x" * 65536 if content_type.startswith("text/event-stream") else b"[" + b"1," * 32768
        try:
            with anyio.fail_after(20):  # bounded even if nobody hangs up
                while True:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await anyio.sleep(0)
        except (OSError, TimeoutError, Exception):
            return

    return app


@pytest.mark.parametrize("content_type", ["text/event-stream", "application/json"])
async def test_an_endless_message_is_too_large_not_a_closed_server(content_type: str) -> None:
    with serve_in_thread(endless_app(content_type)) as srv:
        started = time.monotonic()
        result = await probe(Endpoint(srv.url(), max_message_bytes=300_000, connect_timeout=10))
    assert result.error_kind is ErrorKind.TOO_LARGE, result.error
    assert result.error == (f"too_large: {srv.url()} sent a message over the 300,000 byte limit — "
                            "stopped reading there")
    assert "closed" not in result.error and "is the server running" not in result.error
    assert time.monotonic() - started < 8  # stopped at the cap, not at the deadline


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    with serve_in_thread(endless_app("application/json", length=50_000_000)) as srv:
        result = await probe(Endpoint(srv.url(), max_message_bytes=1_000_000, connect_timeout=5))
    assert result.error_kind is ErrorKind.TOO_LARGE and "1,000,000 byte limit" in (result.error or "")


async def test_a_session_survives_one_oversized_answer() -> None:
    with serve_in_thread(tools_app(count=3)) as srv:  # every tool echoes its text
        async with McpSession(Endpoint(srv.url(), max_message_bytes=100_000)) as session:
            with pytest.raises(ConnectorError) as info:
                await session.call_tool("tool_0001", {"text": "x" * 200_000})
            assert info.value.kind is ErrorKind.TOO_LARGE and not session.closed
            assert (await session.call_tool("tool_0001", {"text": "small"})).text == "small"


async def test_each_failure_reads_as_one_sentence_with_its_kind_once() -> None:
    url = closed_port_url()
    with pytest.raises(ConnectorError) as refused:
        await call_tool(Endpoint(url), "echo", {})
    assert str(refused.value) == f"connection_refused: nothing is listening at {url} — is the server running?"
    assert refused.value.delivered is False  # never reached a server: safe to retry
    wrapped = ConnectorError(refused.value.kind, str(refused.value))  # re-wrapping never repeats the kind
    assert str(wrapped) == str(refused.value) and wrapped.sentence == refused.value.sentence
    assert ConnectorError("no-such-kind", "x").kind is ErrorKind.UNKNOWN


class _Rewrite:
    """Serves an SSE app's ``/sse`` stream at another path (as many SSE servers name it)."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            scope = dict(scope, path="/sse", raw_path=b"/sse")
        await self.app(scope, receive, send)


async def test_sse_is_found_by_falling_back_from_streamable_http() -> None:
    with serve_in_thread(factory=lambda: _Rewrite(demo_sse_app(), "/events")) as srv:
        result = await probe(Endpoint(srv.url("/events")))
        assert result.ok, result.error
        async with McpSession(Endpoint(srv.url("/events"))) as session:
            assert session.transport == "sse"
            assert (await session.call_tool("echo", {"text": "via sse"})).text == "via sse"
    with serve_in_thread(demo_app()) as srv:  # and a streamable server at a path ending in /sse
        async with McpSession(Endpoint(srv.url("/mcp"))) as session:
            assert session.transport == "streamable-http"
    missing = await probe(Endpoint(closed_port_url("/sse")))
    assert missing.error_kind is ErrorKind.CONNECTION_REFUSED


async def test_a_wrong_path_says_where_mcp_endpoints_usually_are() -> None:
    with serve_in_thread(demo_app()) as srv:
        result = await probe(Endpoint(srv.url("/nope")))
    assert result.error_kind is ErrorKind.NOT_FOUND
    assert "(the server's MCP endpoint, e.g. /mcp or /sse)" in (result.error or "")
