"""user_mcp sources: the reference lifecycle routes and what a client needs around them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from concierge.errors import NotFound
from concierge.registry import Outcome, RegisterSource, SourceView, UpdateSource
from concierge.registry.catalog_models import ApprovalResult, HeldTool, PullResult
from concierge.server.auth import Role
from concierge.server.signins import start_or_say_why
from concierge.registry.models import RegisteredOutcome
from concierge.registry.pages import Page
from concierge.registry.validation import from_pydantic
from concierge.server.api import ApiRoute, Ctx, ListOf, PageOf, Query, page_query
from concierge.wire import DeleteResult, RegisterResponse

__all__ = ["ROUTES"]

SB = "/api/v1/storage/sandboxes/{sandbox_id}"
SRC = SB + "/sources/{source_id}"

_STATUS = Query("status", "Only sources with this status.",
                {"type": "string", "enum": ["active", "paused", "error", "auth_required", "disconnected"]})

STDIO_FIELDS = ("command", "args", "env", "secret_env", "cwd")


def require_stdio_owner(ctx: Ctx, body: dict[str, object], source: SourceView | None = None) -> None:
    """A stdio source runs a program on this server: only an owner may register or change one
    (and only on a server started with --allow-stdio: the registry refuses it otherwise)."""
    if body.get("transport") == "stdio" or (
            source is not None and source.transport == "stdio" and any(k in body for k in STDIO_FIELDS)):
        ctx.caller.require(Role.OWNER, "a stdio source (it runs a program on this server)")


async def list_all_sources(ctx: Ctx) -> Page[SourceView]:
    # A key limited to one sandbox pages through that sandbox's sources only.
    return await ctx.backend.page_sources(sandbox=ctx.caller.sandbox_id, status=ctx.query("status"),
                                          **ctx.page_args())


async def show_any_source(ctx: Ctx) -> SourceView:
    source_id = ctx.param("source_id")
    source = await ctx.backend.get_source(source_id)
    if not ctx.visible(source.sandbox_id):
        raise NotFound(f"no source {source_id!r}")  # another tenant's: not even its existence
    return source


async def list_sources(ctx: Ctx) -> Page[SourceView]:
    return await ctx.backend.page_sources(sandbox=ctx.sandbox_ref(), status=ctx.query("status"),
                                          **ctx.page_args())


async def show_source(ctx: Ctx) -> SourceView:
    return await ctx.backend.get_source(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


async def register(ctx: Ctx) -> RegisterResponse:
    sb = ctx.sandbox_ref()
    body = await ctx.json()
    require_stdio_owner(ctx, body)
    outcome = await ctx.backend.register_source(body, sandbox=sb)
    secret = outcome.webhook_secret if isinstance(outcome, RegisteredOutcome) else None
    fields = outcome.model_dump()
    sign_ins = ctx.services.sign_ins
    if sign_ins is not None and sign_ins.wants_sign_in(outcome):
        # the link to open; the callback route finishes the sign-in and runs the health check
        fields["authorize_url"], fields["detail"] = await start_or_say_why(ctx, str(outcome.data_source_id), sb)
    return RegisterResponse(**fields, webhook_secret=secret.get_secret_value() if secret else None)


async def update(ctx: Ctx) -> Outcome:
    sb = ctx.sandbox_ref()
    body = await ctx.json()
    require_stdio_owner(ctx, body, await ctx.backend.get_source(ctx.param("source_id"), sandbox=sb))
    return await ctx.backend.update_source(ctx.param("source_id"), body, sandbox=sb)


async def test(ctx: Ctx) -> Outcome:
    return await ctx.backend.test_source(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


async def revoke(ctx: Ctx) -> Outcome:
    return await ctx.backend.revoke_source(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


async def pause(ctx: Ctx) -> Outcome:
    return await ctx.backend.pause_source(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


async def resume(ctx: Ctx) -> Outcome:
    return await ctx.backend.resume_source(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


async def pull(ctx: Ctx) -> PullResult:
    return await ctx.backend.pull_source(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


class ApproveTools(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: list[str] | None = Field(default=None, description="Server tool names to approve (default: every held tool).")


async def held_tools(ctx: Ctx) -> list[HeldTool]:
    return await ctx.backend.held_tools(ctx.param("source_id"), sandbox=ctx.sandbox_ref())


async def approve_tools(ctx: Ctx) -> ApprovalResult:
    sb = ctx.sandbox_ref()
    body = await ctx.json()
    try:
        req = ApproveTools.model_validate(body)
    except ValidationError as exc:
        raise from_pydantic(exc) from None
    return await ctx.backend.approve_tools(ctx.param("source_id"), req.tools, sandbox=sb)


async def delete(ctx: Ctx) -> DeleteResult:
    source_id = ctx.param("source_id")
    await ctx.backend.delete_source(source_id, sandbox=ctx.sandbox_ref())
    return DeleteResult(data_source_id=source_id, deleted=True)


ROUTES = [
    ApiRoute("GET", "/api/v1/storage/sources", list_all_sources,
             "List sources in every sandbox this key may use", "viewer", "sources",
             response=PageOf(SourceView), query=(_STATUS, *page_query())),
    ApiRoute("GET", "/api/v1/storage/sources/{source_id}", show_any_source,
             "Show a source by id, whatever its sandbox", "viewer", "sources", response=SourceView),
    ApiRoute("GET", SB + "/sources", list_sources, "List a sandbox's sources", "viewer", "sources",
             response=PageOf(SourceView), query=(_STATUS, *page_query())),
    ApiRoute("POST", SB + "/sources/user-mcp", register,
             "Register a tenant-supplied MCP server as a user_mcp source", "editor", "sources",
             body=RegisterSource, response=RegisterResponse, errors=(409,),
             description="Validates, stores the credential in the vault, writes the row, then runs a "
                         "one-shot tools/list health check: status `active`, or `error` with "
                         "`health_error` (the row is kept). The answer carries the webhook signing "
                         "secret once. An `oauth` source nobody signed in to yet answers `status: "
                         "auth_required` with `authorize_url`, the link to open. A `stdio` source "
                         "needs an owner key and a server started with `--allow-stdio`."),
    ApiRoute("GET", SRC, show_source, "Show a source (never its credential)", "viewer", "sources",
             response=SourceView),
    ApiRoute("DELETE", SRC, delete, "Delete a source permanently (its row, secrets and ingested data)",
             "owner", "sources", response=DeleteResult),
    ApiRoute("PATCH", SRC + "/user-mcp", update,
             "Update a user_mcp source (config + optional credential rotation)", "editor", "sources",
             body=UpdateSource, response=Outcome, errors=(409,),
             description="Omitted fields keep their value; `token` replaces the vault secret. A changed "
                         "URL, auth or transport re-runs the health check."),
    ApiRoute("POST", SRC + "/user-mcp/test", test, "Re-run the health check", "viewer", "sources",
             response=Outcome, errors=(409,),
             description="A check, not a change of configuration: any key that may see the source may "
                         "run it (as the concierge's read-only test tool does). `active` on success, "
                         "`error` with `health_error` on failure; a paused source stays paused."),
    ApiRoute("POST", SRC + "/user-mcp/revoke", revoke,
             "Revoke: delete the secrets, status disconnected (terminal)", "editor", "sources",
             response=Outcome),
    ApiRoute("GET", SRC + "/user-mcp/held-tools", held_tools,
             "Tools held because their definition changed since approval (with the diff)", "viewer",
             "sources", response=ListOf(HeldTool),
             description="A tool whose listed definition (name, title, description, input and output "
                         "schema, annotations) differs from the one pinned at registration or at the last "
                         "approval, or that is new, is not advertised and its calls are refused until an "
                         "owner or editor approves it. As of the source's last listing or health check."),
    ApiRoute("POST", SRC + "/user-mcp/approve", approve_tools,
             "Approve held tool definitions (all, or the named tools)", "editor", "sources",
             body=ApproveTools, response=ApprovalResult, errors=(404, 409),
             description="Pins the held definitions exactly as last listed (what `held-tools` shows); a "
                         "definition that changed again since then stays held. Audited as "
                         "`source.tools_approved`."),
    ApiRoute("POST", SRC + "/pause", pause, "Pause: stop offering the source's tools", "editor",
             "sources", response=Outcome, errors=(409,)),
    ApiRoute("POST", SRC + "/resume", resume, "Resume a paused source and re-check it", "editor",
             "sources", response=Outcome, errors=(409,)),
    ApiRoute("POST", SRC + "/pull", pull, "Run the source's ingest_tool_calls now", "editor", "sources",
             response=PullResult, errors=(409, 429)),
]
