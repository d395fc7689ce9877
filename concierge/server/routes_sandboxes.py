"""Sandboxes: list (only the ones the key may see), create (owner, unscoped key), show."""

from __future__ import annotations

from concierge.errors import ValidationFailed
from concierge.registry import Sandbox
from concierge.registry.pages import Page
from concierge.server.api import ApiRoute, Ctx, PageOf, page_query
from concierge.server.auth import Role
from concierge.wire import SandboxCreate

__all__ = ["ROUTES"]

BASE = "/api/v1/storage/sandboxes"


async def list_sandboxes(ctx: Ctx) -> Page[Sandbox]:
    args = ctx.page_args()
    scope = ctx.caller.sandbox_id
    if scope is not None:  # a key limited to one sandbox sees that one only
        return Page[Sandbox](items=[] if args["cursor"] else [ctx.sandbox(scope)], total=1)
    return await ctx.backend.page_sandboxes(**args)


async def create_sandbox(ctx: Ctx) -> Sandbox:
    ctx.caller.require_global("creating a sandbox")
    ctx.caller.require(Role.OWNER, "creating a sandbox")
    body = await ctx.json()
    if set(body) != {"name"} or not isinstance(body["name"], str):
        raise ValidationFailed('send {"name": "..."} (1-64 letters, digits, _ and -)', field="name")
    return await ctx.backend.create_sandbox(body["name"])


async def show_sandbox(ctx: Ctx) -> Sandbox:
    return ctx.sandbox()


ROUTES = [
    ApiRoute("GET", BASE, list_sandboxes, "List the sandboxes this key may use", "viewer",
             "sandboxes", response=PageOf(Sandbox), query=page_query()),
    ApiRoute("POST", BASE, create_sandbox, "Create a sandbox (owner key not limited to a sandbox)",
             "owner", "sandboxes", body=SandboxCreate, response=Sandbox, status=201, errors=(409,)),
    ApiRoute("GET", BASE + "/{sandbox_id}", show_sandbox, "Show a sandbox (by id or name)", "viewer",
             "sandboxes", response=Sandbox),
]
