"""What the planner says: fixed replies by kind, and the answer to each tool's result.

`REPLIES` holds the fixed texts (help, greetings, what it cannot do — each with the CLI
command that does it); `TOOL_REPLIES` maps a tool name to the function that turns its typed
result into a sentence. Registry messages are shown in the person's words: field names as
they know them (`FIELD_WORDS`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from concierge.agent.toolkit.results import (
    AgentCreated,
    AgentUpdated,
    AgentList,
    ApprovedTools,
    Catalog,
    CatalogTrace,
    DeleteCommand,
    HealthReport,
    HeldToolRow,
    Lifecycle,
    SandboxCreated,
    SandboxList,
    SandboxSwitch,
    SourceDetails,
    SourceList,
    ToolDescription,
    ToolError,
    ToolResult,
)

__all__ = ["CONFIGURE", "FIELD_WORDS", "REPLIES", "TOOL_REPLIES", "in_user_words", "plain_error",
           "pending_words", "reply_for", "sentence", "status_words", "tools_count"]

CONFIGURE = ("To talk freely, configure a model: set OPENAI_API_KEY (plus OPENAI_BASE_URL for "
             "another OpenAI-compatible server, and CONCIERGE_MODEL to pick the model).")

REPLIES: dict[str, str] = {
    "help": """I can help you connect your own MCP servers to your agents. Try:
- "Add my MCP server at https://mcp.example.com/mcp with a bearer token"
- "Connect https://mcp.example.com/mcp, it uses OAuth", "add the server that runs `uvx mcp-server-git`"
- "Test the health of my custom MCP source" (or "check all my sources")
- "Show me acme" (status, last check, rate caps, allowed tools, auth)
- "Rename acme to Acme prod and set its rate cap to 30"
- "Rotate the token for acme", "switch acme to no auth", "move acme to https://…/mcp"
- "Only allow search_docs on acme", "allow all tools on acme again"
- "Approve the changed tools on acme" (a tool whose definition changed is held until then)
- "Pause acme", "resume acme", "revoke my custom MCP source"
- "What tools does my support agent have right now?", "what does search_docs do?"
- "Create an agent called support that can only use acme_* tools"
- "List my sandboxes", "switch to staging"
I'm the offline planner, so I only understand requests like these. """ + CONFIGURE,
    "greet": ("Hello! I can connect your MCP servers to your agents: register, test, change, pause, "
              "resume or revoke them, and show what tools an agent has. What would you like to do? "
              '(Say "help" for examples.)'),
    "thanks": "You're welcome. Anything else?",
    "unknown": ("Sorry, I didn't understand that. I can register, test, update, pause, resume or "
                "revoke your MCP sources, show them, list them, and show an agent's tools — say "
                "\"help\" for examples. " + CONFIGURE),
    "cancelled": "OK, I've stopped. Nothing was changed.",
    "unsupported_alerts": ("I can't set up alerts or notifications. To watch your sources, run "
                           "`concierge source list --status error` (or `concierge source user-mcp test "
                           "ID`, which exits 1 when the check fails) from cron or your monitoring."),
    "unsupported_run_tool": ("I don't run tools myself — your agents do, through the gateway. To try "
                             "one by hand: `concierge tool call {tool} --agent SLUG --args "
                             "'{{\"name\": \"value\"}}'`."),
    "unsupported_delete_agent": ("I can't delete agents (and there is no command for it yet). To "
                                 "change what an agent may use, run `concierge agent update SLUG "
                                 "--allowlist TOOL` (once per tool)."),
    "unsupported_copy": ("I can't copy a source into another sandbox (its credential is never copied "
                         "either). Register it there: say \"switch to\" and the sandbox's name, then "
                         "\"add\" and the server's URL; I'll ask for its credential again."),
    "unsupported_reveal": ("I can't show a stored credential: it is kept encrypted and is never shown, not "
                           "even to me. If it is lost, get a new one from the server's admin and say \"rotate "
                           "the token for\" and the source's name."),
    "unsupported_undo": ("I can't undo a change by itself; tell me what to set back (\"resume demo\" after a "
                         "pause, \"demo can use all its tools again\", \"rename it back to …\"). A revoke "
                         "can't be undone: register the server again. `concierge audit` shows what changed."),
    "unsupported_remove_tools": ("A source offers either all its tools or only the ones you list, so tell me the "
                                 "ones to keep: say \"<source> should only offer <tool>, <tool>\" (\"what tools "
                                 "does <source> have?\" lists them). To take a tool away from one agent "
                                 "instead, say \"<agent> shouldn't use <tool>\"."),
    "unsupported_audit": ("I can't show the audit log here; run `concierge audit` (add `--sandbox "
                          "NAME` or `--limit N`)."),
    "unsupported_model": ("I'm the offline planner, so I can't switch models myself. " + CONFIGURE +
                          " Then start `concierge chat` again (or pass `--model NAME`)."),
    "unsupported_keys": ("API keys for the HTTP service are made with the CLI: `concierge keys create "
                         "--sandbox NAME --role editor` (the key is shown once)."),
    "unsupported_gateway": ("To let Claude Code, Cursor or another MCP client use an agent's tools, "
                            "run `concierge gateway --agent SLUG --port 8766` and point the client at "
                            "http://127.0.0.1:8766/mcp."),
    "unsupported_pull": ("Pulling is done from the CLI: `concierge source pull ID` runs the source's "
                         "ingest tool calls and stores what is new."),
}

