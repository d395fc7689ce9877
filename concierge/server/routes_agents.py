"""Agents, their live resolved catalog (with the trace), and tool calls through the gateway."""

from __future__ import annotations

from concierge.errors import NotFound, UnknownTool, ValidationFailed
from concierge.registry import Agent, AgentCreate, AgentUpdate
from concierge.registry.catalog_models import ToolCallOutcome
from concierge.registry.pages import Page
from concierge.server.api import ApiRoute, Ctx, PageOf, Query, page_query
from concierge.wire import CatalogView, ToolCall

__all__ = ["ROUTES"]

SB = "/api/v1/storage/sandboxes/{sandbox_id}"
AGENT = SB + "/agents/{slug}"

_APP = Query("app", "Only this app_namespace's tools (names stay those of the full catalog).")


async def list_agents(ctx: Ctx) -> Page[Agent]:
    return await ctx.backend.page_agents(sandbox=ctx.sandbox_ref(), **ctx.page_args())


async def create_agent(ctx: Ctx) -> Agent:
    return await ctx.backend.create_agent(await ctx.json(), sandbox=ctx.sandbox_ref())


async def show_agent(ctx: Ctx) -> Agent:
    return await ctx.backend.get_agent(ctx.param("slug"), sandbox=ctx.sandbox_ref())


async def update_agent(ctx: Ctx) -> Agent:
    return await ctx.backend.update_agent(ctx.param("slug"), await ctx.json(), sandbox=ctx.sandbox_ref())


async def agent_tools(ctx: Ctx) -> CatalogView:
    result = await ctx.backend.agent_tools(ctx.param("slug"), sandbox=ctx.sandbox_ref(),
                                           app=ctx.query("app"))
    return CatalogView.of(result)


async def sandbox_tools(ctx: Ctx) -> CatalogView:
    result = await ctx.backend.agent_tools(None, sandbox=ctx.sandbox_ref(), app=ctx.query("app"))
    return CatalogView.of(result)


async def call_tool(ctx: Ctx) -> ToolCallOutcome:
    sb = ctx.sandbox_ref()
    body = await ctx.json()
    name, arguments = body.get("name"), body.get("arguments")
    if not isinstance(name, str) or not name:
        raise ValidationFailed("name is required: the tool's advertised catalog name", field="name")
    if arguments is not None and not isinstance(arguments, dict):
        raise ValidationFailed("arguments must be a JSON object", field="arguments")
    if set(body) - {"name", "arguments"}:
        extra = ", ".join(sorted(set(body) - {"name", "arguments"}))
        raise ValidationFailed(f"unknown field(s): {extra}", field=extra)
    agent = await ctx.backend.get_agent(ctx.param("slug"), sandbox=sb)  # an unknown agent: 404
    try:
        return await ctx.backend.call_tool(name, arguments, agent=agent.slug, sandbox=sb)
    except NotFound as exc:
        # The agent exists: what is missing is the tool the body names, which the agent's live
        # catalog does not offer right now (a state the call conflicts with, not a bad request).
        raise UnknownTool(exc.detail) from None


ROUTES = [
    ApiRoute("GET", SB + "/agents", list_agents, "List a sandbox's agents", "viewer", "agents",
             response=PageOf(Agent), query=page_query()),
    ApiRoute("POST", SB + "/agents", create_agent, "Create an agent", "editor", "agents",
             body=AgentCreate, response=Agent, status=201, errors=(409,)),
    ApiRoute("GET", AGENT, show_agent, "Show an agent (by slug or id)", "viewer", "agents",
             response=Agent),
    ApiRoute("PATCH", AGENT, update_agent, "Update an agent; omitted fields keep their value",
             "editor", "agents", body=AgentUpdate, response=Agent),
    ApiRoute("GET", AGENT + "/tools", agent_tools,
             "What tools does this agent have right now: the live resolved catalog and its trace",
             "viewer", "catalog", response=CatalogView, query=(_APP,)),
    ApiRoute("GET", SB + "/tools", sandbox_tools,
             "The catalog an agent taking every user_mcp tool would see", "viewer", "catalog",
             response=CatalogView, query=(_APP,)),
    ApiRoute("POST", AGENT + "/tools/call", call_tool,
             "Call one of the agent's tools through the gateway (allowlists, rate cap)", "editor",
             "catalog", body=ToolCall, response=ToolCallOutcome, errors=(409, 429, 502)),
]
