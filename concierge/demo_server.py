"""A small, realistic MCP server for demos and tests.

``build_demo_server()`` returns an ``MCPServer`` with four typed tools over in-memory data
(a docs search, a tiny ticket tracker and an echo). ``build_demo_app()`` serves it over
streamable HTTP at ``/mcp``, optionally behind a bearer-token or custom-header check, and
``run_demo_server()`` runs that app with uvicorn (the CLI's ``demo-server`` command).
"""

from __future__ import annotations

import hmac
import itertools
import json
import threading
from urllib.parse import parse_qs
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

__all__ = ["DEMO_SERVER_NAME", "DEMO_SERVER_VERSION", "build_demo_app", "build_demo_server", "run_demo_server"]

DEMO_SERVER_NAME = "concierge-demo"
DEMO_SERVER_VERSION = "1.0.0"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DOCS: tuple[dict[str, str], ...] = (
    {
        "id": "doc-getting-started",
        "title": "Getting started",
        "body": "Install the agent, run `concierge init`, then add your first MCP server with its URL and token.",
    },
    {
        "id": "doc-auth",
        "title": "Authentication",
        "body": "Servers may require a bearer token or a custom header such as X-Api-Key. Tokens are stored encrypted.",
    },
    {
        "id": "doc-rate-limits",
        "title": "Rate limits",
        "body": "Each source has a per-minute call budget. Exceeding it returns a rate_limited error with retry_after.",
    },
    {
        "id": "doc-troubleshooting",
        "title": "Troubleshooting connections",
        "body": "A 401 means the token is wrong; connection refused means nothing listens at the URL; "
        "timeouts mean the server accepted the connection but never answered.",
    },
    {
        "id": "doc-billing",
        "title": "Billing and invoices",
        "body": "Invoices are issued monthly. Refund requests go through a support ticket with priority normal.",
    },
)


class Ticket(BaseModel):
    """A support ticket."""

    id: str
    title: str
    body: str
    priority: Literal["low", "normal", "high"]
    status: Literal["open", "closed"] = "open"


class DocHit(BaseModel):
    id: str
    title: str
    snippet: str
    score: int


class SearchResult(BaseModel):
    query: str
    hits: list[DocHit]


def build_demo_server() -> MCPServer:
    """A fresh demo server with its own in-memory ticket store."""
    server = MCPServer(
        DEMO_SERVER_NAME,
        version=DEMO_SERVER_VERSION,
        instructions="Demo tools: search the product docs and read or file support tickets.",
        log_level="WARNING",
    )
    lock = threading.Lock()
    tickets: dict[str, Ticket] = {
        "T-1001": Ticket(
            id="T-1001", title="Cannot log in", body="Login fails with 401 since this morning.", priority="high"
        ),
        "T-1002": Ticket(
            id="T-1002",
            title="Invoice copy",
            body="Please send a copy of the March invoice.",
            priority="low",
            status="closed",
        ),
    }
    numbers = itertools.count(1003)

    @server.tool()
    def search_docs(
        query: str = Field(description="Words to look for in the product documentation."),
        limit: int = Field(default=5, ge=1, le=20, description="Maximum number of hits to return."),
    ) -> SearchResult:
        """Search the product documentation and return the best matching pages with a short snippet."""
        words = [w for w in query.lower().split() if w]
        hits: list[DocHit] = []
        for doc in _DOCS:
            text = f"{doc['title']} {doc['body']}".lower()
            score = sum(text.count(w) for w in words)
            if score:
                hits.append(DocHit(id=doc["id"], title=doc["title"], snippet=doc["body"][:120], score=score))
        hits.sort(key=lambda h: (-h.score, h.id))
        return SearchResult(query=query, hits=hits[:limit])

    @server.tool()
    def get_ticket(ticket_id: str = Field(description="Ticket id, e.g. T-1001.")) -> Ticket:
        """Fetch one support ticket by its id."""
        with lock:
            ticket = tickets.get(ticket_id.strip().upper())
        if ticket is None:
            raise ToolError(f"No ticket with id {ticket_id!r}. Known ids look like T-1001.")
        return ticket

    @server.tool()
    def create_ticket(
        title: str = Field(description="One-line summary of the problem.", min_length=1, max_length=200),
        body: str = Field(description="Details: what happened, what was expected."),
        priority: Literal["low", "normal", "high"] = "normal",
    ) -> Ticket:
        """Open a new support ticket and return it with its assigned id."""
        with lock:
            ticket = Ticket(id=f"T-{next(numbers)}", title=title, body=body, priority=priority)
            tickets[ticket.id] = ticket
        return ticket

    @server.tool()
    def echo(text: str = Field(description="Text to send back.")) -> str:
        """Return the given text unchanged (handy for checking connectivity)."""
        return text

    return server


class _RequireToken:
    """Pure-ASGI gate: HTTP requests must carry the token; lifespan and other scopes pass through."""

    def __init__(self, app: ASGIApp, *, token: str, header: str | None, query: str | None = None) -> None:
        self.app = app
        self._token = token.encode("utf-8")
        self._header = (header or "authorization").strip().lower().encode("latin-1")
        self._bearer = query is None and (header is None or self._header == b"authorization")
        self._query = query

    def __repr__(self) -> str:  # never show the token
        return f"_RequireToken(header={self._header.decode('latin-1')!r}, token='***')"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = b""
        if self._query is not None:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(self._query) or [""]
            value = values[0].encode("utf-8")
        else:
            for name, raw in scope.get("headers", ()):
                if name.lower() == self._header:
                    value = raw
                    break
        if self._bearer:
            scheme, _, rest = value.partition(b" ")
            value = rest.strip() if scheme.lower() == b"bearer" else b""
        if not value or not hmac.compare_digest(value, self._token):
            body = json.dumps({"error": "unauthorized", "detail": "missing or invalid credentials"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if self._bearer:
                headers.append((b"www-authenticate", b'Bearer realm="mcp"'))
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def build_demo_app(*, token: str | None = None, header: str | None = None, host: str = "127.0.0.1",
                   query: str | None = None) -> ASGIApp:
    """The demo server's streamable HTTP app at ``/mcp``.

    With ``token``, every HTTP request must carry ``Authorization: Bearer <token>`` (or
    ``<header>: <token>`` when ``header`` is given, or ``?<query>=<token>`` in the URL when
    ``query`` is), else it gets a 401 JSON answer.
    ``host`` is the bind address; loopback addresses turn on the SDK's Host-header check.
    Each call builds a fresh server (a session manager can only run once).
    """
    app: ASGIApp = build_demo_server().streamable_http_app(streamable_http_path="/mcp", host=host)
    if token:
        app = _RequireToken(app, token=token, header=header, query=query)
    return app


def run_demo_server(
    host: str = "127.0.0.1", port: int = 8765, token: str | None = None, header: str | None = None,
    query: str | None = None,
) -> None:
    """Serve the demo app with uvicorn until interrupted."""
    import uvicorn

    auth = "none" if not token else (f"?{query}= in the URL" if query else f"header {header}" if header else "bearer")
    print(f"Demo MCP server on http://{host}:{port}/mcp (auth: {auth})", flush=True)
    uvicorn.run(build_demo_app(token=token, header=header, host=host, query=query), host=host, port=port,
                log_level="warning")
