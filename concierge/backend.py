"""The Backend protocol: everything a surface or the concierge's tools may ask of the registry.

`LocalBackend` runs the registry in-process (SQLite file); `RemoteBackend`
(``concierge.remote``) talks to a ``concierge serve`` over HTTP with the same methods, so
the CLI, the REPL and the concierge work the same against both. Request bodies are plain
JSON-able dicts so they can cross the wire unchanged; answers are the registry's models.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio

from concierge.offloop import off_loop
from concierge.registry.service import Registry

if TYPE_CHECKING:
    from concierge.config import Settings
    from concierge.registry.catalog_models import (
        ApprovalResult,
        CatalogResult,
        HeldTool,
        PullResult,
        SameUrl,
        ToolCallOutcome,
    )
    from concierge.registry.models import Agent, AuditEntry, Outcome, Sandbox, SourceView
    from concierge.registry.pages import Page
    from concierge.registry.catalog import Catalog
    from concierge.registry.gateway import Gateway
    from concierge.registry.ingest import Ingestor

__all__ = ["Backend", "LocalBackend"]


@runtime_checkable
class Backend(Protocol):
    """Registry operations, all async. Errors are `concierge.errors.ConciergeError`s."""

    async def list_sandboxes(self) -> list[Sandbox]: ...
    async def page_sandboxes(self, *, limit: int | None = None,
                             cursor: str | None = None) -> Page[Sandbox]: ...
    async def create_sandbox(self, name: str) -> Sandbox: ...
    async def get_sandbox(self, ref: str | None = None) -> Sandbox: ...

    async def list_sources(self, *, sandbox: str | None = None,
                           status: str | None = None) -> list[SourceView]: ...
    async def page_sources(self, *, sandbox: str | None = None, status: str | None = None,
                           limit: int | None = None, cursor: str | None = None) -> Page[SourceView]: ...
    async def get_source(self, source_id: str, *, sandbox: str | None = None) -> SourceView: ...
    async def sources_at_url(self, url: str, *, sandbox: str | None = None) -> SameUrl: ...
    async def register_source(self, body: dict[str, Any], *,
                              sandbox: str | None = None) -> Outcome: ...
    async def update_source(self, source_id: str, body: dict[str, Any], *,
                            sandbox: str | None = None) -> Outcome: ...
    async def test_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome: ...
    async def pause_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome: ...
    async def resume_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome: ...
    async def revoke_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome: ...
    async def delete_source(self, source_id: str, *, sandbox: str | None = None) -> None: ...
    async def held_tools(self, source_id: str, *, sandbox: str | None = None) -> list[HeldTool]: ...
    async def approve_tools(self, source_id: str, tools: list[str] | None = None, *,
                            sandbox: str | None = None) -> ApprovalResult: ...

    async def list_agents(self, *, sandbox: str | None = None) -> list[Agent]: ...
    async def page_agents(self, *, sandbox: str | None = None, limit: int | None = None,
                          cursor: str | None = None) -> Page[Agent]: ...
    async def get_agent(self, slug: str, *, sandbox: str | None = None) -> Agent: ...
    async def create_agent(self, body: dict[str, Any], *, sandbox: str | None = None) -> Agent: ...
    async def update_agent(self, slug: str, body: dict[str, Any], *,
                           sandbox: str | None = None) -> Agent: ...

    async def audit(self, *, sandbox: str | None = None, limit: int = 50) -> list[AuditEntry]: ...
    async def page_audit(self, *, sandbox: str | None = None, limit: int | None = None,
                         cursor: str | None = None) -> Page[AuditEntry]: ...

    async def agent_tools(self, slug: str | None = None, *, sandbox: str | None = None,
                          app: str | None = None) -> CatalogResult: ...
    async def call_tool(self, name: str, arguments: dict[str, Any] | None, *, agent: str,
                        sandbox: str | None = None) -> ToolCallOutcome: ...
    async def pull_source(self, source_id: str, *, sandbox: str | None = None) -> PullResult: ...

    async def aclose(self) -> None: ...


class LocalBackend:
    """The registry in this process."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._catalog: Catalog | None = None
        self._gateway: Gateway | None = None
        self._ingestor: Ingestor | None = None
        self._recovery_started = threading.Lock()
        self._recovery_begun = False
        self._recovered: anyio.Event | None = None
        self._recovery_thread: int | None = None
        self.sign_in_hook: Callable[[str, str | None], Awaitable[str | None]] | None = None
        """Where OAuth sign-ins started from chat wait (``serve``: its callback route)."""
        self._sign_ins: set[Any] = set()  # sign-ins finishing in the background

    @classmethod
    def open(cls, home: str | None = None, *, settings: Settings | None = None) -> LocalBackend:
        return cls(Registry.open(home, settings=settings))

    async def list_sandboxes(self) -> list[Sandbox]:
        return await off_loop(self.registry.list_sandboxes)

    async def page_sandboxes(self, *, limit: int | None = None,
                             cursor: str | None = None) -> Page[Sandbox]:
        return await off_loop(self.registry.page_sandboxes, limit=limit, cursor=cursor)

    async def create_sandbox(self, name: str) -> Sandbox:
        return self.registry.create_sandbox(name)

    async def get_sandbox(self, ref: str | None = None) -> Sandbox:
        return self.registry.get_sandbox(ref)

    async def list_sources(self, *, sandbox: str | None = None,
                           status: str | None = None) -> list[SourceView]:
        return await off_loop(self.registry.list_sources, sandbox=sandbox, status=status)

    async def page_sources(self, *, sandbox: str | None = None, status: str | None = None,
                           limit: int | None = None, cursor: str | None = None) -> Page[SourceView]:
        return await off_loop(self.registry.page_sources, sandbox=sandbox, status=status,
                               limit=limit, cursor=cursor)

    async def get_source(self, source_id: str, *, sandbox: str | None = None) -> SourceView:
        return self.registry.get_source(source_id, sandbox=sandbox)

    async def sources_at_url(self, url: str, *, sandbox: str | None = None) -> SameUrl:
        """The sandbox's sources (not disconnected) at ``url`` (`same_url`): indexed reads."""
        from concierge.registry.catalog_rows import sources_at_url

        sb = self.registry.get_sandbox(sandbox)
        return await off_loop(sources_at_url, self.registry.store, sb.id, url)

    async def register_source(self, body: dict[str, Any], *, sandbox: str | None = None) -> Outcome:
        return await self.registry.register(body, sandbox=sandbox)

    async def update_source(self, source_id: str, body: dict[str, Any], *,
                            sandbox: str | None = None) -> Outcome:
        return await self.registry.update(source_id, body, sandbox=sandbox)

    async def test_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return await self.registry.test(source_id, sandbox=sandbox)

    # OAuth sign-in and stdio logs (the CLI's; a RemoteBackend asks `serve` instead)
    async def begin_sign_in(self, source_id: str, *, sandbox: str | None = None, timeout: float | None = None) -> Any:
        return await self.registry.begin_sign_in(source_id, sandbox=sandbox, timeout=timeout)

    async def finish_sign_in(self, source_id: str, sign_in: Any) -> Outcome:
        return await self.registry.finish_sign_in(source_id, sign_in)

    def check_source_url(self, url: str) -> None:
        """Refuse a URL the registry's URL policy refuses (`Registry.check_url_policy`)."""
        self.registry.check_url_policy(url)

    def process_log(self, source_id: str, *, lines: int = 20) -> list[str]:
        return self.registry.stdio_log_tail(source_id, lines=lines)

    async def start_sign_in(self, source_id: str, *, sandbox: str | None = None) -> str | None:
        """Start an OAuth sign-in that finishes in the background (the health check follows);
        its authorize URL. ``sign_in_hook`` (set by ``serve``) holds it in the server, with its
        callback route; else a loopback listener of this process waits (the REPL's case)."""
        if self.sign_in_hook is not None:
            return await self.sign_in_hook(source_id, sandbox)
        import asyncio

        sign_in = await self.registry.begin_sign_in(source_id, sandbox=sandbox)
        task = asyncio.get_running_loop().create_task(self.registry.finish_sign_in(source_id, sign_in))
        self._sign_ins.add(task)
        task.add_done_callback(self._sign_ins.discard)
        return sign_in.authorize_url

    async def pause_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return self.registry.pause(source_id, sandbox=sandbox)

    async def resume_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return await self.registry.resume(source_id, sandbox=sandbox)

    async def revoke_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return self.registry.revoke(source_id, sandbox=sandbox)

    async def delete_source(self, source_id: str, *, sandbox: str | None = None) -> None:
        self.registry.delete_source(source_id, sandbox=sandbox)

    async def held_tools(self, source_id: str, *, sandbox: str | None = None) -> list[HeldTool]:
        self.registry.get_source(source_id, sandbox=sandbox)  # 404 for another sandbox's
        return self.registry.pins.held(source_id)

    async def approve_tools(self, source_id: str, tools: list[str] | None = None, *,
                            sandbox: str | None = None) -> ApprovalResult:
        return self.registry.pins.approve(source_id, tools, sandbox=sandbox)

    async def list_agents(self, *, sandbox: str | None = None) -> list[Agent]:
        return await off_loop(self.registry.list_agents, sandbox=sandbox)

    async def page_agents(self, *, sandbox: str | None = None, limit: int | None = None,
                          cursor: str | None = None) -> Page[Agent]:
        return await off_loop(self.registry.page_agents, sandbox=sandbox, limit=limit, cursor=cursor)

    async def get_agent(self, slug: str, *, sandbox: str | None = None) -> Agent:
        return self.registry.get_agent(slug, sandbox=sandbox)

    async def create_agent(self, body: dict[str, Any], *, sandbox: str | None = None) -> Agent:
        return self.registry.create_agent(body, sandbox=sandbox)

    async def update_agent(self, slug: str, body: dict[str, Any], *,
                           sandbox: str | None = None) -> Agent:
        return self.registry.update_agent(slug, body, sandbox=sandbox)

    async def audit(self, *, sandbox: str | None = None, limit: int = 50) -> list[AuditEntry]:
        return await off_loop(self.registry.audit, sandbox=sandbox, limit=limit)

    async def page_audit(self, *, sandbox: str | None = None, limit: int | None = None,
                         cursor: str | None = None) -> Page[AuditEntry]:
        return await off_loop(self.registry.page_audit, sandbox=sandbox, limit=limit, cursor=cursor)

    # -- interrupted health checks --------------------------------------------------------------

    async def recover_interrupted_checks(self) -> list[Outcome]:
        """Re-check, once per backend, the sources whose health check was interrupted (a process
        killed mid-check left them ``error`` / "health check did not complete"). Run before the
        first catalog, tool call or pull, and at ``serve`` start-up; a second caller while it
        runs in this event loop waits for it, so the first catalog sees the re-checked status."""
        with self._recovery_started:
            first = not self._recovery_begun
            self._recovery_begun = True
            if first:
                self._recovered = anyio.Event()
                self._recovery_thread = threading.get_ident()
        if not first:
            # An event is waited for only in the loop that made it; `serve` runs the recovery
            # in a thread of its own, and requests meanwhile see the sources as they are.
            if (self._recovered is not None and not self._recovered.is_set()
                    and self._recovery_thread == threading.get_ident()):
                await self._recovered.wait()
            return []
        assert self._recovered is not None
        try:
            return await self.registry.recheck_interrupted()
        finally:
            self._recovered.set()

    # -- catalog, gateway, pull (built, and their modules imported, on first use: they load
    # the mcp SDK, which commands like `source list` never need) ----------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from concierge.registry.catalog import Catalog

            self._catalog = Catalog(self.registry)
        return self._catalog

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            from concierge.registry.gateway import Gateway

            self._gateway = Gateway(self.registry, self.catalog)
        return self._gateway

    @property
    def ingestor(self) -> Ingestor:
        if self._ingestor is None:
            from concierge.registry.ingest import Ingestor

            self._ingestor = Ingestor(self.registry, self.gateway)
        return self._ingestor

    async def agent_tools(self, slug: str | None = None, *, sandbox: str | None = None,
                          app: str | None = None) -> CatalogResult:
        await self.recover_interrupted_checks()
        return await self.catalog.resolve(slug, sandbox=sandbox, app=app)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None, *, agent: str,
                        sandbox: str | None = None) -> ToolCallOutcome:
        await self.recover_interrupted_checks()
        return await self.gateway.call(name, arguments, agent=agent, sandbox=sandbox)

    async def pull_source(self, source_id: str, *, sandbox: str | None = None) -> PullResult:
        await self.recover_interrupted_checks()
        return await self.ingestor.pull(source_id, sandbox=sandbox)

    async def aclose(self) -> None:
        pending = list(self._sign_ins)
        for task in pending:
            task.cancel()
        if pending:  # let them end before the store closes under them (bounded: a sign-in may linger)
            import asyncio

            await asyncio.wait(pending, timeout=5)
        if self._catalog is not None:  # closes the pooled sessions (the gateway shares them)
            await self._catalog.aclose()
        self.registry.close()
