"""Translating SDK, httpx2 and socket failures into one ``ConnectorError`` each.

In the way of httpx's ``map_httpcore_exceptions``: one context manager, ``map_errors``, wraps
every network step, and two tables decide the kind —

    _STATUS_KINDS      HTTP status the server answered      → ErrorKind   (seen by a response hook,
                                                                            since the SDK drops it)
    _EXCEPTION_KINDS   exception type, found on the leaf of  → ErrorKind   (most specific cause wins:
                       the exception group or its causes                    gaierror before ConnectError)

then a third small table maps the JSON-RPC error codes the SDK synthesizes. Each kind has one
sentence (``_SENTENCES``), so a failure reads as ``"kind: what happened — what to try"``, once.
Only where the SDK gives no type (a 200 answer with the wrong content type) does a response
hook record what it saw.
"""

from __future__ import annotations

import contextvars
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
import httpx2
import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from concierge.errors import ConnectorError
from concierge.mcp_client._pinned import Blocked
from concierge.mcp_client._sanitize import one_line
from concierge.mcp_client.endpoint import Endpoint, display_url, host_of, redact
from concierge.mcp_client.kinds import ErrorKind
from concierge.mcp_client.stdio import ProcessExited, SpawnFailed, StdioFailure

__all__ = ["MessageTooLarge", "Observed", "current_observed", "hosted_unreachable", "map_errors", "pick_leaf",
           "translate", "unreachable_sentence"]


class MessageTooLarge(httpx2.StreamError):
    """Raised by the size-capped response stream; an ``httpx2.StreamError`` so the SDK answers
    the one request that read it with an error and keeps the session."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"message over {limit} bytes")
        self.limit = limit


class Observed:
    """What the response hook, the size cap, the OAuth client and the stdio transport saw
    while one request (or a session) ran.

    ``cause`` is a failure below the SDK that explains what it reports only as a closed
    connection (a program that died, a sign-in that is needed); ``pid`` is the stdio
    program running for this connection."""

    __slots__ = ("cause", "content_type", "pid", "status", "too_large")

    def __init__(self) -> None:
        self.status: int | None = None
        self.content_type: str | None = None
        self.too_large: int | None = None
        self.cause: BaseException | None = None
        self.pid: int | None = None

    def clear(self) -> None:
        self.status = self.content_type = self.too_large = self.cause = None


current_observed: contextvars.ContextVar[Observed | None] = contextvars.ContextVar(
    "concierge_mcp_observed", default=None)
"""Per-request box: the SDK runs each POST in a copy of the sending task's context."""


# -- the tables ---------------------------------------------------------------------------------

_STATUS_KINDS: dict[int, ErrorKind] = {
    401: ErrorKind.UNAUTHORIZED,
    403: ErrorKind.FORBIDDEN,
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.NOT_MCP,
    406: ErrorKind.NOT_MCP,
    415: ErrorKind.NOT_MCP,
    413: ErrorKind.TOO_LARGE,
}
"""HTTP status → kind; any other 5xx is SERVER_ERROR, any other 4xx PROTOCOL."""

_EXCEPTION_KINDS: dict[type[BaseException], ErrorKind] = {
    Blocked: ErrorKind.BLOCKED,
    MessageTooLarge: ErrorKind.TOO_LARGE,
    SpawnFailed: ErrorKind.SPAWN_FAILED,
    ProcessExited: ErrorKind.PROCESS_EXITED,
    socket.gaierror: ErrorKind.DNS,
    ssl.SSLError: ErrorKind.TLS,
    ssl.CertificateError: ErrorKind.TLS,
    ConnectionRefusedError: ErrorKind.CONNECTION_REFUSED,
    TimeoutError: ErrorKind.TIMEOUT,
    httpx2.TimeoutException: ErrorKind.TIMEOUT,
    httpx2.ConnectError: ErrorKind.CONNECTION_REFUSED,
    httpx2.UnsupportedProtocol: ErrorKind.INVALID_URL,
    httpx2.InvalidURL: ErrorKind.INVALID_URL,
    httpx2.SSEError: ErrorKind.NOT_MCP,
    httpx2.RemoteProtocolError: ErrorKind.CONNECTION_REFUSED,
    httpx2.NetworkError: ErrorKind.CONNECTION_REFUSED,
    ValidationError: ErrorKind.PROTOCOL,
    OSError: ErrorKind.CONNECTION_REFUSED,
}
"""Exception type → kind, looked up along the type's MRO, on the deepest cause first."""

