"""The agent tools: list and create agents, an agent's live catalog, and one tool in detail."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from concierge.agent.toolkit._base import ToolArgumentError, ToolContext
from concierge.agent.toolkit._sources import sandbox_of
from concierge.agent.toolkit.args import (
    AgentToolsArgs,
    CreateAgentArgs,
    DescribeToolArgs,
    PageAgentsArgs,
    UpdateAgentArgs,
)
from concierge.agent.toolkit.results import (
    AgentCreated,
    AgentList,
    AgentRow,
    AgentUpdated,
    Catalog,
    ToolDescription,
)
from concierge.errors import Ambiguous, ConciergeError, NotFound, Unsupported
from concierge.registry import validation as rules
from concierge.registry.catalog_models import CatalogResult, CatalogTool
from concierge.registry.allowlists import unmatched
from concierge.registry.models import AgentCreate, AgentUpdate

__all__ = ["agent_tools", "create_agent", "describe_tool", "list_agents", "prepare_create_agent",
           "prepare_update_agent", "summary_create_agent", "summary_update_agent", "update_agent"]


async def list_agents(ctx: ToolContext, args: PageAgentsArgs, _: Any) -> AgentList:
    page = await ctx.backend.page_agents(sandbox=sandbox_of(ctx, args.sandbox), limit=args.limit,
                                         cursor=args.cursor)
    agents = sorted(page.items, key=lambda a: a.slug)
    return AgentList(agents=[AgentRow(slug=a.slug, name=a.name, status=a.status,
                                      tool_allowlist=a.tool_allowlist or "all") for a in agents],
                     total=page.total, more=page.more, next_cursor=page.next_cursor)


async def _catalog(ctx: ToolContext, agent: str | None, sandbox: str | None,
                   app: str | None = None) -> CatalogResult:
    resolve = getattr(ctx.backend, "agent_tools", None)
    if resolve is None:
        raise Unsupported("this backend cannot resolve tool catalogs")
    result: CatalogResult = await resolve(agent, sandbox=sandbox_of(ctx, sandbox), app=app)
    return result


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def agent_tools(ctx: ToolContext, args: AgentToolsArgs, _: Any) -> Catalog:
    result = await _catalog(ctx, args.agent, args.sandbox, args.app)
    trace = result.trace
    counted: dict[str, Any] = {}
    if trace.sources_skipped_omitted:  # thousands of paused sources are counted, not itemized
        counted = {"sources_skipped_by_reason": trace.sources_skipped_by_reason,
                   "sources_skipped_omitted": trace.sources_skipped_omitted}
    if trace.tools_left_out:  # listed by the server, not offered: say which and why
        counted["tools_left_out"] = [{"name": t["name"], "reason": t["reason"]} for t in trace.tools_left_out[:20]]
    if trace.tools_held:
        counted["tools_held"] = [{"name": h.name or h.tool, "tool": h.tool, "source_id": h.source_id,
                                  "status": h.status} for h in trace.tools_held[:20]]
    status: dict[str, str] = {}  # (only when not active: the result stays as short as before)
    if result.agent is not None:  # a paused agent's calls are all refused: its tools are for later
        agent = await ctx.backend.get_agent(result.agent, sandbox=sandbox_of(ctx, args.sandbox))
        status = {"agent_status": agent.status} if agent.status != "active" else {}
    return Catalog.model_validate({
        "agent": result.agent, **status, "count": result.count, "by_app": result.by_app,
        "tools": [{"name": t.name, "app": t.app, "description": _short(t.description, 160)}
                  for t in result.tools],
        "trace": {
            "sources_resolved": trace.sources_resolved,
            "sources_skipped": [s.model_dump(exclude_none=True) for s in trace.sources_skipped],
            **counted,
            "allowlist_filtered_out": trace.allowlist_filtered_out,
            "allowlist_missing_entries": trace.allowlist_missing_entries,
            "collisions": trace.collisions,
        },
    })


def _find_tool(tools: list[CatalogTool], wanted: str) -> list[CatalogTool]:
    """Exact catalog name, else exact name on the server; then the same ignoring case."""
    for norm in (str, str.casefold):
        key = norm(wanted)
        for attr in ("name", "original_name"):
            hits = [t for t in tools if norm(getattr(t, attr)) == key]
            if hits:
                return hits
    return []


async def describe_tool(ctx: ToolContext, args: DescribeToolArgs, _: Any) -> ToolDescription:
    """One tool of the live catalog: what it does and its input schema (its arguments)."""
    result = await _catalog(ctx, args.agent, args.sandbox)
    hits = _find_tool(result.tools, args.tool.strip())
    if not hits:
        where = f"agent {result.agent}'s catalog" if result.agent else "this sandbox's catalog"
        known = ", ".join(t.name for t in result.tools[:30]) or "no tools"
        raise NotFound(f"no tool {args.tool!r} in {where} (tools: {known})")
    if len(hits) > 1:
        listed = ", ".join(f"{t.name} (from {t.source_name})" for t in hits)
        raise Ambiguous(f"several tools are called {args.tool!r}: {listed}. Ask the person which one "
                       "and pass its catalog name.")
    t = hits[0]
    return ToolDescription(name=t.name, app=t.app, source_id=t.source_id, source_name=t.source_name,
                           original_name=t.original_name, description=t.description,
                           input_schema=t.input_schema, agent=result.agent)


async def _unmatched(ctx: ToolContext, allowlist: list[str] | None, sandbox_id: str) -> list[str]:
    """The allowlist entries that name no tool the sandbox offers now, each with the closest
    real names (told before the yes: a typo in an allowlist silently gives the agent nothing).
    Empty when it cannot be told."""
    import difflib

    if not allowlist:
        return []
    try:
        result = await _catalog(ctx, None, sandbox_id)
    except ConciergeError:
        return []
    names = [t.name for t in result.tools]
    out = []
    for entry in unmatched(allowlist, names):
        close = difflib.get_close_matches(entry, names, n=2, cutoff=0.8)
        out.append(entry + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    return out


def _unmatched_note(entries: list[str]) -> str:
    if not entries:
        return ""
    one = len(entries) == 1
    return (" Note: no tool in the sandbox is called " + ", ".join(entries) + " right now; "
            + ("that entry matches" if one else "those entries match") + " nothing until a source offers "
            + ("it." if one else "them."))


async def prepare_update_agent(ctx: ToolContext, args: UpdateAgentArgs) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.tool_allowlist is not None:
        body["tool_allowlist"] = args.tool_allowlist
    if args.allow_all_tools:
        body["tool_allowlist"] = []
    if args.status is not None:
        body["status"] = args.status
    if not body:
        raise ToolArgumentError("nothing to change: give a name, a tool_allowlist, allow_all_tools or a status")
    try:
        AgentUpdate.model_validate(body)
    except ValidationError as exc:
        raise rules.from_pydantic(exc) from None
    sb = await ctx.backend.get_sandbox(sandbox_of(ctx, args.sandbox))
    agent = await ctx.backend.get_agent(args.agent, sandbox=sb.id)
    return {"sandbox": sb.name, "sandbox_id": sb.id, "body": body, "before": agent.tool_allowlist,
            "before_status": agent.status, "slug": agent.slug,
            "unmatched": await _unmatched(ctx, body.get("tool_allowlist"), sb.id)}


def summary_update_agent(args: UpdateAgentArgs, prep: dict[str, Any]) -> str:
    parts = []
    if args.name:
        parts.append(f'rename it to "{args.name}"')
    if args.status == "paused":
        parts.append("pause it: the gateway refuses its tool calls until it is resumed")
    elif args.status == "active":
        parts.append("resume it: it can call its tools again" + (
            "" if prep.get("before_status") == "paused" else f' (now: {prep.get("before_status")})'))
    if "tool_allowlist" in prep["body"]:
        new = prep["body"]["tool_allowlist"]
        before = ", ".join(prep["before"]) or "every tool"
        parts.append(("let it use every tool" if not new else "let it use only " + ", ".join(new))
                     + f" (now: {before})")
    return (f'Update the agent {prep["slug"]} in sandbox "{prep["sandbox"]}": ' + "; ".join(parts) + "."
            + _unmatched_note(prep.get("unmatched", [])))


async def update_agent(ctx: ToolContext, args: UpdateAgentArgs, prep: dict[str, Any]) -> AgentUpdated:
    agent = await ctx.backend.update_agent(prep["slug"], prep["body"], sandbox=prep["sandbox_id"])
    return AgentUpdated(id=agent.id, slug=agent.slug, name=agent.name, sandbox=prep["sandbox"],
                        status=agent.status, previous_status=prep.get("before_status", agent.status),
                        tool_allowlist=agent.tool_allowlist or "all",
                        previous_allowlist=prep["before"] or "all", unmatched=prep.get("unmatched", []))


async def prepare_create_agent(ctx: ToolContext, args: CreateAgentArgs) -> dict[str, Any]:
    body: dict[str, Any] = {"slug": args.slug}
    if args.name is not None:
        body["name"] = args.name
    if args.tool_allowlist is not None:
        body["tool_allowlist"] = args.tool_allowlist
    try:
        request = AgentCreate.model_validate(body)
    except ValidationError as exc:
        raise rules.from_pydantic(exc) from None
    sb = await ctx.backend.get_sandbox(sandbox_of(ctx, args.sandbox))
    return {"sandbox": sb.name, "sandbox_id": sb.id, "body": request.model_dump(exclude_defaults=True),
            "unmatched": await _unmatched(ctx, args.tool_allowlist, sb.id)}


def summary_create_agent(args: CreateAgentArgs, prep: dict[str, Any]) -> str:
    name = f' ("{args.name}")' if args.name and args.name != args.slug else ""
    tools = ("that may use only " + ", ".join(args.tool_allowlist) if args.tool_allowlist
             else "that may use every tool in the sandbox")
    return (f'Create the agent {args.slug}{name} in sandbox "{prep["sandbox"]}", {tools}.'
            + _unmatched_note(prep.get("unmatched", [])))


async def create_agent(ctx: ToolContext, args: CreateAgentArgs, prep: dict[str, Any]) -> AgentCreated:
    body = {"slug": args.slug} | prep["body"]
    agent = await ctx.backend.create_agent(body, sandbox=prep["sandbox_id"])
    return AgentCreated(id=agent.id, slug=agent.slug, name=agent.name, sandbox=prep["sandbox"],
                        status=agent.status, tool_allowlist=agent.tool_allowlist or "all",
                        unmatched=prep.get("unmatched", []))
