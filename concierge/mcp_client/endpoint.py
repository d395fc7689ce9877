"""Where an MCP server lives and how to reach it; secrets never shown."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit


if TYPE_CHECKING:
    from concierge.mcp_client.url_policy import UrlPolicy

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Endpoint", "display_url", "host_of", "redact", "tls_context"]

DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
"""The default cap on one message from a server (a tool result, a listing page): about
250k tokens, more than any model context takes. Enforced while reading."""

Transport = Literal["auto", "streamable-http", "sse"]


@functools.cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """One SSL context per verify mode for the whole process: building one loads the CA
    bundle (~20 ms, blocking the event loop), which dominated cold catalog resolution."""
    import httpx2  # here: the registry imports this module for `Endpoint`, even in `source list`

    return httpx2.create_ssl_context(verify=verify)


@dataclass(frozen=True)
class Endpoint:
    """Where an MCP server lives and how to reach it.

    ``headers`` carry secrets (auth tokens); ``repr()`` shows their names only.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra HTTP headers sent with every request, e.g. ``{"Authorization": "Bearer …"}``."""
    transport: Transport = "auto"
    """``auto`` tries the transport the URL suggests (SSE iff the path ends with ``/sse``,
    else streamable HTTP) and falls back to the other one on HTTP 404/405."""
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

    def __post_init__(self) -> None:
        # A private copy: a caller mutating its dict later must not change a frozen endpoint.
        object.__setattr__(self, "headers", dict(self.headers))

    def __repr__(self) -> str:
        masked = {name: "***" for name in self.headers}
        return (
            f"Endpoint(url={display_url(self.url)!r}, headers={masked!r}, transport={self.transport!r}, "
            f"connect_timeout={self.connect_timeout!r}, call_timeout={self.call_timeout!r}, "
            f"verify_tls={self.verify_tls!r})"
        )

    __str__ = __repr__

    @property
    def resolved_transport(self) -> Literal["streamable-http", "sse"]:
        """The transport tried first for this URL."""
        if self.transport != "auto":
            return self.transport
        path = urlsplit(self.url).path.rstrip("/")
        return "sse" if path.endswith("/sse") else "streamable-http"

    @property
    def transports(self) -> tuple[Literal["streamable-http", "sse"], ...]:
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
