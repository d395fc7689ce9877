"""The one place that speaks MCP to users' servers.

Public surface::

    probe(endpoint)                  connect, negotiate, list every tool; returns a ProbeResult, never raises
    list_tools(endpoint)             the same listing, raising ConnectorError on failure
    call_tool(endpoint, name, args)  one-shot connection for one tools/call
    McpSession(endpoint)             a long-lived session for pooling (open / call_tool / aclose)

Every network step runs under a deadline (``Endpoint.connect_timeout`` for connecting and
listing, ``Endpoint.call_timeout`` for one tools/call), so nothing hangs past it. SDK and
httpx2 failures are translated here into ``ConnectorError(kind, detail)`` with ``kind`` an
``ErrorKind`` and ``detail`` one human sentence; header values (secrets) never appear in
reprs, messages or logs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import re
import ssl
import time
import unicodedata
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from concierge.errors import ConnectorError

__all__ = [
    "DEFAULT_INPUT_SCHEMA",
    "Endpoint",
    "ErrorKind",
    "MAX_DESCRIPTION_CHARS",
    "McpSession",
    "ProbeResult",
    "ToolCallResult",
    "ToolInfo",
    "call_tool",
    "list_tools",
    "probe",
]

MAX_DESCRIPTION_CHARS = 2000
"""Tool descriptions are cut to this many characters (hostile servers send megabytes)."""
_MAX_TITLE_CHARS = 200
_MAX_DETAIL_CHARS = 240
_SSE_READ_TIMEOUT = 300.0
_CLOSE_GRACE = 2.0

DEFAULT_INPUT_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}
"""The input schema a tool gets when its server sent none (or one that is not an object schema)."""


class ErrorKind(StrEnum):
    """Why talking to an MCP server failed."""

    UNAUTHORIZED = "unauthorized"  # HTTP 401
    FORBIDDEN = "forbidden"  # HTTP 403
    NOT_FOUND = "not_found"  # HTTP 404
    CONNECTION_REFUSED = "connection_refused"
    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    NOT_MCP = "not_mcp"  # answered, but not an MCP endpoint (HTML page, non-JSON-RPC JSON, 405...)
    PROTOCOL = "protocol"  # MCP-level error / malformed answer
    TOO_MANY_TOOLS = "too_many_tools"  # page cap or tool cap exceeded
    SERVER_ERROR = "server_error"  # HTTP 5xx
    UNKNOWN = "unknown"



@functools.cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    """One SSL context per verify mode for the whole process: building one loads the CA
    bundle (~20 ms, blocking the event loop), which dominated cold catalog resolution."""
    return httpx2.create_ssl_context(verify=verify)


@dataclass(frozen=True)
class Endpoint:
    """Where an MCP server lives and how to reach it.

    ``headers`` carry secrets (auth tokens); ``repr()`` shows their names only.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra HTTP headers sent with every request, e.g. ``{"Authorization": "Bearer …"}``."""
    transport: Literal["auto", "streamable-http", "sse"] = "auto"
    """``auto`` picks SSE iff the URL path ends with ``/sse``, else streamable HTTP."""
    connect_timeout: float = 10.0
    """Deadline (s) for connect + negotiation (+ the tools/list walk in a probe)."""
    call_timeout: float = 60.0
    """Deadline (s) for one tools/call."""
    verify_tls: bool = True

    def __post_init__(self) -> None:
        # A private copy: a caller mutating its dict later must not change a frozen endpoint.
        object.__setattr__(self, "headers", dict(self.headers))

    def __repr__(self) -> str:
        masked = {name: "***" for name in self.headers}
        return (
            f"Endpoint(url={_display_url(self.url)!r}, headers={masked!r}, transport={self.transport!r}, "
            f"connect_timeout={self.connect_timeout!r}, call_timeout={self.call_timeout!r}, "
            f"verify_tls={self.verify_tls!r})"
        )

    __str__ = __repr__

    @property
    def resolved_transport(self) -> Literal["streamable-http", "sse"]:
        """The transport ``auto`` resolves to for this URL."""
        if self.transport != "auto":
            return self.transport
        path = urlsplit(self.url).path.rstrip("/")
        return "sse" if path.endswith("/sse") else "streamable-http"


@dataclass(frozen=True)
class ToolInfo:
    """One tool as a server lists it, sanitized for showing to people and models."""

    name: str
    description: str
    """Control characters and escape sequences removed, capped at ``MAX_DESCRIPTION_CHARS``."""
    input_schema: dict[str, Any]
    """The server's camelCase ``inputSchema``; ``DEFAULT_INPUT_SCHEMA`` if absent or invalid."""
    title: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of ``probe()``: either the tool listing or a classified failure."""

    ok: bool
    tools: tuple[ToolInfo, ...]
    tool_count: int
    server_name: str | None
    server_version: str | None
    protocol_version: str | None
    latency_ms: float
    error_kind: ErrorKind | None
    error: str | None
    """One line for a person, e.g. ``"unauthorized: … answered HTTP 401 — check the token"``."""
    http_status: int | None


@dataclass(frozen=True)
class ToolCallResult:
    """A tools/call answer. ``is_error`` is the server's tool-level error flag."""

    is_error: bool
    content: list[dict[str, Any]]
    """Content blocks dumped with ``model_dump(by_alias=True, exclude_none=True)``."""
    structured_content: dict[str, Any] | None
    text: str
    """All text blocks joined with newlines."""
    latency_ms: float