FIELD_WORDS: dict[str, str] = {
    "base_url": "the URL", "url": "the URL", "auth_header": "the header name",
    "app_namespace": "the namespace", "rate_cap_per_minute": "the rate cap",
    "webhook_rate_cap_per_minute": "the webhook rate cap", "allowed_tools": "the list of allowed tools",
    "tool_allowlist": "the agent's allowlist", "auth_kind": "the auth scheme", "token_ref": "the token",
    "slug": "the agent's name",
}
"""The registry's field names as the person knows them."""


def in_user_words(detail: str) -> str:
    """A registry message with its field names said the way the person knows them."""
    for field, words in sorted(FIELD_WORDS.items(), key=lambda kv: -len(kv[0])):
        detail = re.sub(rf"(?<![\w'])(?:the )?{field}\b:?", words, detail)  # "field: must" -> "the x must"
    return detail


def sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def plain_error(text: str | None, kind: str | None = None) -> str:
    """A connector error for people: its cause only (without the ``<kind>: `` it starts with,
    ``kind`` being the one stored with it, and without the advice after " — "), one stop."""
    text = (text or "the health check failed").strip()
    if kind:
        text = text.removeprefix(f"{kind}: ")
    text = text.split(" — ")[0].rstrip(" .")
    return text + "."


def status_words(status: str) -> str:
    return {"disconnected": "revoked", "error": "failing its health check",
            "auth_required": "waiting for a sign-in"}.get(status, status)


def tools_count(n: Any) -> str:
    return "1 tool" if n == 1 else f"{n} tools"


def _healthy(result: Lifecycle) -> str:
    """ "healthy: 4 tools in 12 ms" -> "4 tools answered in 12 ms"."""
    detail = str(result.detail or "").removeprefix("healthy: ")
    return detail.replace(" in ", " answered in ", 1)


def _failed(label: str, result: Lifecycle) -> str:
    cause = f"{plain_error(result.health_error, result.health_error_kind)} {result.hint or ''}".strip()
    return (f" failed its health check: {cause} The source is kept (status error); once it's "
            f'fixed, say "test {label}".')


