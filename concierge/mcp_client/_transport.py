"""Opening an SDK ``Client`` to an endpoint: httpx2 with the secrets (static headers or an
OAuth client), a response hook that records statuses, a size cap enforced while reading, SSE
detected by fallback, every connection dialled through the endpoint's URL policy (`_pinned`);
or, for ``transport="stdio"``, the program run by `_stdio`."""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from concierge.errors import ConnectorError
from concierge.mcp_client._errors import MessageTooLarge, Observed, current_observed
from concierge.mcp_client._pinned import GuardedBackend, guarded_transport
from concierge.mcp_client._stdio import stdio_transport
from concierge.mcp_client.endpoint import Endpoint, tls_context
from concierge.mcp_client.stdio import ProcessLog

__all__ = ["HttpRoute", "open_client"]

_SSE_READ_TIMEOUT = 300.0
_FALLBACK_STATUSES = frozenset({404, 405})
"""A streamable-HTTP POST to an SSE endpoint answers 405 (or 404); a GET /sse to a
streamable endpoint likewise: then the other transport is tried."""

MessageHandler = Callable[[Any], Awaitable[None]]


class _CappedStream(httpx2.AsyncByteStream):
    """Counts the bytes of one message while they arrive: a JSON body whole, an SSE stream
    per event (bytes since the last blank line). Raises ``MessageTooLarge`` past ``limit``."""

    def __init__(self, inner: Any, limit: int, boxes: list[Observed], *, sse: bool, length: int | None) -> None:
        self._inner, self._limit, self._boxes, self._sse, self._length = inner, limit, boxes, sse, length

    def _trip(self) -> MessageTooLarge:
        for box in self._boxes:
            box.too_large = self._limit
        return MessageTooLarge(self._limit)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if not self._sse and self._length is not None and self._length > self._limit:
            raise self._trip()  # refused on the header alone, before reading the body
        count, last = 0, b""
        async for chunk in self._inner:
            if self._sse:
                joined = last[-3:] + chunk
                cut = max(joined.rfind(b"\n\n"), joined.rfind(b"\r\n\r\n"))
                count = len(joined) - cut if cut >= 0 else count + len(chunk)
            else:
                count += len(chunk)
            if count > self._limit:
                raise self._trip()
            last = chunk
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int, box: Observed) -> None:
        self._inner, self._limit, self._box = inner, limit, box

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        ctype = response.headers.get("content-type", "").lower()
        boxes = [self._box] + [b for b in (current_observed.get(),) if b is not None and b is not self._box]
        try:
            length = int(response.headers.get("content-length", ""))
        except ValueError:
            length = None
        stream = _CappedStream(response.stream, self._limit, boxes, sse=ctype.startswith("text/event-stream"),
                               length=length)
        return httpx2.Response(response.status_code, headers=response.headers, stream=stream,
                               extensions=response.extensions, request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _hook(box: Observed) -> Callable[[httpx2.Response], Awaitable[None]]:
    async def hook(response: httpx2.Response) -> None:
        if response.request.extensions.get(_AUTH_REQUEST):
            return  # discovery, registration, token: the OAuth client judges those answers itself
        boxes = [box] + [b for b in (current_observed.get(),) if b is not None and b is not box]
        ctype = response.headers.get("content-type", "").lower()
        for target in boxes:
            if response.status_code >= 400:
                target.status = response.status_code
            elif response.status_code == 200 and ctype and not ctype.startswith(
                    ("application/json", "text/event-stream")):
                target.content_type = ctype.split(";")[0].strip()

    return hook


_AUTH_REQUEST = "concierge_auth_request"
"""Marks the requests an auth flow makes of its own (not the MCP request it signs)."""


def _boxes(box: Observed) -> list[Observed]:
    return [box] + [b for b in (current_observed.get(),) if b is not None and b is not box]


class _ObservedAuth(httpx2.Auth):
    """Runs the endpoint's auth flow and records what it decided where the error mapping
    looks: a `ConnectorError` it raises (e.g. ``auth_required``) as the boxes' ``cause``,
    since the SDK reports a failed POST only as a closed connection; and a 401 it answered
    by signing the request again is forgotten once the request went through."""

    def __init__(self, inner: httpx2.Auth, box: Observed) -> None:
        self._inner, self._box = inner, box

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        flow = self._inner.async_auth_flow(request)
        boxes = _boxes(self._box)
        seen: set[int] = set()
        response: httpx2.Response | None = None
        try:
            outgoing = await flow.__anext__()
            while True:
                if outgoing is not request:
                    outgoing.extensions = {**outgoing.extensions, _AUTH_REQUEST: True}
                response = yield outgoing
                if outgoing is request and response.status_code >= 400:
                    seen.add(response.status_code)
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            if response is not None and response.status_code < 400:
                for box in boxes:
                    if box.status in seen:
                        box.status = None
            return
        except ConnectorError as err:
            for box in boxes:
                box.cause = box.cause or err
            raise
        finally:
            await flow.aclose()


@dataclass(frozen=True)
class HttpRoute:
    """A streamable-HTTP connection's httpx2 client and the backend that dials (and pinned)
    its connections: what the gateway's pass-through lane sends through."""

    client: httpx2.AsyncClient
    backend: GuardedBackend
    ssl_context: ssl.SSLContext


def _http_client(endpoint: Endpoint, box: Observed, *, timeout: httpx2.Timeout,
                 headers: dict[str, str] | None = None, auth: httpx2.Auth | None = None,
                 backend: GuardedBackend | None = None) -> httpx2.AsyncClient:
    verify = tls_context(endpoint.verify_tls)
    if auth is None and endpoint.auth is not None:
        auth = _ObservedAuth(endpoint.auth, box)
    return httpx2.AsyncClient(
        headers=headers if headers is not None else endpoint.request_headers, timeout=timeout, auth=auth,
        verify=verify, event_hooks={"response": [_hook(box)]},
        follow_redirects=False,  # (the SDK follows same-origin ones itself; each new connection is checked)
        transport=_CappedTransport(guarded_transport(verify, endpoint.url_policy, backend),
                                   endpoint.max_message_bytes, box))


@asynccontextmanager
async def _client(endpoint: Endpoint, box: Observed, transport: str, *, read_timeout: float,
                  http_timeout: float, message_handler: MessageHandler | None,
                  http_sink: list[HttpRoute] | None = None) -> AsyncIterator[Client]:
    connect = min(endpoint.connect_timeout, 5.0)
    backstop = endpoint.max_message_bytes * 2  # the SDK's own per-event cap, behind ours
    options: dict[str, Any] = {"mode": "auto", "read_timeout_seconds": read_timeout, "cache": None,
                               "message_handler": message_handler}
    if transport == "stdio":
        assert endpoint.command is not None
        plog = endpoint.process_log or ProcessLog()
        stdio = stdio_transport(endpoint.command, plog, box, max_message_bytes=endpoint.max_message_bytes)
        async with Client(stdio, **options) as client:
            yield client
        return
    if transport == "sse":

        def factory(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                    auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
            return _http_client(endpoint, box, headers=headers, auth=auth, timeout=httpx2.Timeout(
                http_timeout, connect=connect, read=max(_SSE_READ_TIMEOUT, http_timeout)))

        sse = sse_client(endpoint.url, headers=endpoint.request_headers, timeout=http_timeout,
                         sse_read_timeout=max(_SSE_READ_TIMEOUT, http_timeout), httpx_client_factory=factory)
        async with Client(sse, **options) as client:
            yield client
        return
    backend = GuardedBackend(endpoint.url_policy)
    http = _http_client(endpoint, box, timeout=httpx2.Timeout(http_timeout, connect=connect), backend=backend)
    if http_sink is not None:
        http_sink.append(HttpRoute(http, backend, tls_context(endpoint.verify_tls)))
    async with http:
        stream = streamable_http_client(endpoint.url, http_client=http, max_sse_event_size=backstop)
        async with Client(stream, **options) as client:
            yield client


@asynccontextmanager
async def open_client(endpoint: Endpoint, box: Observed, *, read_timeout: float,
                      http_timeout: float | None = None,
                      message_handler: MessageHandler | None = None,
                      http_sink: list[HttpRoute] | None = None) -> AsyncIterator[tuple[Client, str]]:
    """An open, negotiated ``Client`` and the transport it uses. The caller owns the deadline
    and the error mapping (connect failures surface as nested exception groups).

    ``read_timeout`` bounds each MCP request by default; ``http_timeout`` (default the same)
    is httpx2's per-read budget and must cover the slowest tool call the client will make.
    ``http_sink`` receives the `HttpRoute` of a streamable-HTTP connection (the gateway's
    pass-through lane sends its POSTs that way: same headers, pinned addresses, URL policy and cap).
    """
    http_timeout = max(read_timeout, http_timeout or 0.0)
    candidates = endpoint.transports
    for i, transport in enumerate(candidates):
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(_client(
                endpoint, box, transport, read_timeout=read_timeout, http_timeout=http_timeout,
                message_handler=message_handler, http_sink=http_sink))
        except Exception:
            await stack.aclose()
            if http_sink is not None:
                http_sink.clear()  # that connection is closed
            if i + 1 < len(candidates) and box.status in _FALLBACK_STATUSES and box.cause is None:
                box.clear()
                continue
            raise
        async with stack:
            box.clear()  # what negotiation saw (a 4xx before a fallback) is stale now
            yield client, transport
        return
