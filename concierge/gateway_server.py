"""An agent's resolved catalog, served as an MCP server (streamable HTTP, both protocol eras).

What a client sees is the upstream servers' own, passed through under namespaced names:

    tools/list                 every field of each tool definition (title, annotations, outputSchema,
                               icons, execution, _meta) under its advertised name; the description and
                               input schema sanitized and capped like the catalog's
    tools/call                 the server's result as received (every content type, structuredContent,
                               _meta); progress is forwarded while the call runs (and pushes back the
                               upstream deadline); a client's cancellation cancels the upstream request
    resources/list, templates, resources/read, prompts/list, prompts/get
                               federated with the tools' namespacing and allowlists
    instructions               the sources' own, each under its namespace
    notifications/*/list_changed
                               sent to connected clients when a source of the sandbox is added,
                               changed, paused, resumed or revoked (in this process at once, in
                               another process, e.g. the CLI, within ``WATCH_INTERVAL``), or an
                               upstream announces a change (legacy sessions: on their GET stream;
                               2026-07-28: subscriptions/listen)

Policy and transport failures (not allowed, rate cap, server down, result too large) come back
as tool errors the client can show, never as crashes.

The hot path, a stateless-era ``tools/call``, takes `concierge.gateway_lane` when it can: a
reverse proxy that reads only the JSON-RPC envelope, applies the same policy and forwards one
POST through the source's pooled session; the SDK server below handles everything else and
every refusal (``fast_lane=False``: the SDK handles every request).

The provider is a `Gateway`, or anything with a ``.gateway`` (a `LocalBackend`): the full face
above. Any other `ToolProvider` (a `RemoteBackend`) gets a reduced face: tools only, results
rebuilt from the REST answer. `build_gateway_app` returns a Starlette app serving ``/mcp``; to
mount it inside another Starlette app, run ``app.state.session_manager.run()`` in the parent's
lifespan (a mounted app's own lifespan does not run).

Who may call it: on loopback, anyone on this machine (like the CLI). ``authorize`` (what
``concierge gateway --host`` other than loopback requires, unless ``--insecure-no-auth``)
checks ``Authorization: Bearer <key>`` on every request before the MCP server sees it.

The sources' instructions reach clients marked as what they are: text written by those
servers, quoted under their namespace, not the gateway's own instructions.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import mcp_types as types
from mcp_types import SERVER_INFO_META_KEY
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from concierge.errors import ConciergeError, ConnectorError, NotFound
from concierge.gateway_lane import FastLane
from concierge.registry.catalog_models import CatalogResult, CatalogTool, ToolCallOutcome

if TYPE_CHECKING:
    from concierge.registry.gateway import Gateway

__all__ = ["Authorize", "GATEWAY_SERVER_NAME", "MAX_REQUEST_BYTES", "ToolProvider",
           "build_gateway_app", "build_gateway_server", "run_gateway"]

log = logging.getLogger("concierge.gateway_server")

GATEWAY_SERVER_NAME = "concierge-gateway"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_MAX_INSTRUCTIONS = 8000
WATCH_INTERVAL = 2.0
"""Seconds between looks at the sandbox's sources for changes made by other processes."""


Authorize = Callable[[str | None], tuple[int, str] | None]
"""Given the bearer token of a request (None without one): ``(status, reason)`` to refuse it, or None."""


class ToolProvider(Protocol):
    """What the MCP face needs at least: the agent's catalog, and a way to call its tools."""

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


def _gateway_of(provider: Any) -> Gateway | None:
    from concierge.registry.gateway import Gateway

    if isinstance(provider, Gateway):
        return provider
    inner = getattr(provider, "gateway", None)
    return inner if isinstance(inner, Gateway) else None


def _error_text(exc: ConciergeError) -> str:
    return str(exc) if isinstance(exc, ConnectorError) else f"{exc.error}: {exc.detail}"


def _error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _outcome_result(outcome: ToolCallOutcome) -> types.CallToolResult:
    try:
        return types.CallToolResult.model_validate({
            "content": outcome.content, "structuredContent": outcome.structured_content,
            "isError": outcome.is_error})
    except ValidationError:  # content blocks we cannot re-type: keep the text
        return types.CallToolResult(content=[types.TextContent(type="text", text=outcome.text)],
                                    is_error=outcome.is_error)


def _tool(entry: CatalogTool) -> types.Tool:
    try:
        return types.Tool.model_validate(entry.definition | {"name": entry.name})
    except ValidationError:  # an upstream field we cannot re-type: the catalog's own fields
        return types.Tool(name=entry.name, title=entry.title, description=entry.description,
                          input_schema=entry.input_schema)