_MCP_CODE_KINDS: dict[int, ErrorKind] = {
    types.REQUEST_TIMEOUT: ErrorKind.TIMEOUT,
    types.PARSE_ERROR: ErrorKind.NOT_MCP,
    types.CONNECTION_CLOSED: ErrorKind.CONNECTION_REFUSED,
}
"""JSON-RPC codes the SDK synthesizes for transport trouble; any other code is the server's answer."""

_TOLD_APART_BY_SCANNERS = frozenset({
    ErrorKind.CONNECTION_REFUSED, ErrorKind.NOT_MCP, ErrorKind.NOT_FOUND, ErrorKind.TLS, ErrorKind.PROTOCOL,
    ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT, ErrorKind.TOO_LARGE, ErrorKind.UNKNOWN})
"""Connect failures that tell a closed port from an open one that is not MCP (or not TLS, or
slow): a hosted Concierge reports them all as one ``UNREACHABLE`` sentence, so that a
source's health check cannot be used to scan ports. (401/403 stay: the person needs them.)"""

_SDK_CLOSED_MESSAGES = ("Connection closed", "SSE stream ")
"""How the SDK words the -32000 errors it makes up itself (mcp 2.3: the dispatcher's
"Connection closed", the streamable-HTTP client's "SSE stream failed: …", "SSE stream ended …")."""
_STAND_IN_CODES = frozenset({types.INTERNAL_ERROR, types.METHOD_NOT_FOUND, types.INVALID_REQUEST,
                             types.CONNECTION_CLOSED, types.PARSE_ERROR})
"""Codes the SDK puts in place of an HTTP error status (the status, when seen, says more)."""

_NOT_DELIVERED: tuple[type[BaseException], ...] = (
    httpx2.ConnectError, httpx2.ConnectTimeout, socket.gaierror, ConnectionRefusedError, Blocked, SpawnFailed)
"""Failures that happen before a request's first byte is written: it never reached the server."""


@dataclass(frozen=True)
class _Facts:
    where: str
    host: str
    phase: str
    deadline: float
    status: int | None
    limit: int | None
    tls_reason: str | None
    got: str | None
    message: str
    code: int | None
    in_session: bool
    refused: bool
    blocked: str | None


def _status_sentence(f: _Facts) -> str:
    status = f.status
    if status == 404 and f.in_session:
        return f"{f.where} no longer knows this session (HTTP 404; was the server restarted?) — reconnect"
    if status == 421:
        return f"{f.where} rejected the Host header (HTTP 421) — the server must allow this host name"
    if status is not None and status >= 500:
        return f"{f.where} answered HTTP {status} — the server failed; check its logs"
    return f"{f.where} answered HTTP {status} — the server rejected the MCP request"


def _timeout(f: _Facts) -> str:
    if f.where.startswith("the program "):  # stdio
        what = "to the tool call from" if f.phase == "call" else "from"
        return f"no answer {what} {f.where} within {f.deadline:g} s"
    what = "to the tool call" if f.phase == "call" else "from the server"
    return f"no answer {what} at {f.where} within {f.deadline:g} s"


def _tls(f: _Facts) -> str:
    why = (f.tls_reason or "handshake failed").lower().replace("_", " ")
    hint = ("the server may not speak https on this port" if "wrong version" in why else
            "check the certificate, or turn off TLS verification for a self-signed server")
    return f"TLS with {f.host} failed ({why}) — {hint}"


def _refused(f: _Facts) -> str:
    if f.refused:
        return f"nothing is listening at {f.where} — is the server running?"
    return f"the connection to {f.where} was lost during the request ({f.message or 'no detail'})"