def _register(args: dict[str, Any], result: Lifecycle) -> str:
    label = result.name or args.get("name", "")
    runs = f" (it runs `{result.command_line}` on this machine)" if result.command_line else ""
    if result.status == "active":
        return (f'Done — "{label}"{runs} is registered in sandbox "{result.sandbox}" and healthy, with '
                f"{tools_count(result.tool_count)} (their names start with {result.namespace}). "
                "Agents in this sandbox can use them now.")
    if result.status == "auth_required":
        if result.authorize_url:
            return (f'I registered "{label}"; it signs in with OAuth. Open this link to sign in: '
                    f"{result.authorize_url} — the source becomes active once you have.")
        return (f'I registered "{label}", but it needs a sign-in that could not start here: '
                f"{plain_error(result.hint or result.health_error, result.health_error_kind)} Sign in with: "
                f"concierge source user-mcp authorize {result.data_source_id}")
    return f'I registered "{label}"{runs}, but it' + _failed(label, result)


def _test(args: dict[str, Any], result: Lifecycle) -> str:
    label = result.name or args.get("source", "")
    if result.status == "active":
        return f'"{label}" is healthy: {_healthy(result)}.'
    if result.status == "paused":
        return f'"{label}" is paused; its check result: {result.detail}.'
    cause = f"{plain_error(result.health_error, result.health_error_kind)} {result.hint or ''}".strip()
    return f'"{label}" is failing its health check: {cause} Once it\'s fixed, say "test {label}" again.'


def seconds(value: float) -> str:
    """``120.0`` -> "120 seconds" (and "2 minutes" in brackets from two minutes on)."""
    shown = f"{value:g}"
    text = f"{shown} second" + ("" if shown == "1" else "s")
    if value >= 120 and value % 60 == 0:
        text += f" ({value / 60:g} minutes)"
    return text


def _update(args: dict[str, Any], result: Lifecycle) -> str:
    label = result.name or args.get("source", "")
    changes = []
    if args.get("name"):
        changes.append(f'renamed to "{args["name"]}"')
    if args.get("rate_cap_per_minute"):
        changes.append(f'rate cap set to {args["rate_cap_per_minute"]} calls per minute')
    if args.get("auth_kind"):
        changes.append({"none": "now without authentication", "bearer": "now using a bearer token",
                        "header_token": f"now sending its token in the {args.get('auth_header') or 'custom'} header"
                        }[args["auth_kind"]])
    elif args.get("auth_header"):
        changes.append(f"token now sent in the {args['auth_header']} header")
    if (args.get("rotate_token") or args.get("token_ref")) and args.get("auth_kind") in (None, ""):
        changes.append("new token stored")
    if args.get("url"):
        changes.append(f'URL changed to {result.url or args["url"]}')
    if args.get("allowed_tools"):
        changes.append("now offering only " + ", ".join(args["allowed_tools"]))
    if args.get("allow_all_tools"):
        changes.append("now offering all of its tools")
    if args.get("app_namespace"):
        changes.append(f"tool names now start with {args['app_namespace']}")
    if args.get("call_timeout"):
        changes.append(f"a tool call may now take up to {seconds(args['call_timeout'])}")
    if args.get("connect_timeout"):
        changes.append(f"connecting may now take up to {seconds(args['connect_timeout'])}")
    done = "; ".join(changes) or "updated"
    before = args.get("source") if args.get("name") else label
    if result.status == "error":
        return f'Updated "{before}" ({done}), but it' + _failed(label, result)
    check = f" It's healthy: {_healthy(result)}." if str(result.detail or "").startswith("healthy") else ""
    return f'Updated "{before}": {done}.{check}'


def _revoke(args: dict[str, Any], result: Lifecycle) -> str:
    label = result.name or args.get("source", "")
    return (f'Revoked "{label}": its stored credential is deleted and it is disconnected; your '
            f"server itself keeps running. To delete it permanently, run: "
            f"concierge source delete {result.data_source_id} --yes")


def _held_lines(rows: list[HeldToolRow]) -> list[str]:
    return [f"- {h.tool} ({h.status}): " + "; ".join(h.changes) for h in rows]


def _approved(args: dict[str, Any], result: ApprovedTools) -> str:
    label = result.name or args.get("source", "")
    if not result.approved:
        return f'Nothing was approved for "{label}": {result.detail}'
    lines = [f'Approved {len(result.approved)} tool definition(s) of "{label}"; agents are offered '
             "them again:", *_held_lines(result.approved)]
    if result.still_held:
        lines += ["Still held:", *_held_lines(result.still_held)]
    return "\n".join(lines)


