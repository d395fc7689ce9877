"""The tool gateway: call a catalog tool by its advertised name, within the rules.

    call(name, args, agent=)   route name -> (source, original tool) via the agent's catalog
                               -> agent active, tool_sources and tool_allowlist admit it
                               -> call_source(...)
    call_source(source, tool)  source active -> source allowed_tools admit it
                               -> rate cap (token bucket per source) -> a slot among the
                               source's requests in flight (callers queue: back-pressure)
                               -> pooled session -> call (under the source's call_timeout,
                               pushed back by progress)

Sessions come from the catalog's `SessionPool`, so listings and calls share one session per
source. A call name missing from the agent's (fresh) catalog is an unknown tool: it never
triggers a new resolution. A call is retried once on a new session only when the request
certainly never reached the server (the pooled session was gone and connecting failed before
a byte was sent); a call that may have run is never sent twice, its failure is returned.

A tool error from the server is an outcome with ``is_error=True``, and so is a result over
the size cap (``max_result_bytes``, enforced while reading). Policy failures raise `NotFound`,
`PermissionDenied`, `Conflict` or `RateLimited`; transport failures raise `ConnectorError`.
Update, pause, revoke or delete of a source evicts its pooled session and its rate bucket.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from concierge.errors import (
    AgentInactive,
    ConnectorError,
    NotAllowed,
    NotFound,
    NotSupported,
    SourceInactive,
    ToolHeld,
    VaultError,
)
from concierge.mcp_client import ErrorKind, McpSession, ToolCallResult
from concierge.registry.catalog import Catalog, matches_any, namespace_prefix
from concierge.registry.catalog_models import (
    CatalogResult,
    CatalogTool,
    HeldTool,
    ResolutionTrace,
    SkippedSource,
    ToolCallOutcome,
)
from concierge.registry.catalog_rows import idle_source_of_tool
from concierge.registry.models import Agent, SourceStatus, SourceView
from concierge.registry.ratelimit import RateLimiter, StoreRateLimiter
from concierge.registry.service import Registry

__all__ = ["BUCKET_EVICTING_ACTIONS", "Gateway", "Progress"]

log = logging.getLogger("concierge.gateway")

Progress = Callable[[float, float | None, str | None], Awaitable[None]]
Admitted = tuple[Agent, CatalogTool, SourceView]
BUCKET_EVICTING_ACTIONS = frozenset({"update", "pause", "revoke", "delete"})
"""Source changes that reset the rate bucket (a health-check status change does not)."""
INACTIVE_REASONS = frozenset({"paused", "error", "disconnected"})
_MAX_ADMITTED = 4096
_MAX_LINKS = 4096
"""Resource URIs seen in an agent's tool results, remembered so its client can read them."""