_SENTENCES: dict[ErrorKind, Callable[[_Facts], str]] = {
    ErrorKind.UNAUTHORIZED: lambda f: f"{f.where} answered HTTP 401 — check the token or auth header",
    ErrorKind.FORBIDDEN: lambda f: f"{f.where} answered HTTP 403 — the credentials were refused for this resource",
    ErrorKind.NOT_FOUND: lambda f: (_status_sentence(f) if f.in_session else
                                    f"{f.where} answered HTTP 404 — check the URL path "
                                    "(the server's MCP endpoint, e.g. /mcp or /sse)"),
    ErrorKind.NOT_MCP: lambda f: (f"{f.where} answered HTTP {f.status} — it does not look like an MCP endpoint"
                                  if f.status else
                                  f"{f.where} printed {f.got.removeprefix('got ') if f.got else 'something'} and "
                                  "never answered as an MCP server — a stdio server must write only JSON-RPC "
                                  "there (its log has what it printed)" if f.where.startswith("the program ") else
                                  f"{f.where} answered, but not as an MCP server"
                                  f" ({f.got or 'not JSON-RPC'}) — check the URL"),
    ErrorKind.TOO_LARGE: lambda f: (f"{f.where} sent a message over the {f.limit:,} byte limit — "
                                    "stopped reading there" if f.limit else
                                    f"{f.where} refused the request as too large (HTTP 413)"),
    ErrorKind.SERVER_ERROR: _status_sentence,
    ErrorKind.PROTOCOL: lambda f: (_status_sentence(f) if f.status else
                                   f"the server answered with MCP error {f.code}: {f.message}" if f.code is not None
                                   else f"the server sent a malformed MCP message ({f.message})"),
    ErrorKind.DNS: lambda f: f"could not resolve the host name '{f.host}' — check the URL",
    ErrorKind.TLS: _tls,
    ErrorKind.CONNECTION_REFUSED: _refused,
    ErrorKind.TIMEOUT: _timeout,
    ErrorKind.INVALID_URL: lambda f: f"the URL '{f.where}' is not a valid http(s) URL",
    ErrorKind.BLOCKED: lambda f: f.blocked or f"the URL policy refused {f.where}",
    ErrorKind.UNREACHABLE: lambda f: unreachable_sentence(f.where),
    ErrorKind.UNKNOWN: lambda f: f.message or "no detail",
    ErrorKind.SPAWN_FAILED: lambda f: f.message,
    ErrorKind.PROCESS_EXITED: lambda f: f.message,
    ErrorKind.AUTH_REQUIRED: lambda f: f.message,
}

_STDIO_SENTENCE_CHARS = 400


# -- lookup -------------------------------------------------------------------------------------

def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for inner in exc.exceptions:
            out.extend(_leaves(inner))
        return out
    return [exc]


def pick_leaf(exc: BaseException) -> BaseException:
    """The most telling leaf of a (nested) exception group."""
    cancelled = anyio.get_cancelled_exc_class()

    def rank(e: BaseException) -> int:
        if isinstance(e, ConnectorError):
            return 0
        if isinstance(e, StdioFailure):
            return 1
        if isinstance(e, MCPError | httpx2.HTTPError | OSError | ValidationError):
            return 2
        if isinstance(e, cancelled | GeneratorExit):
            return 9
        return 5

    return min(_leaves(exc), key=rank)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, deepest (the root cause) first."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 8:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return chain[::-1]


def _by_type(exc: BaseException) -> tuple[ErrorKind, BaseException] | None:
    if isinstance(exc, StdioFailure):  # its own sentence says it all (whatever it was raised from)
        return _EXCEPTION_KINDS[type(exc)], exc
    for cause in _causes(exc):
        for klass in type(cause).__mro__:
            kind = _EXCEPTION_KINDS.get(klass)
            if kind is not None:
                return kind, cause
    return None


def _status_kind(status: int) -> ErrorKind:
    return _STATUS_KINDS.get(status) or (ErrorKind.SERVER_ERROR if status >= 500 else ErrorKind.PROTOCOL)


def _is_stand_in(leaf: BaseException) -> bool:
    """Whether ``leaf`` is how the SDK or httpx2 reports a failure it did not see the cause
    of (a closed stream or connection, a time-out after the peer went away)."""
    if isinstance(leaf, MCPError):
        return leaf.error.code in _STAND_IN_CODES or leaf.error.code in _MCP_CODE_KINDS
    return isinstance(leaf, httpx2.HTTPError | OSError | anyio.BrokenResourceError | anyio.ClosedResourceError
                      | anyio.EndOfStream | TimeoutError | StdioFailure)


def delivered(exc: BaseException) -> bool:
    """False when the request certainly never reached the server (a retry cannot run it twice)."""
    return not any(isinstance(c, _NOT_DELIVERED) for c in _causes(pick_leaf(exc)))


def unreachable_sentence(where: str) -> str:
    return (f"no MCP server answered at {where} — check that the URL is the server's MCP endpoint and "
            "that it is running and reachable from this Concierge (a hosted Concierge does not say "
            "whether the port was closed, slow or answered something other than MCP)")


