"""An agent's resolved catalog, served as an MCP server over streamable HTTP.

``tools/list`` answers the agent's live catalog (resolved at each request; the catalog's
per-source cache keeps that cheap) and ``tools/call`` goes through the gateway, so Claude
Code, Cursor or any MCP client sees and calls exactly the tools the agent has. Policy and
transport failures (not allowed, rate cap, server down) come back as tool errors the client
can show, never as crashes.

The tools come from a `ToolProvider`: a `LocalBackend`, a `RemoteBackend` or a `Gateway`
all qualify. `build_gateway_app` returns a Starlette app serving ``/mcp``; to mount it inside
another Starlette app, run ``app.state.session_manager.run()`` in the parent's lifespan
(a mounted app's own lifespan does not run).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol

import mcp_types as types
from mcp.server.lowlevel import Server
from pydantic import ValidationError
from starlette.applications import Starlette

from concierge.errors import ConciergeError
from concierge.registry.catalog_models import CatalogResult, ToolCallOutcome

__all__ = ["GATEWAY_SERVER_NAME", "ToolProvider", "build_gateway_app", "build_gateway_server", "run_gateway"]

log = logging.getLogger("concierge.gateway_server")

GATEWAY_SERVER_NAME = "concierge-gateway"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ToolProvider(Protocol):
    """What the MCP face needs: the agent's catalog, and a way to call its tools."""

    async def agent_tools(self, slug: str | None = None, *, sandbox: str | None = None,
                          app: str | None = None) -> CatalogResult: ...

    async def call_tool(self, name: str, arguments: dict[str, Any] | None, *, agent: str,
                        sandbox: str | None = None) -> ToolCallOutcome: ...


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("concierge")
    except PackageNotFoundError:  # pragma: no cover - a source checkout that is not installed
        return "0"


def _error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _call_result(outcome: ToolCallOutcome) -> types.CallToolResult:
    try:
        return types.CallToolResult.model_validate({
            "content": outcome.content, "structuredContent": outcome.structured_content,
            "isError": outcome.is_error})
    except ValidationError:  # content blocks we cannot re-type: keep the text
        return types.CallToolResult(content=[types.TextContent(type="text", text=outcome.text)],
                                    is_error=outcome.is_error)


def build_gateway_server(provider: ToolProvider, *, agent: str, sandbox: str | None = None) -> Server[Any]:
    """A low-level MCP ``Server`` whose tools are ``agent``'s catalog."""

    async def on_list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        catalog = await provider.agent_tools(agent, sandbox=sandbox)
        tools = [types.Tool(name=t.name, description=t.description, input_schema=t.input_schema)
                 for t in catalog.tools]
        return types.ListToolsResult(tools=tools, ttl_ms=0)  # live: clients must not cache it

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            outcome = await provider.call_tool(params.name, dict(params.arguments or {}),
                                               agent=agent, sandbox=sandbox)
        except ConciergeError as exc:
            return _error_result(f"{exc.error}: {exc.detail}")
        return _call_result(outcome)

    return Server(GATEWAY_SERVER_NAME, version=_version(),
                  instructions=f"The tools of agent {agent}, served by concierge.",
                  on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def build_gateway_app(provider: ToolProvider, *, agent: str, sandbox: str | None = None,
                      host: str = "127.0.0.1", path: str = "/mcp") -> Starlette:
    """The agent's catalog over streamable HTTP at ``path``.

    ``host`` is the bind address: on loopback the SDK's Host/Origin check (DNS-rebinding
    protection) is on. ``app.state.session_manager`` is exposed for mounting.
    """
    server = build_gateway_server(provider, agent=agent, sandbox=sandbox)
    app = server.streamable_http_app(streamable_http_path=path, host=host)
    app.state.session_manager = server.session_manager
    return app


async def run_gateway(provider: ToolProvider, *, agent: str, sandbox: str | None = None,
                      host: str = "127.0.0.1", port: int = 8766) -> None:
    """Check the agent, then serve its catalog with uvicorn until interrupted."""
    import uvicorn

    catalog = await provider.agent_tools(agent, sandbox=sandbox)  # fails fast on a bad slug
    url_host = f"[{host}]" if ":" in host else host
    print(f"Gateway for agent {agent}: {catalog.count} tools at http://{url_host}:{port}/mcp",
          file=sys.stderr, flush=True)
    for skipped in catalog.trace.sources_skipped:
        print(f"  skipped {skipped.name} ({skipped.source_id}): {skipped.reason}", file=sys.stderr)
    if host not in LOOPBACK_HOSTS:
        print("  warning: not bound to loopback; anyone who can reach this port can call these tools",
              file=sys.stderr)
    config = uvicorn.Config(build_gateway_app(provider, agent=agent, sandbox=sandbox, host=host),
                            host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)
    await uvicorn.Server(config).serve()
