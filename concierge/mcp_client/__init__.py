"""Talking MCP to users' servers: probe, list tools, call tools, pooled sessions.

    kinds        ErrorKind (no SDK import: ``concierge.errors`` uses it)
    endpoint     Endpoint, the size cap default
    results      ToolInfo, ProbeResult, ToolCallResult
    _errors      one context manager mapping every failure to a ConnectorError
    _transport   opening an SDK Client (size cap, status hook, SSE fallback)
    session      McpSession (long-lived, many tasks)
    connector    probe / list_tools / call_tool (one-shot)
    pool         SessionPool (one session per key, single-flight opening, bounded concurrency)
    stdio        StdioCommand, ProcessLog (a local program: its command, pid, exits, stderr);
                 _stdio runs it
    oauth        OAuth (an Endpoint's auth: the SDK's OAuth client), over oauth_store (OAuthStore,
                 MemoryOAuthStore) and _oauth_provider; signin (begin_sign_in, SignIn) and
                 oauth_callback (CallbackInbox, LoopbackCallback) sign a person in

Names are loaded on first use, so importing this package does not import the mcp SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.mcp_client.connector import call_tool, list_tools, probe
    from concierge.mcp_client.endpoint import DEFAULT_MAX_MESSAGE_BYTES, Endpoint
    from concierge.mcp_client.kinds import ErrorKind
    from concierge.mcp_client.pool import SessionPool
    from concierge.mcp_client.results import (
        DEFAULT_INPUT_SCHEMA,
        MAX_DESCRIPTION_CHARS,
        ProbeResult,
        ToolCallResult,
        ToolInfo,
    )
    from concierge.mcp_client.session import McpSession

__all__ = [
    "DEFAULT_INPUT_SCHEMA",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Endpoint",
    "ErrorKind",
    "MAX_DESCRIPTION_CHARS",
    "McpSession",
    "ProbeResult",
    "SessionPool",
    "ToolCallResult",
    "ToolInfo",
    "call_tool",
    "list_tools",
    "probe",
]

_HOME = {
    "DEFAULT_INPUT_SCHEMA": "results", "DEFAULT_MAX_MESSAGE_BYTES": "endpoint", "Endpoint": "endpoint",
    "ErrorKind": "kinds", "MAX_DESCRIPTION_CHARS": "results", "McpSession": "session",
    "ProbeResult": "results", "SessionPool": "pool", "ToolCallResult": "results", "ToolInfo": "results",
    "call_tool": "connector", "list_tools": "connector", "probe": "connector",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOME, __all__)