# --------------------------------------------------------------------------------------------
# Sanitizing server-supplied text

_ANSI_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI sequences (colours, cursor moves, screen clears)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC sequences (window titles, hyperlinks)
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
)
_BLANK_LINES_RE = re.compile(r"\n{3,}")


def _sanitize(text: str, limit: int, *, single_line: bool = False) -> str:
    """Strip escape sequences and control/format characters; keep newlines and tabs; cap length."""
    if len(text) > limit * 4:  # don't scan megabytes: the cap throws the rest away anyway
        text = text[: limit * 4]
    text = _ANSI_RE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    kept = []
    for ch in text:
        if ch in "\n\t":
            kept.append(" " if single_line else ch)
        elif unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            kept.append(ch)
    text = _BLANK_LINES_RE.sub("\n\n", "".join(kept)).strip()
    if single_line:
        text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _display_url(url: str) -> str:
    """The URL without userinfo, query or fragment (they may carry secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _secret_values(headers: Mapping[str, str]) -> list[str]:
    """Header values, and for ``Scheme value`` credentials the bare value too; longest first."""
    out: set[str] = set()
    for value in headers.values():
        value = str(value).strip()
        if len(value) >= 3:
            out.add(value)
        _, _, rest = value.partition(" ")
        if len(rest.strip()) >= 3:
            out.add(rest.strip())
    return sorted(out, key=len, reverse=True)


def _redact(text: str, headers: Mapping[str, str]) -> str:
    for secret in _secret_values(headers):
        text = text.replace(secret, "***")
    return text


def _tool_info(tool: types.Tool) -> ToolInfo:
    dumped = tool.model_dump(by_alias=True, exclude_none=True)
    schema = dumped.get("inputSchema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        schema = {"type": "object", "properties": {}}
    title = tool.title or (tool.annotations.title if tool.annotations is not None else None)
    return ToolInfo(
        name=tool.name,
        description=_sanitize(tool.description or "", MAX_DESCRIPTION_CHARS),
        input_schema=schema,
        title=(_sanitize(title, _MAX_TITLE_CHARS, single_line=True) or None) if title else None,
    )


def _call_result(result: types.CallToolResult, latency_ms: float) -> ToolCallResult:
    content = [block.model_dump(by_alias=True, exclude_none=True) for block in result.content]
    texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
    structured = result.structured_content
    return ToolCallResult(
        is_error=bool(result.is_error),
        content=content,
        structured_content=dict(structured) if isinstance(structured, dict) else None,
        text="\n".join(texts),
        latency_ms=latency_ms,
    )


# --------------------------------------------------------------------------------------------
# HTTP status capture (the SDK turns 401/403/5xx into one MCPError and loses the status)


class _StatusBox:
    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status: int | None = None


_call_status: contextvars.ContextVar[_StatusBox | None] = contextvars.ContextVar(
    "concierge_mcp_call_status", default=None
)
"""Per-call box: the SDK runs each POST in a copy of the sending task's context."""