def hosted_unreachable(err: ConnectorError, endpoint: Endpoint, *, phase: str) -> ConnectorError:
    """``err`` as a hosted Concierge reports it (see `_TOLD_APART_BY_SCANNERS`)."""
    policy = endpoint.url_policy
    if policy is None or not policy.hosted or phase != "connect" or err.kind not in _TOLD_APART_BY_SCANNERS:
        return err
    return ConnectorError(ErrorKind.UNREACHABLE, unreachable_sentence(display_url(endpoint.url)),
                          delivered=err.delivered)


def translate(exc: BaseException, endpoint: Endpoint, observed: Observed | None, *, phase: str,
              deadline: float, in_session: bool = False) -> ConnectorError:
    """One ``ConnectorError`` for a failure (an exception group, an SDK or httpx2 error...)."""
    seen = observed or Observed()
    leaf = pick_leaf(exc)
    if seen.cause is not None and not isinstance(leaf, ConnectorError) and _is_stand_in(leaf):
        leaf = seen.cause  # what really happened below the SDK's "connection closed"
    if isinstance(leaf, ConnectorError):
        return leaf
    status = seen.status
    code = leaf.error.code if isinstance(leaf, MCPError) else None
    message = leaf.error.message if isinstance(leaf, MCPError) else str(leaf)
    cause: BaseException = leaf
    if isinstance(leaf, httpx2.HTTPStatusError):
        status = leaf.response.status_code
    # -32000 is also the code servers use most for errors of their own; the SDK's stand-ins for
    # a lost connection say "Connection closed" or "SSE stream …", a server's own something else.
    servers_own = code == types.CONNECTION_CLOSED and not message.startswith(_SDK_CLOSED_MESSAGES)
    stand_in = (code is None or code in _STAND_IN_CODES) and not servers_own
    kind: ErrorKind | None = None
    by_status = False
    if seen.too_large is not None:
        kind = ErrorKind.TOO_LARGE
    elif status is not None and stand_in:
        kind, by_status = _status_kind(status), True
    elif seen.content_type is not None and stand_in:
        kind = ErrorKind.NOT_MCP
    elif (found := _by_type(leaf)) is not None:
        kind, cause = found
    elif code is not None:
        kind = ErrorKind.PROTOCOL if servers_own else _MCP_CODE_KINDS.get(code, ErrorKind.PROTOCOL)
    if kind is None:
        kind, message = ErrorKind.UNKNOWN, f"{type(leaf).__name__}: {message or 'no detail'}"
    if kind is ErrorKind.PROTOCOL and isinstance(cause, ValidationError):
        message = f"{cause.error_count()} errors"
    if kind is ErrorKind.CONNECTION_REFUSED and code == types.CONNECTION_CLOSED:
        message = "the server closed it"
    limit = 160
    if kind in (ErrorKind.SPAWN_FAILED, ErrorKind.PROCESS_EXITED):
        message, limit = getattr(cause, "sentence", message), _STDIO_SENTENCE_CHARS
    facts = _Facts(
        where=endpoint.where, host=host_of(endpoint.url), phase=phase, deadline=deadline,
        status=status if by_status else None,
        limit=seen.too_large or (cause.limit if isinstance(cause, MessageTooLarge) else None),
        tls_reason=getattr(cause, "reason", None) if isinstance(cause, ssl.SSLError) else None,
        got=f"got {seen.content_type}" if seen.content_type else None,
        message=one_line(redact(message, endpoint.secrets), limit),
        code=None if stand_in else code, in_session=in_session,
        refused=not delivered(exc) or phase == "connect" and code == types.CONNECTION_CLOSED and not servers_own,
        blocked=str(cause) if isinstance(cause, Blocked) else None)
    sentence = redact(_SENTENCES[kind](facts), endpoint.secrets)
    return hosted_unreachable(ConnectorError(kind, sentence, http_status=status,
                                             delivered=phase != "connect" and delivered(exc)),
                              endpoint, phase=phase)


@contextmanager
def map_errors(endpoint: Endpoint, observed: Observed | None, *, phase: str, deadline: float,
               in_session: bool = False) -> Iterator[None]:
    """Re-raise any failure inside the block as one ``ConnectorError`` (cancellation passes)."""
    try:
        yield
    except ConnectorError:
        raise
    except Exception as exc:
        raise translate(exc, endpoint, observed, phase=phase, deadline=deadline,
                        in_session=in_session) from None