def _pause(args: dict[str, Any], result: Lifecycle) -> str:
    label = result.name or args.get("source", "")
    return f'Paused "{label}": agents no longer see its tools. Say "resume {label}" to bring it back.'


def _resume(args: dict[str, Any], result: Lifecycle) -> str:
    label = result.name or args.get("source", "")
    if result.status == "active":
        return f'Resumed "{label}": it is healthy again and its tools are back.'
    return f'Resumed "{label}", but it' + _failed(label, result)


def _delete(args: dict[str, Any], result: DeleteCommand) -> str:
    return (f'I don\'t delete sources from chat — it is permanent. To delete "{result.name}", run:\n'
            f'  {result.command}\nTo only disconnect it, say "revoke {result.name}".')


def _sources(args: dict[str, Any], result: SourceList) -> str:
    live = [s for s in result.sources if s.status != "disconnected"]
    revoked = len(result.sources) - len(live)
    if not live and not result.more:
        extra = f" ({revoked} revoked)" if revoked else ""
        return (f'You have no MCP sources in sandbox "{result.sandbox}" yet{extra}. Say "add my MCP '
                'server at <URL>" to register one.')
    lines = [f'You have {len(live)} source{"s" if len(live) != 1 else ""} in sandbox "{result.sandbox}":']
    if result.more:  # one page of them
        lines = [f'You have {result.total} sources in sandbox "{result.sandbox}"; the first {len(result.sources)}:']
    for s in live:
        if s.status == "active":
            state = f"active, {tools_count(s.tools)}"
        elif s.status == "error":
            state = f"failing: {plain_error(s.health_error, s.health_error_kind).rstrip('.')}"
        else:
            state = s.status
        lines.append(f"- {s.name} ({s.id}) — {state}; {s.url}, auth {s.auth}, namespace {s.namespace}")
    if revoked:
        lines.append(f"(plus {revoked} revoked)")
    if result.more:
        lines.append(_more(result.more, "source", result.total))
    return "\n".join(lines)


def _more(more: int, what: str, total: int | None) -> str:
    """The tail of a list that did not fit on one page (the planner does not page on; the CLI
    does, and a model with the tools passes ``next_cursor``)."""
    of = f" (of {total})" if total else ""
    return (f"… and {more} more {what}{'s' if more != 1 else ''}{of} — name the one you mean, or "
            f"run `concierge {what} list` to page through them all.")


def _auth_line(s: SourceDetails) -> str:
    mask = f" ({s.token})" if s.token else ""
    if s.auth_kind == "bearer":
        return f"a bearer token{mask}"
    if s.auth_kind == "header_token":
        return f"a token in the {s.auth_header} header{mask}"
    return "none"


def _show(args: dict[str, Any], s: SourceDetails) -> str:
    state = status_words(s.status)
    if s.status == "active":
        state += f", {tools_count(s.tools)}"
    lines = [f'"{s.name}" ({s.id}) — {state}.', f"- URL: {s.url}", f"- Auth: {_auth_line(s)}",
             f"- Namespace: {s.namespace} (tool names start with {s.namespace}_)"]
    caps = f"- Rate caps: {s.rate_cap_per_minute} tool calls per minute"
    if s.webhook_rate_cap_per_minute is not None:
        caps += f", {s.webhook_rate_cap_per_minute} webhook events per minute"
    lines.append(caps)
    if s.call_timeout is not None and s.connect_timeout is not None:
        lines.append(f"- Timeouts: {seconds(s.call_timeout)} per tool call, {seconds(s.connect_timeout)} to connect")
    allowed = s.allowed_tools
    lines.append("- Allowed tools: " + ("all" if allowed in (None, "all") else ", ".join(allowed)))
    if s.last_checked_at:
        check = f"- Last check: {s.last_checked_at}"
        if s.last_latency_ms is not None:
            check += f" ({s.last_latency_ms:.0f} ms)"
        if s.health_error:
            check += f"; error: {plain_error(s.health_error, s.health_error_kind)}"
        lines.append(check)
    elif s.health_error:
        lines.append(f"- Last check: {plain_error(s.health_error, s.health_error_kind)}")
    if s.held_tools:
        lines.append(f"- Held until approved (their definitions changed since approval, or they are new; "
                     f"agents do not see them): {len(s.held_tools)}")
        lines += ["  " + line for line in _held_lines(s.held_tools)]
        lines.append(f'  Say "approve the changed tools of {s.name}" once you have read the changes.')
    return "\n".join(lines)


