"""One-shot operations: probe a server, list its tools, call one tool.

Each opens a connection, does its work under a deadline (``Endpoint.connect_timeout`` for
connecting and listing, ``Endpoint.call_timeout`` for one tools/call) and closes it. Failures
are ``ConnectorError(kind, detail)`` (see ``_errors``); header values (secrets) never appear in
reprs, messages or logs. For many calls to one server, pool an `McpSession`.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import mcp_types as types

from concierge.errors import ConnectorError
from concierge.mcp_client._errors import Observed, map_errors
from concierge.mcp_client._sanitize import sanitize
from concierge.mcp_client._transport import open_client
from concierge.mcp_client.endpoint import Endpoint
from concierge.mcp_client.results import MAX_TITLE_CHARS, ProbeResult, ToolCallResult, ToolInfo, call_result
from concierge.mcp_client.session import Deadline, collect_tools

__all__ = ["call_tool", "list_tools", "probe"]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


async def probe(endpoint: Endpoint, *, max_pages: int = 50, max_tools: int = 5000) -> ProbeResult:
    """Connect, negotiate and list every tool under ``endpoint.connect_timeout``.

    Never raises (except cancellation): failures come back as ``ok=False`` with a kind and a sentence.
    """
    start = time.perf_counter()
    box = Observed()
    name = version = proto = None
    tools: list[ToolInfo] | None = None
    latency = 0.0
    try:
        with map_errors(endpoint, box, phase="connect", deadline=endpoint.connect_timeout):
            with anyio.fail_after(endpoint.connect_timeout):
                async with open_client(endpoint, box, read_timeout=endpoint.connect_timeout) as (client, _):
                    info = client.server_info
                    if info is not None:
                        name = sanitize(info.name, MAX_TITLE_CHARS, single_line=True) or None
                        version = sanitize(info.version or "", MAX_TITLE_CHARS, single_line=True) or None
                    proto = client.protocol_version
                    tools = await collect_tools(client, max_pages=max_pages, max_tools=max_tools)
                    latency = _ms(start)
    except ConnectorError as err:
        if tools is None:  # (if the listing is in hand, only closing the connection failed)
            return ProbeResult(ok=False, tools=(), tool_count=0, server_name=name, server_version=version,
                               protocol_version=proto, latency_ms=_ms(start), error_kind=err.kind,
                               error=str(err), http_status=err.http_status)
    assert tools is not None
    return ProbeResult(ok=True, tools=tuple(tools), tool_count=len(tools), server_name=name,
                       server_version=version, protocol_version=proto, latency_ms=latency, error_kind=None,
                       error=None, http_status=None)


async def list_tools(endpoint: Endpoint, *, max_pages: int = 50, max_tools: int = 5000) -> list[ToolInfo]:
    """Every tool the server lists (all pages) under ``connect_timeout``; raises ``ConnectorError``."""
    box = Observed()
    tools: list[ToolInfo] | None = None
    try:
        with map_errors(endpoint, box, phase="connect", deadline=endpoint.connect_timeout):
            with anyio.fail_after(endpoint.connect_timeout):
                async with open_client(endpoint, box, read_timeout=endpoint.connect_timeout) as (client, _):
                    tools = await collect_tools(client, max_pages=max_pages, max_tools=max_tools)
    except ConnectorError:
        if tools is None:  # else only closing failed
            raise
    assert tools is not None
    return tools


async def call_tool(endpoint: Endpoint, name: str, arguments: dict[str, Any] | None = None) -> ToolCallResult:
    """Open a connection, call one tool, close. A tool-level error is ``is_error=True``, not an
    exception; transport failures raise ``ConnectorError`` (connect under ``connect_timeout``,
    the call under ``call_timeout``)."""
    box = Observed()
    result: types.CallToolResult | None = None
    latency = 0.0
    phase, budget = "connect", endpoint.connect_timeout
    try:
        try:
            with Deadline(endpoint.connect_timeout) as deadline:
                async with open_client(endpoint, box, read_timeout=endpoint.connect_timeout,
                                       http_timeout=endpoint.call_timeout) as (client, _):
                    phase, budget = "call", endpoint.call_timeout
                    deadline.reset(endpoint.call_timeout)
                    start = time.perf_counter()
                    result = await client.call_tool(name, arguments, read_timeout_seconds=endpoint.call_timeout)
                    latency = _ms(start)
        except Exception as exc:
            with map_errors(endpoint, box, phase=phase, deadline=budget):
                raise exc
    except ConnectorError:
        if result is None:  # else only closing failed; the answer stands
            raise
    assert result is not None
    return call_result(result, latency)