class Gateway:
    """Routes and runs tool calls (and resource reads, prompt gets) for agents."""

    def __init__(self, registry: Registry, catalog: Catalog, *,
                 clock: Callable[[], float] | None = None,
                 limiter: RateLimiter | StoreRateLimiter | None = None) -> None:
        self.registry = registry
        self.catalog = catalog
        self.pool = catalog.pool
        # The buckets live in the database, shared by every process (on Unix time, the one
        # timeline they share; a test's injected clock drives them too).
        self.limiter = limiter or StoreRateLimiter(registry.store, "tool_calls", clock=clock or time.time, lease=True)
        self._clock = clock or time.monotonic
        self._routes: dict[tuple[str, str], tuple[float, CatalogResult]] = {}
        self._admitted: dict[tuple[int, str, str, str | None], tuple[int, float, Admitted]] = {}
        """(thread, name, agent, sandbox) -> (the database's data_version, expiry, what `admit` found)."""
        self._links: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._seen: dict[str, dict[str, tuple[str, str]]] = {}
        self._sandbox_ids: dict[str | None, str] = {}
        registry.on_source_change(self._on_source_change)

    # -- pool bookkeeping -------------------------------------------------------------------

    async def _acquire(self, source: SourceView) -> None:
        if isinstance(self.limiter, StoreRateLimiter):
            await self.limiter.aacquire(source.id, source.rate_cap_per_minute, label=source.name)
        else:
            self.limiter.acquire(source.id, source.rate_cap_per_minute, label=source.name)

    def _on_source_change(self, source_id: str, action: str) -> None:
        self._routes.clear()
        self._admitted.clear()
        # Shared buckets are dropped by the registry in the changing transaction itself.
        if action in BUCKET_EVICTING_ACTIONS:
            if isinstance(self.limiter, StoreRateLimiter):
                self.limiter.forget(source_id)  # tokens taken ahead go with the bucket
            else:
                self.limiter.evict(source_id)
        self.pool.evict(source_id)

    def poll_changes(self, sandbox_id: str) -> list[str]:
        """Compare the sandbox's sources with the last look and apply what changed meanwhile
        in another process (a CLI ``source pause``, a second server): listings and sessions
        dropped, buckets reset, change listeners told. Returns the changed source ids."""
        now = {s.id: (s.updated_at, s.status.value) for s in self.registry.list_sources(sandbox=sandbox_id)}
        before = self._seen.get(sandbox_id)
        self._seen[sandbox_id] = now
        if before is None:
            return []
        changed = sorted(sid for sid in now.keys() | before.keys() if now.get(sid) != before.get(sid))
        for sid in changed:
            self._on_source_change(sid, "update")
            self.catalog.source_changed(sid, "update")
        return changed

    @property
    def sessions_opened(self) -> dict[str, int]:
        """How many sessions were opened per source (reuse shows as 1 for many calls)."""
        return self.pool.sessions_opened

    def pooled(self, source_id: str) -> McpSession | None:
        """The open pooled session of a source, if any."""
        return self.pool.pooled(source_id)

    @property
    def pool_size(self) -> int:
        return self.pool.size

    async def aclose(self) -> None:
        """Close every pooled session."""
        await self.catalog.aclose()

    # -- routing ----------------------------------------------------------------------------

    async def agent_tools(self, slug: str | None = None, *, sandbox: str | None = None,
                          app: str | None = None) -> CatalogResult:
        """The agent's catalog (same as ``catalog.resolve``)."""
        return await self.catalog.resolve(slug, sandbox=sandbox, app=app)

    def _sandbox_id(self, ref: str | None) -> str:
        """The sandbox's id, looked up once per ref that cannot come to mean another sandbox
        (the default, or an id): an MCP face asks on every call."""
        held = self._sandbox_ids.get(ref)
        if held is not None:
            return held
        sb = self.registry.get_sandbox(ref)
        if ref is None or ref == sb.id:
            self._sandbox_ids[ref] = sb.id
        return sb.id

    async def _agent(self, agent: str, sandbox: str | None) -> tuple[Agent, str]:
        sandbox_id = self._sandbox_id(sandbox)
        try:
            ag = self.registry.get_agent(agent, sandbox=sandbox_id)
        except NotFound:
            if self._sandbox_ids.pop(sandbox, None) is None:
                raise
            sandbox_id = self._sandbox_id(sandbox)  # the sandbox was deleted (and made again?)
            ag = self.registry.get_agent(agent, sandbox=sandbox_id)
        sb_id = sandbox_id
        if ag.status != "active":
            raise AgentInactive(f"agent {ag.slug} is {ag.status}; it cannot call tools until resumed")
        if "user_mcp" not in ag.tool_sources:
            raise NotAllowed(f"agent {ag.slug} does not take user_mcp tools (tool_sources: "
                             f"{', '.join(ag.tool_sources) or 'none'})")
        return ag, sb_id

    async def catalog_for(self, agent: Agent, sandbox_id: str) -> CatalogResult:
        """The agent's catalog, memoized for the catalog's TTL (dropped on any source change)."""
        key = (agent.id, sandbox_id)
        await self.registry.follow_changes()  # another process's change drops the memo (listener)
        memo = self._routes.get(key)
        if memo is not None and self._clock() - memo[0] < self.catalog.ttl_seconds:
            return memo[1]
        result = await self.catalog.resolve(agent.slug, sandbox=sandbox_id)
        self._routes[key] = (self._clock(), result)
        return result

    async def _route(self, agent: Agent, sandbox_id: str, name: str) -> CatalogTool:
        result = await self.catalog_for(agent, sandbox_id)
        for tool in result.tools:
            if tool.name == name:
                return tool
        idle = (idle_source_of_tool(self.registry.store, sandbox_id, name)  # one the trace only counted
                if result.trace.sources_skipped_omitted else None)
        also = [Catalog.skipped_entry(idle)] if idle is not None and idle.kind in agent.tool_sources else []
        _explain_missing(name, agent, result, also=also)
        raise AssertionError  # pragma: no cover - _explain_missing always raises

    # -- calls ------------------------------------------------------------------------------

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *, agent: str,
                        sandbox: str | None = None) -> ToolCallOutcome:
        """Alias of `call` (the Backend's spelling)."""
        return await self.call(name, arguments, agent=agent, sandbox=sandbox)

    async def call(self, name: str, arguments: dict[str, Any] | None = None, *, agent: str,
                   sandbox: str | None = None) -> ToolCallOutcome:
        """Call the agent's catalog tool ``name`` with ``arguments``."""
        tool, result = await self.call_raw(name, arguments, agent=agent, sandbox=sandbox)
        return _outcome(name, tool.source_id, tool.original_name, result)

    async def call_raw(self, name: str, arguments: dict[str, Any] | None = None, *, agent: str,
                       sandbox: str | None = None, progress: Progress | None = None,
                       meta: dict[str, Any] | None = None) -> tuple[CatalogTool, ToolCallResult]:
        """`call`, returning the catalog entry and the server's result as received (for the
        MCP face: every content block, ``structuredContent`` and ``_meta`` pass through)."""
        ag, tool, _ = await self.admit(name, agent=agent, sandbox=sandbox)
        result = await self._call_source(tool.source_id, tool.original_name, arguments, enforce_allowlist=True,
                                         progress=progress, meta=meta)
        self.remember_links(ag.id, tool.source_id, result.content)
        return tool, result

    async def admit(self, name: str, *, agent: str, sandbox: str | None = None) -> Admitted:
        """Every check of a call of the agent's tool ``name`` before its rate cap: the agent
        active and taking user_mcp tools, the name in its catalog and tool_allowlist, the source
        active, the tool not held and in the source's allowed_tools. Raises what `call` raises.

        On SQLite an admission is remembered while the database is unchanged: its
        ``data_version`` moves with every commit by any connection (this process's writes, a
        CLI ``source pause`` in another process), so a remembered answer is what the reads would
        return; it also ends with the agent's catalog memo and on any source change heard."""
        version = self._data_version()
        key = (threading.get_ident(), name, agent, sandbox)
        if version is not None:
            held = self._admitted.get(key)
            if held is not None and held[0] == version and self._clock() < held[1]:
                return held[2]
        ag, sandbox_id = await self._agent(agent, sandbox)
        tool = await self._route(ag, sandbox_id, name)
        if ag.tool_allowlist and not matches_any(ag.tool_allowlist, name):
            raise NotAllowed(f"tool {name} is not in agent {ag.slug}'s tool_allowlist")
        admitted = (ag, tool, self._admit_source(tool.source_id, tool.original_name, enforce_allowlist=True))
        route = self._routes.get((ag.id, sandbox_id))
        if version is not None and route is not None:
            if len(self._admitted) >= _MAX_ADMITTED:
                self._admitted.clear()
            self._admitted[key] = (version, route[0] + self.catalog.ttl_seconds, admitted)
        return admitted

    def _data_version(self) -> int | None:
        """SQLite's ``PRAGMA data_version`` on this thread's read connection (None on PostgreSQL,
        which has no such signal: every admission reads afresh)."""
        return self.registry.store.data_version()

    async def acquire(self, source: SourceView) -> None:
        """Spend one call of the source's rate cap, or raise `RateLimited`."""
        await self._acquire(source)

    async def call_failed(self, source: SourceView, session: McpSession, exc: BaseException,
                          call_box: Any) -> ToolCallResult:
        """A call sent outside the session's SDK client (the MCP face's lane) failed with ``exc``
        after it was sent: the error result `call_raw` returns for it, or the `ConnectorError`
        it raises (the same rules: the server's MCP error or a refused oversized answer is a
        tool error, a broken session is discarded, a refused sign-in marks the source)."""
        err = await session.request_failed(exc, call_box)
        if session.closed:
            self.pool.discard(source.id, session)
        elif err.kind is ErrorKind.PROTOCOL:
            return _error_result(str(err))
        if err.kind is ErrorKind.TOO_LARGE:
            return _error_result(str(err))
        if err.kind is ErrorKind.AUTH_REQUIRED:
            self.registry.mark_auth_required(source.id, err.sentence)
        raise err

    async def call_source(self, source_id: str, tool_name: str, arguments: dict[str, Any] | None = None, *,
                          advertised: str | None = None, enforce_allowlist: bool = True) -> ToolCallOutcome:
        """Call ``tool_name`` (the server's own name) on a source: active check, the source's
        allowed_tools (unless ``enforce_allowlist=False``), rate cap, pooled session, timeout."""
        result = await self._call_source(source_id, tool_name, arguments, enforce_allowlist=enforce_allowlist)
        return _outcome(advertised or tool_name, source_id, tool_name, result)

    def _active_source(self, source_id: str) -> SourceView:
        source = self.registry.get_source(source_id)
        if source.status != SourceStatus.ACTIVE:
            raise SourceInactive(f"source {source.name} ({source.id}) is {source.status.value}; "
                           "its tools cannot be called")
        return source

    def _admit_source(self, source_id: str, tool_name: str, *, enforce_allowlist: bool) -> SourceView:
        source = self._active_source(source_id)
        held = self.registry.pins.held_tool(source.id, tool_name)
        if held is not None:
            raise _held_error(tool_name, held)
        if enforce_allowlist and source.allowed_tools is not None and \
                not matches_any(source.allowed_tools, tool_name):
            raise NotAllowed(f"tool {tool_name} is not in the allowed_tools of source "
                                   f"{source.name} ({source.id})")
        return source

    async def _call_source(self, source_id: str, tool_name: str, arguments: dict[str, Any] | None, *,
                           enforce_allowlist: bool, progress: Progress | None = None,
                           meta: dict[str, Any] | None = None) -> ToolCallResult:
        source = self._admit_source(source_id, tool_name, enforce_allowlist=enforce_allowlist)
        await self._acquire(source)
        try:
            result: ToolCallResult = await self._pooled(
                source, lambda s: s.call_tool(tool_name, arguments, progress=progress, meta=meta))
            return result
        except ConnectorError as exc:
            if exc.kind is ErrorKind.TOO_LARGE:  # the server answered; the answer is refused
                return _error_result(str(exc))
            if exc.kind is ErrorKind.AUTH_REQUIRED:  # a refused refresh: sign in again, said everywhere
                self.registry.mark_auth_required(source.id, exc.sentence)
            raise

    @property
    def max_result_bytes(self) -> int:
        """The cap on one tool result read from a server (the catalog's message cap: the
        session is shared); a bigger result is a tool error, refused while it is read."""
        return self.catalog.max_message_bytes

    @max_result_bytes.setter
    def max_result_bytes(self, value: int) -> None:
        self.catalog.max_message_bytes = value

    async def _pooled(self, source: SourceView, request: Callable[[McpSession], Awaitable[Any]]) -> Any:
        """Run ``request`` on the source's pooled session, in one of its slots.

        A failure after which the session still works (the server answered with an MCP error)
        comes back as a tool error. A broken session is discarded; the request is re-sent on a
        new session only if it certainly never reached the server.
        """
        async with self.pool.slot(source.id, wait=source.call_timeout):
            for attempt in (1, 2):
                session, fresh = await self.pool.session(source.id, lambda: self.catalog.endpoint(source.id))
                try:
                    return await request(session)
                except ConnectorError as exc:
                    if not session.closed:
                        if exc.kind is ErrorKind.PROTOCOL:  # the server's MCP error answer
                            return _error_result(str(exc))
                        raise
                    self.pool.discard(source.id, session)
                    if fresh or exc.delivered or attempt == 2:
                        raise
                    log.info("pooled session to %s was gone (%s) before the request left; "
                             "sending it on a new session", source.id, exc.kind)
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def remember_links(self, agent_id: str, source_id: str, content: list[dict[str, Any]]) -> None:
        """Note the resource URIs a tool result of the source linked (the agent may read them)."""
        for block in content:
            if not isinstance(block, dict):
                continue
            inner = block.get("resource")
            uri = block.get("uri") or (inner.get("uri") if isinstance(inner, dict) else None)
            if block.get("type") in ("resource_link", "resource") and isinstance(uri, str):
                self._links[(agent_id, uri)] = source_id
                self._links.move_to_end((agent_id, uri))
        while len(self._links) > _MAX_LINKS:
            self._links.popitem(last=False)

    # -- resources and prompts --------------------------------------------------------------

    async def read_resource(self, uri: str, *, agent: str, sandbox: str | None = None) -> Any:
        """``resources/read`` routed to the source that lists the URI (or a template matching
        it, or a tool result that linked it); raises `NotFound` otherwise."""
        from mcp.shared.uri_template import UriTemplate

        ag, sandbox_id = await self._agent(agent, sandbox)
        catalog = await self.catalog_for(ag, sandbox_id)
        source_id = next((r.source_id for r in catalog.resources if r.uri == uri), None)
        if source_id is None:
            for template in catalog.resource_templates:
                try:
                    if template.uri_template and UriTemplate.parse(template.uri_template).match(uri) is not None:
                        source_id = template.source_id
                        break
                except Exception:  # a template we cannot parse matches nothing
                    continue
        if source_id is None:
            linked = self._links.get((ag.id, uri))
            if linked is not None and any(t.source_id == linked for t in catalog.tools):
                source_id = linked
        if source_id is None:
            raise NotFound(f"agent {ag.slug} has no resource {uri!r}")
        source = self._active_source(source_id)
        await self._acquire(source)
        return await self._pooled(source, lambda s: s.read_resource(uri))

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None, *, agent: str,
                         sandbox: str | None = None) -> Any:
        """``prompts/get`` for the agent's advertised prompt ``name``."""
        ag, sandbox_id = await self._agent(agent, sandbox)
        catalog = await self.catalog_for(ag, sandbox_id)
        prompt = next((p for p in catalog.prompts if p.name == name), None)
        if prompt is None:
            raise NotFound(f"agent {ag.slug} has no prompt {name!r}")
        source = self._active_source(prompt.source_id)
        await self._acquire(source)
        return await self._pooled(source, lambda s: s.get_prompt(prompt.original_name, arguments))