def _status_hook(box: _StatusBox) -> Any:
    async def hook(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            box.status = response.status_code
            call_box = _call_status.get()
            if call_box is not None:
                call_box.status = response.status_code

    return hook


@asynccontextmanager
async def _connect(
    endpoint: Endpoint, box: _StatusBox, *, read_timeout: float, http_timeout: float | None = None
) -> AsyncIterator[Client]:
    """An open, negotiated ``Client``. The caller owns the deadline (connect errors surface as
    nested exception groups; see ``_classify``).

    ``read_timeout`` bounds each MCP request by default; ``http_timeout`` (default the same)
    is httpx2's per-read budget and must cover the slowest tool call the client will make.
    """
    connect = min(endpoint.connect_timeout, 5.0)
    http_timeout = max(read_timeout, http_timeout or 0.0)
    hooks = {"response": [_status_hook(box)]}
    headers = dict(endpoint.headers)
    if endpoint.resolved_transport == "sse":

        def factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(
                headers=headers,
                timeout=httpx2.Timeout(http_timeout, connect=connect, read=max(_SSE_READ_TIMEOUT, http_timeout)),
                auth=auth,
                verify=_tls_context(endpoint.verify_tls),
                event_hooks=hooks,
            )

        transport = sse_client(
            endpoint.url,
            headers=headers,
            timeout=http_timeout,
            sse_read_timeout=max(_SSE_READ_TIMEOUT, http_timeout),
            httpx_client_factory=factory,
        )
        async with Client(transport, mode="auto", read_timeout_seconds=read_timeout) as client:
            yield client
        return

    http = httpx2.AsyncClient(
        headers=headers,
        verify=_tls_context(endpoint.verify_tls),
        timeout=httpx2.Timeout(http_timeout, connect=connect),
        event_hooks=hooks,
    )
    async with http:
        transport = streamable_http_client(endpoint.url, http_client=http)
        async with Client(transport, mode="auto", read_timeout_seconds=read_timeout) as client:
            yield client


async def _collect_tools(client: Client, *, max_pages: int, max_tools: int) -> list[ToolInfo]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(max(1, max_pages)):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools.extend(page.tools)
        if len(tools) > max_tools:
            raise ConnectorError(
                ErrorKind.TOO_MANY_TOOLS,
                f"the server lists more than {max_tools} tools — only servers with up to {max_tools} are supported",
            )
        cursor = page.next_cursor
        if not cursor:
            return [_tool_info(t) for t in tools]
    raise ConnectorError(
        ErrorKind.TOO_MANY_TOOLS,
        f"the server kept paginating past {max_pages} pages of tools ({len(tools)} tools so far) — stopped there",
    )


# --------------------------------------------------------------------------------------------
# Error classification


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(_leaves(inner))
        return out
    return [exc]


def _pick_leaf(exc: BaseException) -> BaseException:
    """The most telling leaf of a (nested) exception group."""
    leaves = _leaves(exc)
    cancelled = anyio.get_cancelled_exc_class()

    def rank(e: BaseException) -> int:
        if isinstance(e, ConnectorError):
            return 0
        if isinstance(e, (MCPError, httpx2.HTTPError, OSError, ValidationError)):
            return 1
        if isinstance(e, cancelled | GeneratorExit):
            return 9
        return 5

    return min(leaves, key=rank)


def _one_line(text: str, limit: int = _MAX_DETAIL_CHARS) -> str:
    return _sanitize(text, limit, single_line=True)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _from_status(status: int, where: str, *, in_session: bool = False) -> tuple[ErrorKind, str] | None:
    if status == 404 and in_session:
        return (
            ErrorKind.NOT_FOUND,
            f"{where} no longer knows this session (HTTP 404; was the server restarted?) — reconnect",
        )
    if status == 401:
        return ErrorKind.UNAUTHORIZED, f"{where} answered HTTP 401 — check the token or auth header"
    if status == 403:
        return ErrorKind.FORBIDDEN, f"{where} answered HTTP 403 — the credentials were refused for this resource"
    if status == 404:
        return ErrorKind.NOT_FOUND, f"{where} answered HTTP 404 — check the URL path (often it ends in /mcp)"
    if status == 421:
        return (
            ErrorKind.PROTOCOL,
            f"{where} rejected the Host header (HTTP 421) — the server must allow this host name",
        )
    if status in (405, 406, 415):
        return ErrorKind.NOT_MCP, f"{where} answered HTTP {status} — it does not look like an MCP endpoint"
    if status >= 500:
        return ErrorKind.SERVER_ERROR, f"{where} answered HTTP {status} — the server failed; check its logs"
    if status >= 400:
        return ErrorKind.PROTOCOL, f"{where} answered HTTP {status} — the server rejected the MCP request"
    return None


def _classify(
    exc: BaseException,
    endpoint: Endpoint,
    status: int | None,
    *,
    deadline: float,
    phase: str = "connect",
    in_session: bool = False,
) -> ConnectorError:
    """Translate an SDK / httpx2 / timeout failure into a one-line ``ConnectorError``."""
    leaf = _pick_leaf(exc)
    if isinstance(leaf, ConnectorError):
        return leaf
    where = _display_url(endpoint.url)
    kind: ErrorKind
    detail: str
    http_status = status

    def line(text: str, limit: int = _MAX_DETAIL_CHARS) -> str:
        # Redact before cutting, so a secret split by the cut cannot survive in part.
        return _one_line(_redact(text, endpoint.headers), limit)

    def timeout() -> tuple[ErrorKind, str]:
        what = "to the tool call" if phase == "call" else "from the server"
        return ErrorKind.TIMEOUT, f"no answer {what} at {where} within {deadline:g} s"

    if isinstance(leaf, TimeoutError | httpx2.TimeoutException):
        kind, detail = timeout()
    elif isinstance(leaf, httpx2.ConnectError):
        text = str(leaf)
        upper = text.upper()
        if any(s in text for s in ("Name or service not known", "getaddrinfo", "nodename", "No address associated")):
            kind, detail = ErrorKind.DNS, f"could not resolve the host name '{_host(endpoint.url)}' — check the URL"
        elif "SSL" in upper or "CERTIFICATE" in upper or "TLS" in upper:
            reason = re.search(r"\[SSL: ([A-Z_]+)\]", text)
            why = reason.group(1).lower().replace("_", " ") if reason else "handshake failed"
            hint = (
                "the server may not speak https on this port"
                if "WRONG_VERSION" in upper
                else "check the certificate, or turn off TLS verification for a self-signed server"
            )
            kind, detail = ErrorKind.TLS, f"TLS with {_host(endpoint.url)} failed ({why}) — {hint}"
        else:
            kind, detail = ErrorKind.CONNECTION_REFUSED, f"nothing is listening at {where} — is the server running?"
    elif isinstance(leaf, httpx2.HTTPStatusError):
        http_status = leaf.response.status_code
        mapped = _from_status(http_status, where, in_session=in_session)
        kind, detail = mapped or (ErrorKind.UNKNOWN, f"{where} answered HTTP {http_status}")
    elif isinstance(leaf, httpx2.SSEError):
        kind, detail = ErrorKind.NOT_MCP, f"{where} answered, but not with an MCP event stream — check the URL"
    elif isinstance(leaf, httpx2.UnsupportedProtocol | httpx2.InvalidURL):
        kind, detail = ErrorKind.UNKNOWN, f"the URL '{where}' is not a valid http(s) URL"
    elif isinstance(leaf, httpx2.RemoteProtocolError | httpx2.NetworkError):
        kind = ErrorKind.CONNECTION_REFUSED
        detail = f"the connection to {where} was dropped ({line(str(leaf), 80) or type(leaf).__name__})"
    elif isinstance(leaf, MCPError):
        code = leaf.error.code
        message = leaf.error.message or ""
        mapped = _from_status(status, where, in_session=in_session) if status is not None else None
        if code == types.REQUEST_TIMEOUT:
            kind, detail = timeout()
        elif mapped is not None and code in (types.INTERNAL_ERROR, types.METHOD_NOT_FOUND, types.INVALID_REQUEST):
            kind, detail = mapped
        elif code == types.PARSE_ERROR or "Unexpected content type" in message:
            got = re.search(r"content type: ([\w.+-]+/[\w.+-]+)", message)
            what = f" (got {got.group(1)})" if got else " (not JSON-RPC)"
            kind, detail = ErrorKind.NOT_MCP, f"{where} answered, but not as an MCP server{what} — check the URL"
            http_status = status
        elif code == types.METHOD_NOT_FOUND and message == "Not Found":
            kind, detail = ErrorKind.NOT_FOUND, f"{where} answered HTTP 404 — check the URL path (often it ends in /mcp)"
            http_status = 404
        elif code == types.CONNECTION_CLOSED:
            kind, detail = mapped or (
                ErrorKind.CONNECTION_REFUSED,
                f"the connection to {where} closed — is the server running?",
            )
        else:
            kind, detail = ErrorKind.PROTOCOL, f"the server answered with MCP error {code}: {line(message)}"
    elif isinstance(leaf, ValidationError):
        kind, detail = ErrorKind.PROTOCOL, f"the server sent a malformed MCP message ({leaf.error_count()} errors)"
    elif isinstance(leaf, RuntimeError) and "structured content" in str(leaf).lower():
        kind, detail = ErrorKind.PROTOCOL, line(str(leaf))
    elif isinstance(leaf, OSError):
        kind, detail = ErrorKind.CONNECTION_REFUSED, f"could not reach {where} ({line(str(leaf), 80)})"
    else:
        kind, detail = ErrorKind.UNKNOWN, f"{type(leaf).__name__}: {line(str(leaf)) or 'no detail'}"
    return ConnectorError(kind, _redact(detail, endpoint.headers), http_status=http_status)


class _Deadline:
    """A cancel scope with a movable deadline; raises ``TimeoutError`` when it fires.

    Unlike nested ``fail_after`` blocks, one scope can cover connecting and then a call
    with different budgets without exiting a scope that a task group was opened inside.
    """

    def __init__(self, seconds: float) -> None:
        self._scope = anyio.CancelScope(deadline=anyio.current_time() + seconds)
        self.seconds = seconds

    def reset(self, seconds: float) -> None:
        self.seconds = seconds
        self._scope.deadline = anyio.current_time() + seconds

    def __enter__(self) -> _Deadline:
        self._scope.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> bool | None:
        swallowed = self._scope.__exit__(*exc_info)
        if self._scope.cancelled_caught and anyio.current_time() >= self._scope.deadline:
            raise TimeoutError
        return swallowed


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


# --------------------------------------------------------------------------------------------
# One-shot operations


async def probe(endpoint: Endpoint, *, max_pages: int = 50, max_tools: int = 5000) -> ProbeResult:
    """Connect, negotiate and list every tool under ``endpoint.connect_timeout``.

    Never raises (except cancellation): failures come back as ``ok=False`` with a kind and a sentence.
    """
    start = time.perf_counter()
    box = _StatusBox()
    name = version = proto = None
    tools: list[ToolInfo] | None = None
    latency = 0.0
    try:
        with anyio.fail_after(endpoint.connect_timeout):
            async with _connect(endpoint, box, read_timeout=endpoint.connect_timeout) as client:
                box.status = None  # statuses seen while negotiating (e.g. a 4xx before fallback) are stale
                info = client.server_info
                if info is not None:
                    name = _sanitize(info.name, _MAX_TITLE_CHARS, single_line=True) or None
                    version = _sanitize(info.version or "", _MAX_TITLE_CHARS, single_line=True) or None
                proto = client.protocol_version
                tools = await _collect_tools(client, max_pages=max_pages, max_tools=max_tools)
                latency = _ms(start)
    except Exception as exc:
        if tools is None:  # (if the listing is in hand, only closing the connection failed)
            err = _classify(exc, endpoint, box.status, deadline=endpoint.connect_timeout)
            return ProbeResult(
                ok=False,
                tools=(),
                tool_count=0,
                server_name=name,
                server_version=version,
                protocol_version=proto,
                latency_ms=_ms(start),
                error_kind=ErrorKind(err.kind),
                error=str(err),
                http_status=err.http_status,
            )
    assert tools is not None
    return ProbeResult(
        ok=True,
        tools=tuple(tools),
        tool_count=len(tools),
        server_name=name,
        server_version=version,
        protocol_version=proto,
        latency_ms=latency,
        error_kind=None,
        error=None,
        http_status=None,
    )


async def list_tools(endpoint: Endpoint, *, max_pages: int = 50, max_tools: int = 5000) -> list[ToolInfo]:
    """Every tool the server lists (all pages) under ``connect_timeout``; raises ``ConnectorError``."""
    box = _StatusBox()
    tools: list[ToolInfo] | None = None
    try:
        with anyio.fail_after(endpoint.connect_timeout):
            async with _connect(endpoint, box, read_timeout=endpoint.connect_timeout) as client:
                box.status = None
                tools = await _collect_tools(client, max_pages=max_pages, max_tools=max_tools)
    except Exception as exc:
        if tools is None:  # else only closing failed
            raise _classify(exc, endpoint, box.status, deadline=endpoint.connect_timeout) from None
    assert tools is not None
    return tools


async def call_tool(endpoint: Endpoint, name: str, arguments: dict[str, Any] | None = None) -> ToolCallResult:
    """Open a connection, call one tool, close. A tool-level error is ``is_error=True``, not an
    exception; transport failures raise ``ConnectorError`` (connect under ``connect_timeout``,
    the call under ``call_timeout``)."""
    box = _StatusBox()
    phase, budget = "connect", endpoint.connect_timeout
    result: types.CallToolResult | None = None
    latency = 0.0
    try:
        with _Deadline(endpoint.connect_timeout) as deadline:
            async with _connect(
                endpoint, box, read_timeout=endpoint.connect_timeout, http_timeout=endpoint.call_timeout
            ) as client:
                phase, budget = "call", endpoint.call_timeout
                deadline.reset(endpoint.call_timeout)
                box.status = None
                start = time.perf_counter()
                result = await client.call_tool(name, arguments, read_timeout_seconds=endpoint.call_timeout)
                latency = _ms(start)
    except Exception as exc:
        if result is None:  # else only closing failed; the answer stands
            raise _classify(exc, endpoint, box.status, deadline=budget, phase=phase) from None
    assert result is not None
    return _call_result(result, latency)


# --------------------------------------------------------------------------------------------
# Long-lived sessions


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a worker's exception as seen (it was recorded already), so asyncio does not log it."""
    if not task.cancelled():
        task.exception()


class McpSession:
    """A long-lived open session to one server, for pooling (a gateway reuses it for many calls).

    The SDK client lives in a dedicated worker task (it must be entered and exited in one
    task), so ``call_tool`` / ``list_tools`` may be awaited from any task, concurrently.
    After a transport failure the session marks itself ``closed``; open a new one.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.server_name: str | None = None
        self.server_version: str | None = None
        self.protocol_version: str | None = None
        self._client: Client | None = None
        self._box = _StatusBox()
        self._task: asyncio.Task[None] | None = None
        self._stop: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._failure: BaseException | None = None
        self._error: ConnectorError | None = None
        self._closed = False
        self._opening = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self._client is not None else "new")
        return f"McpSession({_display_url(self.endpoint.url)!r}, {state})"

    @property
    def closed(self) -> bool:
        """True after ``aclose()`` or once a transport failure made the session unusable."""
        return self._closed

    async def __aenter__(self) -> McpSession:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect and negotiate under ``connect_timeout``; raises ``ConnectorError``."""
        if self._closed:
            raise self._closed_error()
        if self._task is not None or self._opening:
            raise RuntimeError("McpSession.open() was already called")
        self._opening = True
        ready, self._stop, self._done = anyio.Event(), anyio.Event(), anyio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(ready), name=f"mcp-session {self!r}")
        self._task.add_done_callback(_retrieve)
        try:
            with anyio.fail_after(self.endpoint.connect_timeout):
                async with anyio.create_task_group() as tg:

                    async def wait(event: anyio.Event) -> None:
                        await event.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(wait, ready)
                    tg.start_soon(wait, self._done)
        except TimeoutError:
            await self._abandon()
            self._error = ConnectorError(
                ErrorKind.TIMEOUT,
                f"no answer from the server at {_display_url(self.endpoint.url)} "
                f"within {self.endpoint.connect_timeout:g} s",
            )
            raise self._error from None
        except BaseException:
            await self._abandon()
            raise
        finally:
            self._opening = False
        if self._client is None:  # the worker ended before it was ready
            self._closed = True
            failure = self._failure or RuntimeError("the session ended while connecting")
            self._error = _classify(failure, self.endpoint, self._box.status, deadline=self.endpoint.connect_timeout)
            raise self._error

    async def _run(self, ready: anyio.Event) -> None:
        assert self._stop is not None and self._done is not None
        try:
            async with _connect(
                self.endpoint,
                self._box,
                read_timeout=self.endpoint.connect_timeout,
                http_timeout=self.endpoint.call_timeout,
            ) as client:
                info = client.server_info
                if info is not None:
                    self.server_name = _sanitize(info.name, _MAX_TITLE_CHARS, single_line=True) or None
                    self.server_version = _sanitize(info.version or "", _MAX_TITLE_CHARS, single_line=True) or None
                self.protocol_version = client.protocol_version
                self._client = client
                ready.set()
                await self._stop.wait()
        except Exception as exc:  # the transport died (or never came up): remember why
            self._failure = exc
        finally:
            self._client = None
            self._closed = True
            self._done.set()

    async def _abandon(self) -> None:
        """Stop the worker without waiting on a polite shutdown (used when open() fails)."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_GRACE):
                await asyncio.wait({task})

    def _closed_error(self) -> ConnectorError:
        if self._error is None and self._failure is not None:
            self._error = _classify(
                self._failure,
                self.endpoint,
                self._box.status,
                deadline=self.endpoint.call_timeout,
                phase="call",
                in_session=True,
            )
        kind = self._error.kind if self._error is not None else ErrorKind.UNKNOWN
        return ConnectorError(
            kind,
            f"the session to {_display_url(self.endpoint.url)} is closed — open a new one",
            http_status=self._error.http_status if self._error is not None else None,
        )

    def _require_client(self) -> Client:
        client = self._client
        if self._closed or client is None:
            if self._task is None and not self._closed:
                raise RuntimeError("call McpSession.open() first")
            raise self._closed_error()
        return client

    async def _failed(self, exc: BaseException, call_box: _StatusBox, *, deadline: float, phase: str) -> ConnectorError:
        """Classify a failed request; unless the server merely answered with an MCP error, the
        session is broken: mark it closed and let the worker tear the transport down."""
        leaf = _pick_leaf(exc)
        closed = isinstance(leaf, MCPError) and leaf.error.code == types.CONNECTION_CLOSED
        if closed and call_box.status is None and self._done is not None:
            # The transport died under us (a POST failed, e.g. connection refused) and woke us
            # first; give the worker a moment to record why.
            with anyio.move_on_after(0.25):
                await self._done.wait()
            if self._failure is not None:
                exc = self._failure
        err = _classify(exc, self.endpoint, call_box.status, deadline=deadline, phase=phase, in_session=True)
        server_answered = err.kind == ErrorKind.PROTOCOL and call_box.status is None
        if not server_answered or self._done is None or self._done.is_set():
            self._error = err
            self._closed = True
            if self._stop is not None:
                self._stop.set()
        return err

    async def list_tools(self, *, max_pages: int = 50, max_tools: int = 5000) -> list[ToolInfo]:
        """Every tool, fetched fresh, under ``connect_timeout``; raises ``ConnectorError``."""
        client = self._require_client()
        call_box = _StatusBox()
        token = _call_status.set(call_box)
        try:
            with anyio.fail_after(self.endpoint.connect_timeout):
                return await _collect_tools(client, max_pages=max_pages, max_tools=max_tools)
        except ConnectorError:
            raise
        except Exception as exc:
            raise await self._failed(
                exc, call_box, deadline=self.endpoint.connect_timeout, phase="connect"
            ) from None
        finally:
            _call_status.reset(token)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> ToolCallResult:
        """One tools/call under ``call_timeout``. A tool-level error is ``is_error=True``; transport
        failures raise ``ConnectorError`` (and close the session)."""
        client = self._require_client()
        call_box = _StatusBox()
        token = _call_status.set(call_box)
        start = time.perf_counter()
        try:
            with anyio.fail_after(self.endpoint.call_timeout):
                result = await client.call_tool(name, arguments, read_timeout_seconds=self.endpoint.call_timeout)
        except Exception as exc:
            raise await self._failed(exc, call_box, deadline=self.endpoint.call_timeout, phase="call") from None
        finally:
            _call_status.reset(token)
        return _call_result(result, _ms(start))

    async def aclose(self) -> None:
        """Close the session; idempotent, never raises."""
        self._closed = True
        task = self._task
        if task is None or task.done():
            return
        try:
            if self._stop is not None:
                self._stop.set()
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(_CLOSE_GRACE):
                    await asyncio.wait({task})
                if not task.done():
                    task.cancel()
                    with anyio.move_on_after(_CLOSE_GRACE):
                        await asyncio.wait({task})
        except Exception:  # never raise from close
            pass

