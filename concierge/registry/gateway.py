"""The tool gateway: call a catalog tool by its advertised name, within the rules.

    call(name, args, agent=)   route name -> (source, original tool) via the agent's catalog
                               -> agent active, tool_sources and tool_allowlist admit it
                               -> call_source(...)
    call_source(source, tool)  source active -> source allowed_tools admit it
                               -> rate cap (token bucket per source) -> pooled session -> call
                               (under the source's call_timeout)

One `McpSession` per source is kept open and reused. A pooled session found closed is
replaced; one that breaks during a call (server restarted, connection dropped) is replaced
and the call retried once. A tool error from the server is an outcome with ``is_error=True``;
policy failures raise `NotFound`, `PermissionDenied`, `Conflict` or `RateLimited`; transport
failures raise `ConnectorError`. Update, pause, revoke or delete of a source evicts its
pooled session and its rate bucket.
"""

from __future__ import annotations

import difflib
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio

from concierge.errors import Conflict, ConnectorError, NotFound, PermissionDenied
from concierge.mcp_client import ErrorKind, McpSession, ToolCallResult
from concierge.registry.catalog import Catalog, matches_any, namespace_prefix
from concierge.registry.catalog_models import CatalogResult, CatalogTool, ToolCallOutcome
from concierge.registry.models import Agent, SourceStatus, SourceView
from concierge.registry.ratelimit import RateLimiter
from concierge.registry.service import Registry

__all__ = ["BUCKET_EVICTING_ACTIONS", "Gateway", "SessionFactory"]

log = logging.getLogger("concierge.gateway")

SessionFactory = Callable[..., McpSession]
BUCKET_EVICTING_ACTIONS = frozenset({"update", "pause", "revoke", "delete"})
"""Source changes that reset the rate bucket (a health-check status change does not)."""
INACTIVE_REASONS = frozenset({"paused", "error", "disconnected"})


