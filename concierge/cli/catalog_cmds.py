"""Catalog and gateway commands: agent tools, tool call, gateway, source pull.

``agent tools`` and ``source pull`` hang under the ``agent`` / ``source`` groups that
registry_cmds builds (it imports their handlers from here); ``tool call`` and ``gateway`` are
added by `add_commands`.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from concierge.cli.output import emit, table
from concierge.errors import ValidationFailed

if TYPE_CHECKING:
    from concierge.backend import Backend
    from concierge.registry.catalog_models import CatalogResult, ResolutionTrace

__all__ = ["add_commands", "agent_tools", "catalog_json", "gateway", "render_catalog", "source_pull",
           "tool_call"]

_DESCRIPTION_COLUMN = 60


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tool = sub.add_parser("tool", help="call an agent's tools through the gateway").add_subparsers(
        dest="tool_cmd", metavar="SUBCOMMAND", required=True)
    p = tool.add_parser("call", parents=[common],
                        help="call a catalog tool as an agent would (allowlists and rate caps apply)")
    p.add_argument("name", help="the tool's advertised name, as `agent tools` lists it")
    p.add_argument("--agent", required=True, metavar="SLUG")
    p.add_argument("--sandbox")
    p.add_argument("--args", default="{}", metavar="JSON", help='arguments as a JSON object, e.g. \'{"q": "x"}\'')
    p.set_defaults(handler=tool_call)

    p = sub.add_parser("gateway", parents=[common],
                       help="serve an agent's tools as an MCP server (streamable HTTP at /mcp)")
    p.add_argument("--agent", required=True, metavar="SLUG")
    p.add_argument("--sandbox")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1); any other needs an API key on every request "
                        "(the keys of `concierge keys create`, editor of the agent's sandbox) unless "
                        "--insecure-no-auth")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve a non-loopback --host without keys: anyone who can reach the port can call "
                        "the agent's tools with their stored credentials")
    p.add_argument("--no-fast-lane", action="store_true",
                   help="serve every request by the mcp SDK's server (no tools/call pass-through lane; "
                        "for comparison, e.g. bench/gateway.py)")
    p.set_defaults(handler=gateway)


def _short(text: str, width: int = _DESCRIPTION_COLUMN) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _trace_lines(trace: ResolutionTrace, *, full: bool) -> list[str]:
    lines = [f"skipped {s.name} ({s.source_id}): {s.reason}" + (f": {s.detail}" if s.detail else "")
             for s in trace.sources_skipped]
    if trace.allowlist_missing_entries:
        lines.append("allowlist entries that match no tool: " + ", ".join(trace.allowlist_missing_entries))
    for sid, missing in trace.source_allowlist_missing_entries.items():
        lines.append(f"allowed_tools of {sid} name tools the server lacks: {', '.join(missing)}")
    for c in trace.collisions:
        lines.append(f"name collision on {c['name']}: {c['original_name']} of {c['source_id']} "
                     f"advertised as {c['renamed_to']}")
    for h in trace.tools_held:
        lines.append(f"held ({h.status}): {h.name or h.tool} of {h.source_id}: " + "; ".join(h.changes))
    lines.extend(f"note: {n}" for n in trace.notes)
    if full:
        lines.append("sources resolved: " + (", ".join(trace.sources_resolved) or "none")
                     + (f" (from cache: {', '.join(trace.cached_sources)})" if trace.cached_sources else ""))
        for which, names in trace.allowlist_filtered_out.items():
            if names:
                lines.append(f"removed by the {which} allowlist: {', '.join(names)}")
        for r in trace.renamed:
            lines.append(f"renamed ({r['reason']}): {r['original_name']} of {r['source_id']} -> {r['name']}")
        lines.append(f"advertised: {', '.join(trace.tool_names_advertised) or 'nothing'}")
        lines.append(f"resolved in {trace.duration_ms:.0f} ms")
    return lines


def render_catalog(result: CatalogResult, *, full_trace: bool = False) -> str:
    who = f"agent {result.agent}" if result.agent else "an agent with every user_mcp tool"
    apps = len(result.by_app)
    head = (f"{who}: {result.count} tool{'s' * (result.count != 1)} from "
            f"{apps} app{'s' * (apps != 1)}")
    rows = table([(t.name, t.app, _short(t.description)) for t in result.tools], ["NAME", "APP", "DESCRIPTION"])
    return "\n".join(x for x in [head, rows, *_trace_lines(result.trace, full=full_trace)] if x)


def catalog_json(result: CatalogResult) -> dict[str, Any]:
    """The reference answer shape, each tool with its input schema (the arguments it takes)."""
    data = result.summary()
    schemas = {t.name: t.input_schema for t in result.tools}
    for tool in data["tools"]:
        tool["input_schema"] = schemas.get(tool["name"], {})
    return data


async def agent_tools(args: argparse.Namespace, backend: Backend) -> int:
    result = await backend.agent_tools(args.slug, sandbox=args.sandbox, app=args.app)
    emit(catalog_json(result), as_json=args.json, human=render_catalog(result, full_trace=args.trace))
    return 0


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(f"--args must be a JSON object such as '{{\"text\": \"hi\"}}' ({exc.msg})",
                               field="args") from None
    if not isinstance(value, dict):
        raise ValidationFailed("--args must be a JSON object (got "
                               f"{type(value).__name__})", field="args")
    return value


async def tool_call(args: argparse.Namespace, backend: Backend) -> int:
    outcome = await backend.call_tool(args.name, _arguments(args.args), agent=args.agent,
                                      sandbox=args.sandbox)
    human = outcome.text or (json.dumps(outcome.structured_content, indent=2)
                             if outcome.structured_content is not None else "(no text content)")
    if outcome.is_error:
        human = f"tool error from {outcome.original_name}: {human}"
    emit(outcome, as_json=args.json, human=human)
    return 1 if outcome.is_error else 0


async def source_pull(args: argparse.Namespace, backend: Backend) -> int:
    result = await backend.pull_source(args.id, sandbox=args.sandbox)
    human = (f"{result.source_id}: {result.calls} calls, {result.stored} new results stored, "
             f"{result.unchanged} unchanged" + (f", {result.skipped} not run" if result.skipped else ""))
    human += "".join(f"\nerror: {e}" for e in result.errors)
    emit(result, as_json=args.json, human=human)
    return 1 if result.errors else 0


_LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1")


def _gateway_authorize(args: argparse.Namespace, backend: Backend) -> Any:
    """What a gateway bound to ``--host`` requires of each request (None: nothing)."""
    if args.host in _LOOPBACK_BINDS or args.host.startswith("127.") or args.insecure_no_auth:
        return None
    registry = getattr(backend, "registry", None)
    if registry is None:
        raise ValidationFailed(f"--host {args.host} needs API keys, which live in this machine's registry; "
                               "run the gateway without --api-url, or pass --insecure-no-auth", field="host")
    from concierge.errors import PermissionDenied
    from concierge.server.auth import KeyStore, Role

    keys = KeyStore(registry.store)
    if keys.active_count() == 0:
        raise ValidationFailed(
            f"refusing to listen on {args.host} without API keys: anyone who can reach this port could call "
            "the agent's tools with their stored credentials. Create a key with `concierge keys create "
            "--role editor` (clients send 'Authorization: Bearer <key>'), bind to 127.0.0.1, or pass "
            "--insecure-no-auth", field="host")
    sandbox_id = registry.get_sandbox(args.sandbox).id

    def authorize(token: str | None) -> tuple[int, str] | None:
        if token is None:
            return 401, "an API key is required: send 'Authorization: Bearer <key>'"
        principal = keys.authenticate(token)
        if principal is None:
            return 401, "the API key is unknown or revoked"
        try:
            principal.require(Role.EDITOR, "calling the agent's tools")
            principal.require_sandbox(sandbox_id)
        except PermissionDenied as exc:
            return 403, exc.detail
        return None

    return authorize


async def gateway(args: argparse.Namespace, backend: Backend) -> int:
    from concierge.gateway_server import run_gateway

    authorize = _gateway_authorize(args, backend)
    registry = getattr(backend, "registry", None)
    if registry is not None:  # no source may point at this gateway (it would call itself)
        registry.url_policy.add_self(args.host, args.port)
    await run_gateway(backend, agent=args.agent, sandbox=args.sandbox, host=args.host, port=args.port,
                      authorize=authorize, fast_lane=not args.no_fast_lane)
    return 0
