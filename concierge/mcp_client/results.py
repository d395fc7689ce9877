"""What the connector hands back: tool listings, probe outcomes, call results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types

from concierge.mcp_client._sanitize import sanitize
from concierge.mcp_client.kinds import ErrorKind

__all__ = [
    "DEFAULT_INPUT_SCHEMA",
    "MAX_DESCRIPTION_CHARS",
    "ProbeResult",
    "ToolCallResult",
    "ToolInfo",
    "call_result",
    "tool_info",
]

MAX_DESCRIPTION_CHARS = 2000
"""Tool descriptions are cut to this many characters (hostile servers send megabytes)."""
MAX_TITLE_CHARS = 200
MAX_INSTRUCTIONS_CHARS = 4000
"""A server's instructions are cut to this many characters (control characters removed)."""

DEFAULT_INPUT_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}
"""The input schema a tool gets when its server sent none (or one that is not an object schema)."""


@dataclass(frozen=True)
class ToolInfo:
    """One tool as a server lists it, sanitized for showing to people and models."""

    name: str
    description: str
    """Control characters and escape sequences removed, capped at ``MAX_DESCRIPTION_CHARS``."""
    input_schema: dict[str, Any]
    """The server's camelCase ``inputSchema``; ``DEFAULT_INPUT_SCHEMA`` if absent or invalid."""
    title: str | None = None
    definition: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The whole definition as the server sent it (camelCase: ``title``, ``annotations``,
    ``outputSchema``, ``icons``, ``execution``, ``_meta``), for faithful pass-through."""

    @property
    def task_support(self) -> str:
        """``forbidden`` (the default), ``optional`` or ``required`` (2025-11-25 tasks)."""
        execution = self.definition.get("execution") or {}
        return str(execution.get("taskSupport") or "forbidden")


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
    raw: types.CallToolResult | None = field(default=None, compare=False, repr=False)
    """The server's result as received (every field, ``_meta`` included), for pass-through."""


def tool_info(tool: types.Tool) -> ToolInfo:
    dumped = tool.model_dump(by_alias=True, exclude_none=True, mode="json")
    schema = dumped.get("inputSchema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        schema = dict(DEFAULT_INPUT_SCHEMA)
    title = tool.title or (tool.annotations.title if tool.annotations is not None else None)
    return ToolInfo(
        name=tool.name,
        description=sanitize(tool.description or "", MAX_DESCRIPTION_CHARS),
        input_schema=schema,
        title=(sanitize(title, MAX_TITLE_CHARS, single_line=True) or None) if title else None,
        definition=dumped,
    )


def call_result(result: types.CallToolResult, latency_ms: float) -> ToolCallResult:
    content = [block.model_dump(by_alias=True, exclude_none=True, mode="json") for block in result.content]
    texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
    structured = result.structured_content
    return ToolCallResult(
        is_error=bool(result.is_error),
        content=content,
        structured_content=dict(structured) if isinstance(structured, dict) else None,
        text="\n".join(texts),
        latency_ms=latency_ms,
        raw=result,
    )