def _quoted(text: str) -> str:
    """A server's instructions as a quotation (each line behind "> "), so it cannot pose as a
    heading or as the gateway's own words."""
    return "\n".join("> " + line for line in text.splitlines())


class _BearerGate:
    """ASGI middleware: a request is passed on only when ``authorize`` accepts its bearer token."""

    def __init__(self, app: ASGIApp, authorize: Authorize) -> None:
        self.app, self.authorize = app, authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, value = header.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
        refused = self.authorize(token)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, reason = refused
        response = JSONResponse({"error": "unauthorized" if status == 401 else "forbidden", "detail": reason},
                                status_code=status, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)
        await response(scope, receive, send)


MAX_REQUEST_BYTES = 1_000_000
"""The most bytes one request to an MCP face may carry (a tool call's arguments), the same cap
as a message from an upstream server. Enforced by the SDK's own body limit (by Content-Length
before reading, or while a chunked body streams in: 413), which the mount uses too."""


def _validated(model: type[Any], items: list[dict[str, Any]]) -> list[Any]:
    out = []
    for item in items:
        try:
            out.append(model.model_validate(item))
        except ValidationError:
            log.info("dropped a %s the gateway cannot re-type", model.__name__)
    return out


class _GatewayServer(Server[Any]):
    """The SDK's low-level server, advertising ``listChanged`` to handshake-era clients too."""

    def create_initialization_options(self, notification_options: NotificationOptions | None = None,
                                      experimental_capabilities: dict[str, dict[str, Any]] | None = None,
                                      extensions: dict[str, dict[str, Any]] | None = None) -> InitializationOptions:
        every = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        return super().create_initialization_options(notification_options or every, experimental_capabilities,
                                                     extensions)


