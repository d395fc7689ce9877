"""Fixtures for the catalog, gateway and ingest tests.

``Upstream`` is a real MCP server (the SDK's low-level ``Server`` over streamable HTTP) whose
behaviour a test can change while it runs: its tools, how late ``tools/list`` and
``tools/call`` answer, the bearer token it accepts, fixed replies and tool errors. It counts
every JSON-RPC method it receives, so a test can see handshakes (``server/discover`` or
``initialize``: one per new connection/session) and listings.

``serve_here(app)`` runs uvicorn inside the test's own event loop (for serving
``concierge gateway``'s app next to the backend that feeds it).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server

from concierge.registry import Registry
from tests.mcp_servers import ASGIApp, Message, Receive, RunningServer, Scope, Send, free_port, serve_in_thread

__all__ = [
    "HANDSHAKE_METHODS",
    "PathRouter",
    "Upstream",
    "register",
    "serve_here",
    "serve_upstream",
    "upstream_app",
]

HANDSHAKE_METHODS = ("server/discover", "initialize")


@dataclass
class Upstream:
    """The live, mutable behaviour of one test MCP server."""

    tools: list[tuple[str, str]] = field(default_factory=lambda: [("echo", "Echo the text back.")])
    list_delay: float = 0.0
    call_delay: float = 0.0
    token: str | None = None
    replies: dict[str, str] = field(default_factory=dict)
    errors: set[str] = field(default_factory=set)
    schema: dict[str, Any] | None = None
    methods: Counter[str] = field(default_factory=Counter)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def handshakes(self) -> int:
        return sum(self.methods[m] for m in HANDSHAKE_METHODS)

    @property
    def listings(self) -> int:
        return self.methods["tools/list"]

    def count(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            return
        with self._lock:
            for msg in data if isinstance(data, list) else [data]:
                if isinstance(msg, dict) and isinstance(msg.get("method"), str):
                    self.methods[msg["method"]] += 1


class _Gate:
    """Pure ASGI: counts JSON-RPC methods and enforces ``state.token`` (401 otherwise)."""

    def __init__(self, app: ASGIApp, state: Upstream) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = self.state.token
        if token is not None:
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if auth != f"Bearer {token}":
                body = b'{"error": "unauthorized"}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        chunks: list[bytes] = []

        async def tee() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.state.count(b"".join(chunks))
            return message

        await self.app(scope, tee, send)


class PathRouter:
    """Serves one MCP app at ``/s<i>/mcp`` for every i, so each source has its own URL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/mcp"):
            scope = dict(scope, path="/mcp", raw_path=b"/mcp")
        await self.app(scope, receive, send)


def upstream_app(state: Upstream, *, name: str = "upstream") -> ASGIApp:
    """A fresh app for ``state`` at ``/mcp``. Every tool echoes ``text`` (or its own name),
    unless ``state.replies`` fixes its reply or ``state.errors`` makes it a tool error."""

    async def on_list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        await anyio.sleep(state.list_delay)
        schema = state.schema or {"type": "object", "properties": {"text": {"type": "string"}}}
        return types.ListToolsResult(tools=[types.Tool(name=n, description=d, input_schema=schema)
                                            for n, d in list(state.tools)])

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = dict(params.arguments or {})
        state.calls.append((params.name, args))
        await anyio.sleep(state.call_delay)
        if params.name in state.errors:
            return types.CallToolResult(content=[types.TextContent(type="text", text=f"{params.name} failed")],
                                        is_error=True)
        text = state.replies.get(params.name, str(args.get("text", params.name)))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    server = Server(name, version="1.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)
    return _Gate(server.streamable_http_app(streamable_http_path="/mcp"), state)


@contextlib.contextmanager
def serve_upstream(state: Upstream) -> Iterator[RunningServer]:
    """``state``'s server in a thread; ``srv.restart()`` builds a fresh app on the same port."""
    with serve_in_thread(factory=lambda: upstream_app(state)) as srv:
        yield srv


@contextlib.asynccontextmanager
async def serve_here(app: ASGIApp, *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn in this event loop; yields ``http://host:port``."""
    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, lifespan="on", timeout_graceful_shutdown=1))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # leave signals to pytest
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        try:
            yield f"http://{host}:{port}"
        finally:
            server.should_exit = True


async def register(registry: Registry, url: str, namespace: str, **extra: Any) -> str:
    """Register an active source (asserting its health check passed) and return its id."""
    body = {"name": extra.pop("name", namespace.title()), "base_url": url, "auth_kind": "none",
            "app_namespace": namespace, **extra}
    out = await registry.register(body)
    assert out.status == "active", out.health_error
    return out.data_source_id  # type: ignore[return-value]