def _health(args: dict[str, Any], result: HealthReport) -> str:
    if not result.checked:
        return f'You have no sources to check in sandbox "{result.sandbox}".'
    n = len(result.checked)
    head = (f'Checked {n} source{"s" if n != 1 else ""} in sandbox "{result.sandbox}": '
            f"{result.healthy} healthy, {result.failing} failing.")
    lines = [head]
    for c in result.checked:
        if c.status == "active":
            lines.append(f"- {c.name} — healthy, {tools_count(c.tool_count)}")
        elif c.status == "paused":
            lines.append(f"- {c.name} — paused ({str(c.detail or '').removeprefix('healthy: ')})")
        else:
            why = plain_error(c.health_error or c.detail, c.health_error_kind)
            lines.append(f"- {c.name} — failing: {why}" + (f" {c.hint}" if c.hint else ""))
    if result.skipped:
        lines.append(f"(plus {len(result.skipped)} revoked, not checked)")
    return "\n".join(lines)


def _sandboxes(args: dict[str, Any], result: SandboxList) -> str:
    names = [s.name + (" (current)" if s.name == result.current else "") for s in result.sandboxes]
    return "Your sandboxes: " + ", ".join(names) + "."


def _switch(args: dict[str, Any], result: SandboxSwitch) -> str:
    return f'Now working in sandbox "{result.sandbox}".'


def _sandbox_created(args: dict[str, Any], result: SandboxCreated) -> str:
    return f'Created the sandbox "{result.name}". Say "switch to {result.name}" to work in it.'


def _agents(args: dict[str, Any], result: AgentList) -> str:
    if not result.agents:
        return "There are no agents here yet. Create one with `concierge agent create SLUG`."
    lines = ["Your agents:"] + [agent_line(a) for a in result.agents]
    return "\n".join(lines) + ("\n" + _more(result.more, "agent", result.total) if result.more else "")


def agent_label(agent: Any) -> str:
    """An agent's slug, and its display name when it has one of its own: 'helpdesk ("Help Desk")'."""
    return agent.slug + (f' ("{agent.name}")' if agent.name and agent.name != agent.slug else "")


def agent_line(agent: Any) -> str:
    """One agent in a list: its label, what it may use, a pause."""
    paused = " — paused: the gateway refuses its calls" if agent.status == "paused" else ""
    return f"- {agent_label(agent)}: may use {may_use(agent.tool_allowlist)}{paused}"


def may_use(allowlist: list[str] | str) -> str:
    return "every tool in the sandbox" if allowlist in ("all", []) else "only " + ", ".join(allowlist)


def _unmatched(unmatched: list[str]) -> str:
    if not unmatched:
        return ""
    return (" No tool in the sandbox is called " + ", ".join(unmatched) + " right now: "
            + ("it matches" if len(unmatched) == 1 else "they match") + " nothing until a source offers "
            + ("it" if len(unmatched) == 1 else "them") + ' (ask "what tools does my sandbox have?").')


def _agent_created(args: dict[str, Any], result: AgentCreated) -> str:
    return (f'Created the agent {result.slug} in sandbox "{result.sandbox}"; it may use '
            f'{may_use(result.tool_allowlist)}.' + _unmatched(result.unmatched)
            + f' Ask "what tools does {result.slug} have?" to see them.')


