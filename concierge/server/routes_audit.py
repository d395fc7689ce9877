"""The audit log, newest first."""

from __future__ import annotations

from concierge.registry import AuditEntry
from concierge.server.api import ApiRoute, Ctx, ListOf, Query

__all__ = ["ROUTES"]

_LIMIT = Query("limit", "How many entries (1-1000, default 50).",
               {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50})


async def audit_all(ctx: Ctx) -> list[AuditEntry]:
    limit = ctx.int_query("limit", 50, lo=1, hi=1000)
    scope = ctx.caller.sandbox_id
    return await ctx.backend.audit(sandbox=scope, limit=limit)


async def audit_sandbox(ctx: Ctx) -> list[AuditEntry]:
    limit = ctx.int_query("limit", 50, lo=1, hi=1000)
    return await ctx.backend.audit(sandbox=ctx.sandbox_ref(), limit=limit)


ROUTES = [
    ApiRoute("GET", "/api/v1/storage/audit", audit_all,
             "The audit log of every sandbox this key may use", "viewer", "audit",
             response=ListOf(AuditEntry), query=(_LIMIT,)),
    ApiRoute("GET", "/api/v1/storage/sandboxes/{sandbox_id}/audit", audit_sandbox,
             "A sandbox's audit log", "viewer", "audit", response=ListOf(AuditEntry), query=(_LIMIT,)),
]
