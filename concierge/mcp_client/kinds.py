"""Why talking to an MCP server failed: one enum, importable without loading the mcp SDK."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorKind"]


class ErrorKind(StrEnum):
    """Why talking to an MCP server failed."""

    UNAUTHORIZED = "unauthorized"  # HTTP 401
    FORBIDDEN = "forbidden"  # HTTP 403
    NOT_FOUND = "not_found"  # HTTP 404
    CONNECTION_REFUSED = "connection_refused"  # nothing listens, or the connection broke
    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    NOT_MCP = "not_mcp"  # answered, but not an MCP endpoint (HTML page, non-JSON-RPC JSON, 405...)
    PROTOCOL = "protocol"  # MCP-level error / malformed answer
    TOO_MANY_TOOLS = "too_many_tools"  # page cap or tool cap exceeded
    TOO_LARGE = "too_large"  # one message over the size cap (stopped reading there)
    SERVER_ERROR = "server_error"  # HTTP 5xx
    INVALID_URL = "invalid_url"
    BLOCKED = "blocked"  # the URL policy refused the address (never connected)
    UNREACHABLE = "unreachable"  # hosted mode: refused, closed, not MCP, TLS... told apart for nobody
    UNKNOWN = "unknown"