def _agent_updated(args: dict[str, Any], result: AgentUpdated) -> str:
    if args.get("status") and not args.get("name") and not args.get("tool_allowlist") \
            and not args.get("allow_all_tools"):
        if result.status == "paused":
            return (f'Paused the agent {result.slug} in sandbox "{result.sandbox}": the gateway refuses its tool '
                    f'calls until you resume it (say "resume {result.slug}").')
        return (f'Resumed the agent {result.slug} in sandbox "{result.sandbox}": it can call its tools again '
                f"(it may use {may_use(result.tool_allowlist)}).")
    if args.get("name") and not args.get("tool_allowlist") and not args.get("allow_all_tools"):
        return (f'Renamed the agent {result.slug} to "{args["name"]}" in sandbox "{result.sandbox}" (its slug '
                f"stays {result.slug}; it may use {may_use(result.tool_allowlist)}).")
    return (f'Updated the agent {result.slug} in sandbox "{result.sandbox}": it may use '
            f'{may_use(result.tool_allowlist)} (before: {may_use(result.previous_allowlist).replace(" in the sandbox", "")}).'
            + _unmatched(result.unmatched))


_GONE = "disconnected"
"""A revoked source's skip reason: gone for good by the person's own choice, so not itemized."""


def _more_skipped(trace: CatalogTrace) -> list[str]:
    """The skipped sources counted but not itemized (a sandbox of thousands of paused ones)."""
    if not trace.sources_skipped_omitted:
        return []
    shown: dict[str, int] = {}
    for skipped in trace.sources_skipped:
        shown[skipped.reason] = shown.get(skipped.reason, 0) + 1
    rest = {reason: n - shown.get(reason, 0) for reason, n in trace.sources_skipped_by_reason.items()
            if n > shown.get(reason, 0) and reason != _GONE}
    if not rest:
        return []
    more = [f"{n:,} {reason}" for reason, n in rest.items()]
    return [f"…and {sum(rest.values()):,} more skipped sources ({', '.join(more)})."]


def _catalog(args: dict[str, Any], result: Catalog) -> str:
    if result.agent:
        who = f"{result.agent} has"
    elif args.get("app"):
        who = f"The source with namespace {args['app']} offers"
    else:
        who = "This sandbox offers"
    lines = []
    if result.agent and result.agent_status == "paused":
        lines.append(f'{result.agent} is paused: the gateway refuses its tool calls until you resume it '
                     f'(say "resume {result.agent}").')
        who = f"Once resumed, {result.agent} has"
    if not result.tools:
        lines.append(f"{who} no tools right now.")
    else:
        lines.append(f"{who} {tools_count(len(result.tools))} right now:")
        for t in result.tools[:20]:
            desc = t.description if len(t.description) <= 80 else t.description[:79] + "…"
            lines.append(f"- {t.name}" + (f" — {desc}" if desc else ""))
        if len(result.tools) > 20:
            lines.append(f"…and {len(result.tools) - 20} more.")
    for skipped in [s for s in result.trace.sources_skipped if s.reason != _GONE]:
        detail = f": {plain_error(skipped.detail, skipped.kind).rstrip('.')}" if skipped.detail else ""
        lines.append(f"Skipped {skipped.name or skipped.source_id} ({skipped.reason}{detail}).")
    lines.extend(_more_skipped(result.trace))
    left_out = [t["name"] for t in result.trace.tools_left_out if t.get("reason") == "task_required"]
    if left_out:
        lines.append(f"Left out: {', '.join(left_out)} — {'it requires' if len(left_out) == 1 else 'they require'} "
                     "task support, which agents here do not have.")
    if result.trace.tools_held:
        held = ", ".join(h["name"] for h in result.trace.tools_held)
        lines.append(f"Held until approved: {held} (new, or changed since approved; say \"show <source>\" to see "
                     "what changed).")
    barred = result.trace.allowlist_filtered_out.get("agent") or []
    if result.agent and barred:  # "what can support not do?": what its allowlist keeps from it
        named = ", ".join(barred[:20]) + (f" and {len(barred) - 20:,} more" if len(barred) > 20 else "")
        lines.append(f"Not allowed by {result.agent}'s allowlist: {named}.")
    if result.trace.allowlist_missing_entries:
        lines.append("Allowlist entries that matched no tool: "
                     + ", ".join(result.trace.allowlist_missing_entries) + ".")
    return "\n".join(lines)


