"""Where an MCP server lives and how to reach it; secrets never shown."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from concierge import log_scrub
from concierge.mcp_client.stdio import ProcessLog, StdioCommand

if TYPE_CHECKING:
    import httpx2

    from concierge.mcp_client.url_policy import UrlPolicy

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Endpoint", "display_url", "host_of", "redact", "same_url", "tls_context"]

log_scrub.install()  # httpx2 and the mcp SDK log the URLs dialled: a ?api_key=… there is shown as ••••

DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
"""The default cap on one message from a server (a tool result, a listing page): about
250k tokens, more than any model context takes. Enforced while reading."""

Transport = Literal["auto", "streamable-http", "sse", "stdio"]


@functools.cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """One SSL context per verify mode for the whole process: building one loads the CA
    bundle (~20 ms, blocking the event loop), which dominated cold catalog resolution."""
    import httpx2  # here: the registry imports this module for `Endpoint`, even in `source list`

    return httpx2.create_ssl_context(verify=verify)


@dataclass(frozen=True)
class Endpoint:
    """Where an MCP server lives and how to reach it: a URL (streamable HTTP or SSE), or a
    program to run (``transport="stdio"`` with ``command``; see `Endpoint.stdio`).

    ``headers`` and ``command.secret_env`` carry secrets; ``repr()`` shows their names only.
    """

    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Secret HTTP headers sent with every request, e.g. ``{"Authorization": "Bearer …"}``."""
    transport: Transport = "auto"
    """``auto`` tries the transport the URL suggests (SSE iff the path ends with ``/sse``,
    else streamable HTTP) and falls back to the other one on HTTP 404/405. ``stdio`` runs
    ``command`` and speaks MCP on its stdin and stdout."""
    connect_timeout: float = 10.0
    """Deadline (s) for connect + negotiation (+ the tools/list walk in a probe)."""
    call_timeout: float = 60.0
    """Deadline (s) for one tools/call."""
    verify_tls: bool = True
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """The most bytes one message from the server may have; a bigger one is refused while
    it is being read (``ErrorKind.TOO_LARGE``), not after buffering it."""
    url_policy: UrlPolicy | None = field(default=None, compare=False)
    """Which addresses may be dialled (None: the local policy, knowing nothing of Concierge's
    own addresses). Every connection goes to an address this policy checked."""
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    """Headers that are not secrets (``X-Tenant: acme``), shown as they are; the registry
    checks their names (`concierge.registry.validation.check_extra_headers`). A secret
    header of the same name wins."""
    auth: httpx2.Auth | None = field(default=None, compare=False)
    """How requests are authorized beyond static headers: an `concierge.mcp_client.oauth.OAuth`
    (tokens obtained, refreshed and stored by the SDK's OAuth client)."""
    command: StdioCommand | None = None
    """The program to run, for ``transport="stdio"``."""
    process_log: ProcessLog | None = field(default=None, compare=False)
    """Where a stdio program's pid, exits and stderr are recorded; pass the same one for
    every endpoint of a source so the log outlives restarts (None: a private one each time)."""

    def __post_init__(self) -> None:
        # A private copy: a caller mutating its dict later must not change a frozen endpoint.
        object.__setattr__(self, "headers", dict(self.headers))
        object.__setattr__(self, "extra_headers", dict(self.extra_headers))
        if (self.transport == "stdio") != (self.command is not None):
            raise ValueError("a stdio endpoint needs a command, and only a stdio endpoint takes one")
        if self.command is not None and (self.url or self.headers or self.extra_headers or self.auth):
            raise ValueError("a stdio endpoint has no url, headers or auth (use the command's env)")

    @classmethod
    def stdio(cls, command: str, args: tuple[str, ...] | list[str] = (), *, env: Mapping[str, str] | None = None,
              secret_env: Mapping[str, str] | None = None, cwd: str | None = None, **options: Any) -> Endpoint:
        """An endpoint that runs ``command args…`` (options as for the constructor)."""
        return cls(transport="stdio", command=StdioCommand(command, tuple(args), env=env or {},
                                                           secret_env=secret_env or {}, cwd=cwd), **options)

    def __repr__(self) -> str:
        masked = {name: "***" for name in self.headers}
        where = (f"command={self.command!r}" if self.command is not None else
                 f"url={display_url(self.url)!r}, headers={masked!r}")
        extra = f", extra_headers={dict(self.extra_headers)!r}" if self.extra_headers else ""
        auth = f", auth={self.auth!r}" if self.auth is not None else ""
        return (f"Endpoint({where}{extra}{auth}, transport={self.transport!r}, "
                f"connect_timeout={self.connect_timeout!r}, call_timeout={self.call_timeout!r}, "
                f"verify_tls={self.verify_tls!r})")

    __str__ = __repr__

    @property
    def where(self) -> str:
        """The server in words for messages: the URL without secrets, or the command line."""
        if self.command is not None:
            return f"the program `{self.command.display}`"
        return display_url(self.url)

    @property
    def secrets(self) -> Mapping[str, str]:
        """Every secret value this endpoint holds, by name (redacted from any message)."""
        out = dict(self.headers)
        if self.command is not None:
            out |= {f"env:{k}": v for k, v in self.command.secret_env.items()}
        hidden = getattr(self.auth, "secret_values", None)
        if callable(hidden):
            out |= {f"auth:{i}": v for i, v in enumerate(hidden())}
        return out

    @property
    def request_headers(self) -> dict[str, str]:
        """The headers sent with every request: the extra ones, then the secret ones."""
        merged = {name.lower(): (name, value) for name, value in self.extra_headers.items()}
        merged |= {name.lower(): (name, value) for name, value in self.headers.items()}
        return dict(merged.values())

    @property
    def resolved_transport(self) -> Literal["streamable-http", "sse", "stdio"]:
        """The transport tried first for this URL."""
        if self.transport != "auto":
            return self.transport
        path = urlsplit(self.url).path.rstrip("/")
        return "sse" if path.endswith("/sse") else "streamable-http"

    @property
    def transports(self) -> tuple[Literal["streamable-http", "sse", "stdio"], ...]:
        """The transports to try, in order (``auto``: the guess, then the other one)."""
        first = self.resolved_transport
        if self.transport != "auto":
            return (first,)
        return (first, "sse" if first == "streamable-http" else "streamable-http")


def display_url(url: str) -> str:
    """The URL without userinfo, query or fragment (they may carry secrets)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def same_url(a: str, b: str) -> bool:
    """Two URLs of the same endpoint (scheme and host case, default ports, trailing slash)."""
    def key(u: str) -> tuple[str, str, int | None, str]:
        if not u.lower().startswith(("http://", "https://")):
            u = "http://" + u
        parts = urlsplit(u.strip())
        host = (parts.hostname or "").lower()
        host = "127.0.0.1" if host == "localhost" else host
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            port = None
        return parts.scheme.lower(), host, port, parts.path.rstrip("/")
    return key(a) == key(b)


def host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


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


def redact(text: str, headers: Mapping[str, str]) -> str:
    """``text`` with every header value (credential) replaced by ``***``."""
    for secret in _secret_values(headers):
        text = text.replace(secret, "***")
    return text