def _explain_missing(name: str, agent: Agent, result: CatalogResult, *,
                      also: Sequence[SkippedSource] = ()) -> None:
    """Raise the most telling error for a name the agent's catalog does not advertise (``also``:
    a skipped source looked up beyond the trace's itemized ones)."""
    trace: ResolutionTrace = result.trace
    if name in trace.allowlist_filtered_out.get("agent", []):
        raise NotAllowed(f"tool {name} is not in agent {agent.slug}'s tool_allowlist")
    if name in trace.allowlist_filtered_out.get("source", []):
        raise NotAllowed(f"tool {name} is not in its source's allowed_tools")
    for held in trace.tools_held:
        if held.name == name:
            raise _held_error(name, held)
    for left in trace.tools_left_out:
        if left["name"] == name:
            raise NotSupported(f"tool {name} is not offered: it requires task-augmented execution, "
                               "which the gateway does not support")
    for skipped in [*also, *trace.sources_skipped]:  # the tool's source is down or switched off
        if skipped.app and name.startswith(namespace_prefix(skipped.app)):
            why = skipped.detail or skipped.reason
            if skipped.reason in INACTIVE_REASONS:
                raise SourceInactive(f"tool {name} belongs to source {skipped.name} ({skipped.source_id}), "
                                     f"which is {skipped.reason}"
                                     + (f": {skipped.detail}" if skipped.detail else ""))
            if skipped.reason != "not_in_tool_sources":
                detail = f"tool {name} belongs to source {skipped.name} ({skipped.source_id}), which could not be listed: {why}"
                if skipped.reason == VaultError.error:
                    raise VaultError(detail)
                raise ConnectorError(skipped.reason, detail)  # an ErrorKind
    hint = ""
    close = difflib.get_close_matches(name, [t.name for t in result.tools], n=3)
    if close:
        hint += f"; did you mean {', '.join(close)}?"
    if trace.sources_skipped:
        hint += " (skipped sources: " + ", ".join(f"{s.name} [{s.reason}]" for s in trace.sources_skipped) + ")"
    raise NotFound(f"agent {agent.slug} has no tool {name!r}{hint}")


def _held_error(name: str, held: HeldTool) -> ToolHeld:
    what = "is new since the source's tools were approved" if held.status == "new" else \
        "changed since it was approved"
    return ToolHeld(f"tool {name} is held: its definition {what}; an owner or editor must review and approve "
                    f"it (concierge source user-mcp show {held.source_id}; "
                    f"concierge source user-mcp approve {held.source_id} --tool {held.tool})")


def _error_result(text: str) -> ToolCallResult:
    return ToolCallResult(is_error=True, content=[{"type": "text", "text": text}], structured_content=None,
                          text=text, latency_ms=0.0)


def _outcome(name: str, source_id: str, original_name: str, result: ToolCallResult) -> ToolCallOutcome:
    return ToolCallOutcome(name=name, source_id=source_id, original_name=original_name, is_error=result.is_error,
                           text=result.text, content=result.content, structured_content=result.structured_content,
                           latency_ms=result.latency_ms)