class Gateway:
    """Routes and runs tool calls for agents; owns the session pool and the rate buckets."""

    def __init__(self, registry: Registry, catalog: Catalog, *,
                 clock: Callable[[], float] = time.monotonic,
                 limiter: RateLimiter | None = None,
                 session_factory: SessionFactory = McpSession) -> None:
        self.registry = registry
        self.catalog = catalog
        self.limiter = limiter or RateLimiter(clock=clock)
        self._clock = clock
        self._session_factory = session_factory
        self._sessions: dict[str, McpSession] = {}
        self._retired: list[McpSession] = []
        self._open_locks: dict[str, anyio.Lock] = {}
        self._generation: dict[str, int] = {}
        self._routes: dict[tuple[str, str], tuple[float, dict[str, CatalogTool]]] = {}
        self.sessions_opened: dict[str, int] = {}
        """How many sessions were opened per source (reuse shows as 1 for many calls)."""
        registry.on_source_change(self._on_source_change)

    # -- pool bookkeeping -------------------------------------------------------------------

    def _on_source_change(self, source_id: str, action: str) -> None:
        self._routes.clear()
        self._generation[source_id] = self._generation.get(source_id, 0) + 1
        if action in BUCKET_EVICTING_ACTIONS:
            self.limiter.evict(source_id)
        session = self._sessions.pop(source_id, None)
        if session is not None:  # closed on the next await point we own (listeners are sync)
            self._retired.append(session)

    def pooled(self, source_id: str) -> McpSession | None:
        """The open pooled session of a source, if any."""
        session = self._sessions.get(source_id)
        return session if session is not None and not session.closed else None

    @property
    def pool_size(self) -> int:
        return sum(1 for s in self._sessions.values() if not s.closed)

    async def _close_retired(self) -> None:
        while self._retired:
            await self._retired.pop().aclose()

    def _discard(self, source_id: str, session: McpSession) -> None:
        if self._sessions.get(source_id) is session:
            del self._sessions[source_id]
        self._retired.append(session)

    async def _session(self, source: SourceView) -> tuple[McpSession, bool]:
        """The source's pooled session and whether it was opened just now."""
        session = self.pooled(source.id)
        if session is not None:
            return session, False
        lock = self._open_locks.setdefault(source.id, anyio.Lock())
        async with lock:
            session = self.pooled(source.id)
            if session is not None:
                return session, False
            stale = self._sessions.pop(source.id, None)
            if stale is not None:
                self._retired.append(stale)
            generation = self._generation.get(source.id, 0)
            session = self._session_factory(self.registry.endpoint(source.id))
            await session.open()  # raises ConnectorError
            self.sessions_opened[source.id] = self.sessions_opened.get(source.id, 0) + 1
            if self._generation.get(source.id, 0) == generation:
                self._sessions[source.id] = session
            else:  # the source changed while we connected: use once, don't pool
                self._retired.append(session)
            return session, True

    async def aclose(self) -> None:
        """Close every pooled session."""
        self._retired.extend(self._sessions.values())
        self._sessions.clear()
        await self._close_retired()

    # -- calls ------------------------------------------------------------------------------

    async def agent_tools(self, slug: str | None = None, *, sandbox: str | None = None,
                          app: str | None = None) -> CatalogResult:
        """The agent's catalog (same as ``catalog.resolve``)."""
        return await self.catalog.resolve(slug, sandbox=sandbox, app=app)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *, agent: str,
                        sandbox: str | None = None) -> ToolCallOutcome:
        """Alias of `call` (the Backend's spelling)."""
        return await self.call(name, arguments, agent=agent, sandbox=sandbox)

    async def call(self, name: str, arguments: dict[str, Any] | None = None, *, agent: str,
                   sandbox: str | None = None) -> ToolCallOutcome:
        """Call the agent's catalog tool ``name`` with ``arguments``."""
        await self._close_retired()
        sb = self.registry.get_sandbox(sandbox)
        ag = self.registry.get_agent(agent, sandbox=sb.id)
        if ag.status != "active":
            raise PermissionDenied(f"agent {ag.slug} is {ag.status}; it cannot call tools until resumed",
                                   error="agent_inactive")
        if "user_mcp" not in ag.tool_sources:
            raise PermissionDenied(f"agent {ag.slug} does not take user_mcp tools (tool_sources: "
                                   f"{', '.join(ag.tool_sources) or 'none'})", error="not_allowed")
        tool = await self._route(ag, sb.id, name)
        if ag.tool_allowlist and not matches_any(ag.tool_allowlist, name):
            raise PermissionDenied(f"tool {name} is not in agent {ag.slug}'s tool_allowlist",
                                   error="not_allowed")
        return await self.call_source(tool.source_id, tool.original_name, arguments, advertised=name)

    async def _route(self, agent: Agent, sandbox_id: str, name: str) -> CatalogTool:
        key = (agent.id, sandbox_id)
        memo = self._routes.get(key)
        if memo is not None and self._clock() - memo[0] < self.catalog.ttl_seconds and name in memo[1]:
            return memo[1][name]
        result = await self.catalog.resolve(agent.slug, sandbox=sandbox_id)
        table = {t.name: t for t in result.tools}
        self._routes[key] = (self._clock(), table)
        tool = table.get(name)
        if tool is not None:
            return tool
        trace = result.trace
        if name in trace.allowlist_filtered_out.get("agent", []):
            raise PermissionDenied(f"tool {name} is not in agent {agent.slug}'s tool_allowlist",
                                   error="not_allowed")
        if name in trace.allowlist_filtered_out.get("source", []):
            raise PermissionDenied(f"tool {name} is not in its source's allowed_tools", error="not_allowed")
        for skipped in trace.sources_skipped:  # the tool's source is down or switched off
            if skipped.app and name.startswith(namespace_prefix(skipped.app)):
                why = f"{skipped.reason}" + (f": {skipped.detail}" if skipped.detail else "")
                if skipped.reason in INACTIVE_REASONS:
                    raise Conflict(f"tool {name} belongs to source {skipped.name} ({skipped.source_id}), "
                                   f"which is {why}", error="source_inactive")
                if skipped.reason != "not_in_tool_sources":
                    raise ConnectorError(skipped.reason, f"tool {name} belongs to source {skipped.name} "
                                         f"({skipped.source_id}), which could not be listed: {why}")
        hint = ""
        close = difflib.get_close_matches(name, list(table), n=3)
        if close:
            hint += f"; did you mean {', '.join(close)}?"
        if trace.sources_skipped:
            hint += " (skipped sources: " + ", ".join(
                f"{s.name} [{s.reason}]" for s in trace.sources_skipped) + ")"
        raise NotFound(f"agent {agent.slug} has no tool {name!r}{hint}")

    async def call_source(self, source_id: str, tool_name: str, arguments: dict[str, Any] | None = None, *,
                          advertised: str | None = None, enforce_allowlist: bool = True) -> ToolCallOutcome:
        """Call ``tool_name`` (the server's own name) on a source: active check, the source's
        allowed_tools (unless ``enforce_allowlist=False``), rate cap, pooled session, timeout."""
        await self._close_retired()
        source = self.registry.get_source(source_id)
        if source.status != SourceStatus.ACTIVE:
            raise Conflict(f"source {source.name} ({source.id}) is {source.status.value}; "
                           "its tools cannot be called", error="source_inactive")
        if enforce_allowlist and source.allowed_tools is not None and \
                not matches_any(source.allowed_tools, tool_name):
            raise PermissionDenied(f"tool {tool_name} is not in the allowed_tools of source "
                                   f"{source.name} ({source.id})", error="not_allowed")
        self.limiter.acquire(source.id, source.rate_cap_per_minute, label=source.name)
        result = await self._call_pooled(source, tool_name, arguments)
        return ToolCallOutcome(name=advertised or tool_name, source_id=source.id, original_name=tool_name,
                               is_error=result.is_error, text=result.text, content=result.content,
                               structured_content=result.structured_content, latency_ms=result.latency_ms)

    async def _call_pooled(self, source: SourceView, tool_name: str,
                           arguments: dict[str, Any] | None) -> ToolCallResult:
        session, fresh = await self._session(source)
        try:
            return await session.call_tool(tool_name, arguments)
        except ConnectorError as exc:
            if not session.closed:  # the server answered with an MCP error: a tool error
                return _tool_error(exc)
            self._discard(source.id, session)
            if fresh or exc.kind == ErrorKind.TIMEOUT:
                raise  # a new session failed, or the call may still be running: don't retry
            log.info("pooled session to %s broke (%s); reconnecting once", source.id, exc.kind)
        session, _ = await self._session(source)
        try:
            return await session.call_tool(tool_name, arguments)
        except ConnectorError as exc:
            if not session.closed:
                return _tool_error(exc)
            self._discard(source.id, session)
            raise


def _tool_error(exc: ConnectorError) -> ToolCallResult:
    return ToolCallResult(is_error=True, content=[{"type": "text", "text": exc.detail}],
                          structured_content=None, text=exc.detail, latency_ms=0.0)
