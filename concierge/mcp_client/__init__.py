"""Talking MCP to users' servers: probe, list tools, call tools, pooled sessions."""

from concierge.mcp_client.connector import (
    DEFAULT_INPUT_SCHEMA,
    Endpoint,
    ErrorKind,
    MAX_DESCRIPTION_CHARS,
    McpSession,
    ProbeResult,
    ToolCallResult,
    ToolInfo,
    call_tool,
    list_tools,
    probe,
)

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
