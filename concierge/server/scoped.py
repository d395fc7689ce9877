"""`ScopedBackend`: the registry as one API key may use it, for the concierge's tools over HTTP.

The concierge's tools take a ``sandbox`` argument the model fills in. Over HTTP the model must
not reach past the calling key: a key limited to one sandbox sees and changes only that one
(``sandbox=None`` means it), and a viewer's writes are refused here too — on top of the
engine's confirmation gate and the confirm endpoint's role check.
"""

from __future__ import annotations

from typing import Any

from concierge.backend import LocalBackend
from concierge.errors import NotFound, PermissionDenied
from concierge.registry import Agent, AuditEntry, Outcome, Sandbox, SourceView
from concierge.registry.catalog_models import (
    ApprovalResult,
    CatalogResult,
    HeldTool,
    PullResult,
    SameUrl,
    ToolCallOutcome,
)
from concierge.registry.pages import Page, check_limit
from concierge.server.auth import Principal, Role

__all__ = ["ScopedBackend"]


class ScopedBackend:
    """Implements the `Backend` protocol over a `LocalBackend`, within ``principal``'s reach."""

    def __init__(self, inner: LocalBackend, principal: Principal) -> None:
        self.inner = inner
        self.principal = principal

    # -- scope ------------------------------------------------------------------------------

    def _sandbox(self, ref: str | None) -> str:
        """The sandbox id a call may use (``None``: the key's own, else the default)."""
        scope = self.principal.sandbox_id
        if ref is None:
            return scope or self.inner.registry.get_sandbox(None).id
        try:
            sb = self.inner.registry.get_sandbox(ref)
        except NotFound:
            if scope is not None:
                raise PermissionDenied(f"this conversation is limited to one sandbox; {ref!r} is "
                                       "not it") from None
            raise
        if scope is not None and sb.id != scope:
            raise PermissionDenied(f"this conversation is limited to one sandbox; {ref!r} is not it")
        return sb.id

    def _source_sandbox(self, source_id: str, ref: str | None) -> str:
        if ref is not None:
            return self._sandbox(ref)
        source = self.inner.registry.get_source(source_id)
        if self.principal.sandbox_id is not None and source.sandbox_id != self.principal.sandbox_id:
            raise NotFound(f"no source {source_id!r}")
        return source.sandbox_id

    def _write(self, what: str) -> None:
        self.principal.require(Role.EDITOR, what)

    # -- sandboxes --------------------------------------------------------------------------

    async def list_sandboxes(self) -> list[Sandbox]:
        scope = self.principal.sandbox_id
        return [s for s in await self.inner.list_sandboxes() if scope is None or s.id == scope]

    async def page_sandboxes(self, *, limit: int | None = None,
                             cursor: str | None = None) -> Page[Sandbox]:
        scope = self.principal.sandbox_id
        if scope is None:
            return await self.inner.page_sandboxes(limit=limit, cursor=cursor)
        check_limit(limit)
        own = await self.inner.get_sandbox(scope)
        return Page[Sandbox](items=[] if cursor else [own], total=1)

    async def create_sandbox(self, name: str) -> Sandbox:
        self.principal.require_global("creating a sandbox")
        self.principal.require(Role.OWNER, "creating a sandbox")
        return await self.inner.create_sandbox(name)

    async def get_sandbox(self, ref: str | None = None) -> Sandbox:
        return await self.inner.get_sandbox(self._sandbox(ref))

    # -- sources ----------------------------------------------------------------------------

    async def list_sources(self, *, sandbox: str | None = None,
                           status: str | None = None) -> list[SourceView]:
        if sandbox is None and self.principal.sandbox_id is None:
            return await self.inner.list_sources(status=status)
        return await self.inner.list_sources(sandbox=self._sandbox(sandbox), status=status)

    async def page_sources(self, *, sandbox: str | None = None, status: str | None = None,
                           limit: int | None = None, cursor: str | None = None) -> Page[SourceView]:
        where = None if sandbox is None and self.principal.sandbox_id is None else self._sandbox(sandbox)
        return await self.inner.page_sources(sandbox=where, status=status, limit=limit, cursor=cursor)

    async def get_source(self, source_id: str, *, sandbox: str | None = None) -> SourceView:
        return await self.inner.get_source(source_id, sandbox=self._source_sandbox(source_id, sandbox))

    async def sources_at_url(self, url: str, *, sandbox: str | None = None) -> SameUrl:
        return await self.inner.sources_at_url(url, sandbox=self._sandbox(sandbox))

    async def register_source(self, body: dict[str, Any], *, sandbox: str | None = None) -> Outcome:
        self._write("registering a source")
        if body.get("transport") == "stdio":  # it runs a program on the server's machine
            self.principal.require(Role.OWNER, "a stdio source (it runs a program on this server)")
        return await self.inner.register_source(body, sandbox=self._sandbox(sandbox))

    async def update_source(self, source_id: str, body: dict[str, Any], *,
                            sandbox: str | None = None) -> Outcome:
        self._write("updating a source")
        if any(k in body for k in ("command", "args", "env", "secret_env", "cwd")):
            self.principal.require(Role.OWNER, "changing a stdio source (it runs a program on this server)")
        return await self.inner.update_source(source_id, body,
                                              sandbox=self._source_sandbox(source_id, sandbox))

    def check_source_url(self, url: str) -> None:
        self.inner.check_source_url(url)

    async def start_sign_in(self, source_id: str, *, sandbox: str | None = None) -> str | None:
        self._write("signing a source in")
        return await self.inner.start_sign_in(source_id, sandbox=self._source_sandbox(source_id, sandbox))

    async def test_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        return await self.inner.test_source(source_id, sandbox=self._source_sandbox(source_id, sandbox))

    async def pause_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        self._write("pausing a source")
        return await self.inner.pause_source(source_id, sandbox=self._source_sandbox(source_id, sandbox))

    async def resume_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        self._write("resuming a source")
        return await self.inner.resume_source(source_id, sandbox=self._source_sandbox(source_id, sandbox))

    async def revoke_source(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        self._write("revoking a source")
        return await self.inner.revoke_source(source_id, sandbox=self._source_sandbox(source_id, sandbox))

    async def held_tools(self, source_id: str, *, sandbox: str | None = None) -> list[HeldTool]:
        return await self.inner.held_tools(source_id, sandbox=self._source_sandbox(source_id, sandbox))

    async def approve_tools(self, source_id: str, tools: list[str] | None = None, *,
                            sandbox: str | None = None) -> ApprovalResult:
        self._write("approving changed tools")
        return await self.inner.approve_tools(source_id, tools, sandbox=self._source_sandbox(source_id, sandbox))

    async def delete_source(self, source_id: str, *, sandbox: str | None = None) -> None:
        raise PermissionDenied("permanent deletion is not done from chat; use "
                               f"`concierge source delete {source_id} --yes`")

    # -- agents, audit, catalog -------------------------------------------------------------

    async def list_agents(self, *, sandbox: str | None = None) -> list[Agent]:
        return await self.inner.list_agents(sandbox=self._sandbox(sandbox))

    async def page_agents(self, *, sandbox: str | None = None, limit: int | None = None,
                          cursor: str | None = None) -> Page[Agent]:
        return await self.inner.page_agents(sandbox=self._sandbox(sandbox), limit=limit, cursor=cursor)

    async def get_agent(self, slug: str, *, sandbox: str | None = None) -> Agent:
        return await self.inner.get_agent(slug, sandbox=self._sandbox(sandbox))

    async def create_agent(self, body: dict[str, Any], *, sandbox: str | None = None) -> Agent:
        self._write("creating an agent")
        return await self.inner.create_agent(body, sandbox=self._sandbox(sandbox))

    async def update_agent(self, slug: str, body: dict[str, Any], *,
                           sandbox: str | None = None) -> Agent:
        self._write("updating an agent")
        return await self.inner.update_agent(slug, body, sandbox=self._sandbox(sandbox))

    async def audit(self, *, sandbox: str | None = None, limit: int = 50) -> list[AuditEntry]:
        if sandbox is None and self.principal.sandbox_id is None:
            return await self.inner.audit(limit=limit)
        return await self.inner.audit(sandbox=self._sandbox(sandbox), limit=limit)

    async def page_audit(self, *, sandbox: str | None = None, limit: int | None = None,
                         cursor: str | None = None) -> Page[AuditEntry]:
        where = None if sandbox is None and self.principal.sandbox_id is None else self._sandbox(sandbox)
        return await self.inner.page_audit(sandbox=where, limit=limit, cursor=cursor)

    async def agent_tools(self, slug: str | None = None, *, sandbox: str | None = None,
                          app: str | None = None) -> CatalogResult:
        return await self.inner.agent_tools(slug, sandbox=self._sandbox(sandbox), app=app)

    async def call_tool(self, name: str, arguments: dict[str, Any] | None, *, agent: str,
                        sandbox: str | None = None) -> ToolCallOutcome:
        self._write("calling an agent's tool")
        return await self.inner.call_tool(name, arguments, agent=agent, sandbox=self._sandbox(sandbox))

    async def pull_source(self, source_id: str, *, sandbox: str | None = None) -> PullResult:
        self._write("pulling a source")
        return await self.inner.pull_source(source_id, sandbox=self._source_sandbox(source_id, sandbox))

    async def aclose(self) -> None:
        """The inner backend belongs to the server."""