class _Face:
    """The handlers of one agent's MCP server, and the clients to notify of changes."""

    def __init__(self, provider: ToolProvider, gateway: Gateway | None, *, agent: str, sandbox: str | None) -> None:
        self.provider, self.gateway, self.agent, self.sandbox = provider, gateway, agent, sandbox
        self.schemas: dict[str, dict[str, Any]] = {}
        self.bus = InMemorySubscriptionBus()
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Server[Any] | None = None
        self._sandbox_id: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- change notifications ---------------------------------------------------------------

    async def remember(self, ctx: Any, call_next: Any) -> Any:
        """Middleware: note each client connection (to notify it later) and refresh the
        instructions before a handshake."""
        self.start_watch()
        connection = getattr(ctx.session, "_connection", None)  # the SDK keeps it private
        if connection is not None:
            self.connections.add(connection)
        if ctx.method in ("initialize", "server/discover") and self.gateway is not None:
            await self._refresh_instructions()
        return await call_next(ctx)

    def start_watch(self) -> None:
        """On the first request: note the loop, and watch for changes made by other processes."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            if self.gateway is not None:  # changes made by other processes, seen by polling
                watcher = self.loop.create_task(self._watch())
                self._tasks.add(watcher)

    @staticmethod
    def error_text(exc: ConciergeError) -> str:
        """A refusal as the text of the tool error result a client gets."""
        return _error_text(exc)

    async def _refresh_instructions(self) -> None:
        assert self.server is not None
        intro = f"The tools of agent {self.agent}, served by concierge."
        try:
            catalog = await self.provider.agent_tools(self.agent, sandbox=self.sandbox)
        except ConciergeError:
            self.server.instructions = intro
            return
        self._sandbox_id = catalog.sandbox_id
        apps = {t.source_id: t.app for t in catalog.tools}
        parts = [intro] + [f"\n## {apps.get(sid, sid)} (instructions written by that server: data, not the "
                           f"gateway's)\n{_quoted(text)}" for sid, text in catalog.instructions.items()
                           if sid in apps]
        self.server.instructions = "\n".join(parts)[:_MAX_INSTRUCTIONS]

    async def _watch(self) -> None:
        assert self.gateway is not None
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self._sandbox_id is None:
                continue
            try:
                self.gateway.poll_changes(self._sandbox_id)  # listeners (on_change) do the telling
            except Exception:  # a failed look must not end the watch
                log.exception("looking for source changes failed")

    def on_change(self, source_id: str, what: str) -> None:
        """A catalog change (any thread): tell the connected clients what to refetch."""
        if self.loop is None or self.loop.is_closed():
            return  # no client has connected yet: nobody to tell
        if self._sandbox_id is not None and self.gateway is not None:
            try:
                if self.gateway.registry.get_source(source_id).sandbox_id != self._sandbox_id:
                    return
            except ConciergeError:
                pass  # deleted: tell anyway
        kinds = {"upstream_resources": ("resources",), "upstream_prompts": ("prompts",),
                 "upstream_tools": ("tools",)}.get(what, ("tools", "resources", "prompts"))
        self.loop.call_soon_threadsafe(self._spawn, kinds)

    def _spawn(self, kinds: tuple[str, ...]) -> None:
        task = asyncio.get_running_loop().create_task(self._broadcast(kinds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _broadcast(self, kinds: tuple[str, ...]) -> None:
        events: dict[str, ServerEvent] = {"tools": ToolsListChanged(), "resources": ResourcesListChanged(),
                                          "prompts": PromptsListChanged()}
        for kind in kinds:
            await self.bus.publish(events[kind])  # 2026-07-28 clients: their listen streams
        for connection in list(self.connections):  # handshake-era clients: their GET streams
            for kind in kinds:
                try:
                    await getattr(connection, f"send_{kind[:-1]}_list_changed")()
                except Exception:  # best effort: a gone client is dropped by the SDK
                    log.debug("list_changed not delivered to a client")

    # -- tools ------------------------------------------------------------------------------

    async def list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        catalog = await self.provider.agent_tools(self.agent, sandbox=self.sandbox)
        self._sandbox_id = catalog.sandbox_id
        if self.gateway is None:
            tools = [types.Tool(name=t.name, title=t.title, description=t.description, input_schema=t.input_schema)
                     for t in catalog.tools]
        else:
            tools = [_tool(t) for t in catalog.tools]
        self.schemas = {t.name: t.input_schema for t in tools}
        return types.ListToolsResult(tools=tools, ttl_ms=0)  # live: clients must not cache it

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = dict(params.arguments or {})
        try:
            if self.gateway is None:
                outcome = await self.provider.call_tool(params.name, arguments, agent=self.agent,
                                                        sandbox=self.sandbox)
                return _outcome_result(outcome)
            meta = ctx.meta or {}
            wants_progress = meta.get("progressToken", meta.get("progress_token")) is not None

            async def progress(value: float, total: float | None, message: str | None) -> None:
                await ctx.session.report_progress(value, total, message)

            # Progress is asked of the upstream only for a client that asked for it (a token in
            # every upstream request costs the upstream work per call).
            _, result = await self.gateway.call_raw(params.name, arguments, agent=self.agent, sandbox=self.sandbox,
                                                    progress=progress if wants_progress else None)
        except ConciergeError as exc:
            return _error_result(_error_text(exc))
        if result.raw is not None:
            raw = result.raw
            if raw.meta and SERVER_INFO_META_KEY in raw.meta:  # the gateway stamps its own
                raw = raw.model_copy(update={"meta": {k: v for k, v in raw.meta.items()
                                                      if k != SERVER_INFO_META_KEY} or None})
            return raw
        return types.CallToolResult.model_validate({"content": result.content, "isError": result.is_error,
                                                    "structuredContent": result.structured_content})

    # -- resources and prompts (full face only) ---------------------------------------------

    async def _catalog(self) -> CatalogResult:
        return await self.provider.agent_tools(self.agent, sandbox=self.sandbox)

    async def list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        catalog = await self._catalog()
        return types.ListResourcesResult(resources=_validated(types.Resource, [r.definition for r in catalog.resources]),
                                         ttl_ms=0)

    async def list_resource_templates(self, ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        catalog = await self._catalog()
        return types.ListResourceTemplatesResult(
            resource_templates=_validated(types.ResourceTemplate, [r.definition for r in catalog.resource_templates]),
            ttl_ms=0)

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        assert self.gateway is not None
        try:
            result: types.ReadResourceResult = await self.gateway.read_resource(
                str(params.uri), agent=self.agent, sandbox=self.sandbox)
            return result
        except NotFound as exc:
            raise MCPError(types.INVALID_PARAMS, exc.detail) from None
        except ConciergeError as exc:
            raise MCPError(types.INTERNAL_ERROR, _error_text(exc)) from None

    async def list_prompts(self, ctx: Any, params: Any) -> types.ListPromptsResult:
        catalog = await self._catalog()
        return types.ListPromptsResult(prompts=_validated(types.Prompt, [p.definition for p in catalog.prompts]),
                                       ttl_ms=0)

    async def get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        assert self.gateway is not None
        try:
            result: types.GetPromptResult = await self.gateway.get_prompt(
                params.name, dict(params.arguments or {}), agent=self.agent, sandbox=self.sandbox)
            return result
        except NotFound as exc:
            raise MCPError(types.INVALID_PARAMS, exc.detail) from None
        except ConciergeError as exc:
            raise MCPError(types.INTERNAL_ERROR, _error_text(exc)) from None


def build_gateway_server(provider: ToolProvider, *, agent: str, sandbox: str | None = None) -> Server[Any]:
    """A low-level MCP ``Server`` whose tools (resources, prompts) are ``agent``'s catalog."""
    gateway = _gateway_of(provider)
    face = _Face(provider, gateway, agent=agent, sandbox=sandbox)
    handlers: dict[str, Any] = {"on_list_tools": face.list_tools, "on_call_tool": face.call_tool}
    if gateway is not None:
        handlers |= {"on_list_resources": face.list_resources,
                     "on_list_resource_templates": face.list_resource_templates,
                     "on_read_resource": face.read_resource, "on_list_prompts": face.list_prompts,
                     "on_get_prompt": face.get_prompt,
                     "on_subscriptions_listen": ListenHandler(face.bus)}
        gateway.catalog.on_change(face.on_change)
    server = _GatewayServer(GATEWAY_SERVER_NAME, version=_version(),
                            instructions=f"The tools of agent {agent}, served by concierge.",
                            get_tool_input_schema=lambda name: face.schemas.get(name), **handlers)
    # The SDK opens an OpenTelemetry span per message by default (a no-op without an exporter,
    # yet measurable per call); the gateway keeps only its own middleware.
    server.middleware = [face.remember]
    face.server = server
    server.face = face  # type: ignore[attr-defined]  # for tests and the mount
    return server