def _schema_type(spec: dict[str, Any]) -> str:
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = "/".join(str(k) for k in kind if k != "null")
    if not kind and "anyOf" in spec:
        kind = "/".join(str(s.get("type")) for s in spec["anyOf"] if s.get("type") not in (None, "null"))
    if kind == "array" and isinstance(spec.get("items"), dict) and spec["items"].get("type"):
        kind = f"list of {spec['items']['type']}"
    if "enum" in spec:
        kind = f"{kind or 'one'} of " + ", ".join(json.dumps(v) for v in spec["enum"])
    return str(kind or "any")


def _describe(args: dict[str, Any], t: ToolDescription) -> str:
    where = f"{t.original_name} on {t.source_name}" if t.original_name != t.name else t.source_name
    lines = [f"{t.name} ({where}): {t.description or 'no description.'}".rstrip()]
    schema = t.input_schema or {}
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    if props:
        lines.append("Arguments:")
        for name, spec in props.items():
            spec = spec if isinstance(spec, dict) else {}
            bits = [_schema_type(spec), "required" if name in required else "optional"]
            if "default" in spec:
                bits.append(f"default {json.dumps(spec['default'])}")
            desc = spec.get("description")
            lines.append(f"- {name} ({', '.join(bits)})" + (f" — {desc}" if desc else ""))
        example = {n: ("..." if (props[n] or {}).get("type") == "string" else 1) for n in props if n in required}
    else:
        lines.append("It takes no arguments.")
        example = {}
    agent = t.agent or "SLUG"
    lines.append(f"To try it: concierge tool call {t.name} --agent {agent} --args '{json.dumps(example)}'")
    return "\n".join(lines)


TOOL_REPLIES: dict[str, Callable[[dict[str, Any], Any], str]] = {
    "register_source": _register, "test_source": _test, "update_source": _update,
    "revoke_source": _revoke, "pause_source": _pause, "resume_source": _resume,
    "delete_source_command": _delete, "list_sources": _sources, "show_source": _show,
    "test_all_sources": _health, "list_sandboxes": _sandboxes, "switch_sandbox": _switch,
    "create_sandbox": _sandbox_created, "list_agents": _agents, "create_agent": _agent_created,
    "update_agent": _agent_updated,
    "list_agent_tools": _catalog, "describe_tool": _describe, "accept_tool_changes": _approved,
}
"""The answer to each tool's result, by tool name."""


_PENDING_WORDS = {"register_source": "register {name}", "create_agent": "create the agent {slug}",
                  "create_sandbox": "create the sandbox {name}", "pause_source": "pause it",
                  "resume_source": "resume it", "revoke_source": "revoke it", "update_agent": "change {agent}",
                  "update_source": "make that change", "accept_tool_changes": "approve those tools"}


def pending_words(proposed: tuple[str, dict[str, Any]] | None) -> str:
    """The change waiting for a yes, as the end of "if you still want me to …"."""
    tool, args = proposed or ("", {})
    try:
        return _PENDING_WORDS.get(tool, "go ahead").format(**{k: str(v) for k, v in args.items()})
    except (KeyError, IndexError):
        return "go ahead"


def reply_for(tool: str, args: dict[str, Any], result: ToolResult) -> str:
    """What to say about ``result`` of ``tool`` called with ``args``."""
    if isinstance(result, ToolError):
        detail = in_user_words(result.detail or result.error)
        return f"That didn't work: {detail.rstrip('.')}."
    make = TOOL_REPLIES.get(tool)
    if make is None:
        return "Done."
    try:
        return make(args, result)
    except (AttributeError, KeyError, TypeError):  # a result of an unexpected shape
        return "Done."
