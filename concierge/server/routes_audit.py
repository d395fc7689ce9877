"""The audit log, newest first."""

from __future__ import annotations

from concierge.registry import AuditEntry
from concierge.registry.pages import Page
from concierge.server.api import ApiRoute, Ctx, PageOf, page_query

__all__ = ["ROUTES"]

_DEFAULT = 50


async def audit_all(ctx: Ctx) -> Page[AuditEntry]:
    return await ctx.backend.page_audit(sandbox=ctx.caller.sandbox_id, **ctx.page_args(_DEFAULT))


async def audit_sandbox(ctx: Ctx) -> Page[AuditEntry]:
    return await ctx.backend.page_audit(sandbox=ctx.sandbox_ref(), **ctx.page_args(_DEFAULT))


ROUTES = [
    ApiRoute("GET", "/api/v1/storage/audit", audit_all,
             "The audit log of every sandbox this key may use", "viewer", "audit",
             response=PageOf(AuditEntry, _DEFAULT), query=page_query(_DEFAULT)),
    ApiRoute("GET", "/api/v1/storage/sandboxes/{sandbox_id}/audit", audit_sandbox,
             "A sandbox's audit log", "viewer", "audit", response=PageOf(AuditEntry, _DEFAULT),
             query=page_query(_DEFAULT)),
]