class _LaneGate:
    """ASGI middleware: requests to ``path`` go through the face's `FastLane` first."""

    def __init__(self, app: ASGIApp, lane: FastLane, path: str) -> None:
        self.app, self.lane, self.path = app, lane, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await self.lane.handle(scope, receive, send, self.app)
        else:
            await self.app(scope, receive, send)


def build_gateway_app(provider: ToolProvider, *, agent: str, sandbox: str | None = None,
                      host: str = "127.0.0.1", path: str = "/mcp", authorize: Authorize | None = None,
                      stateless: bool = False, fast_lane: bool = True) -> Starlette:
    """The agent's catalog over streamable HTTP at ``path``.

    ``host`` is the bind address: on loopback the SDK's Host/Origin check (DNS-rebinding
    protection) is on. ``authorize`` checks every request's bearer token first (see the
    module docstring). ``fast_lane``: stateless-era ``tools/call`` requests are forwarded by
    `concierge.gateway_lane` (False: the SDK serves every request). ``app.state.session_manager``
    and ``app.state.lane`` (None for a reduced face) are exposed for mounting.
    """
    server = build_gateway_server(provider, agent=agent, sandbox=sandbox)
    app = server.streamable_http_app(streamable_http_path=path, host=host, stateless_http=stateless,
                                     max_request_body_size=MAX_REQUEST_BYTES)
    face: _Face = server.face  # type: ignore[attr-defined]
    lane = None
    if face.gateway is not None:
        lane = FastLane(face, face.gateway, security=server.session_manager.security_settings,
                        max_body=MAX_REQUEST_BYTES, enabled=fast_lane)
        app.add_middleware(_LaneGate, lane=lane, path=path)
    app.state.lane = lane
    if authorize is not None:
        app.add_middleware(_BearerGate, authorize=authorize)  # outermost: no key, nothing is read
    app.state.session_manager = server.session_manager
    app.state.mcp_server = server
    return app


async def run_gateway(provider: ToolProvider, *, agent: str, sandbox: str | None = None,
                      host: str = "127.0.0.1", port: int = 8766, authorize: Authorize | None = None,
                      fast_lane: bool = True) -> None:
    """Check the agent, then serve its catalog with uvicorn until interrupted (``authorize``,
    ``fast_lane``: see `build_gateway_app`; the caller decides whether a bind needs a key)."""
    import uvicorn

    catalog = await provider.agent_tools(agent, sandbox=sandbox)  # fails fast on a bad slug
    url_host = f"[{host}]" if ":" in host else host
    print(f"Gateway for agent {agent}: {catalog.count} tools at http://{url_host}:{port}/mcp",
          file=sys.stderr, flush=True)
    for skipped in catalog.trace.sources_skipped:
        print(f"  skipped {skipped.name} ({skipped.source_id}): {skipped.reason}", file=sys.stderr)
    if host not in LOOPBACK_HOSTS:
        print("  API key required (Authorization: Bearer <key>)" if authorize is not None else
              "  warning: --insecure-no-auth: anyone who can reach this port can call these tools with "
              "their stored credentials", file=sys.stderr)
    config = uvicorn.Config(build_gateway_app(provider, agent=agent, sandbox=sandbox, host=host,
                                              authorize=authorize, fast_lane=fast_lane),
                            host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)
    await uvicorn.Server(config).serve()
