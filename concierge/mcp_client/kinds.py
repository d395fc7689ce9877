"""Why talking to an MCP server failed: one enum, importable without loading the mcp SDK."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorKind"]


class ErrorKind(StrEnum):
    """Why talking to an MCP server failed."""

    UNAUTHORIZED = "unauthorized"  # HTTP 401
    FORBIDDEN = "forbidden"  # HTTP 403
    AUTH_REQUIRED = "auth_required"  # OAuth: nobody signed in yet, or the refresh token was refused
    NOT_FOUND = "not_found"  # HTTP 404
    CONNECTION_REFUSED = "connection_refused"  # nothing listens, or the connection broke
    SPAWN_FAILED = "spawn_failed"  # stdio: the program could not be started (not found, not executable)
    PROCESS_EXITED = "process_exited"  # stdio: the program exited (or closed its stdout)
    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    NOT_MCP = "not_mcp"  # answered, but not an MCP endpoint (HTML page, non-JSON-RPC JSON, 405...)
    PROTOCOL = "protocol"  # MCP-level error / malformed answer
    TOO_MANY_TOOLS = "too_many_tools"  # page cap or tool cap exceeded
    TOO_LARGE = "too_large"  # one message over the size cap (stopped reading there)
    SERVER_ERROR = "server_error"  # HTTP 5xx
    INVALID_URL = "invalid_url"
    UNKNOWN = "unknown"
