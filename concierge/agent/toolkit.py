"""The concierge's tools: what the model may ask for, mapped onto the `Backend`.

Each `Tool` has a pydantic argument model (turned into an OpenAI function schema), a kind
(``read`` runs at once; ``write`` never runs without the person's yes, enforced by the
engine), and for writes a ``prepare`` step (resolve the target, check the rules, so nobody
is asked to confirm something that would be refused), a plain-language ``summary`` for the
confirmation and ``needs_secret`` (a credential the person must give out of band).

Credentials only travel by reference: ``token_ref`` holds ``sec_…`` and is resolved through
the session's `SecretStore` at the moment the backend is called.

``python -m concierge.agent.toolkit --write`` regenerates ``tools/<name>.json``; a test keeps
those files in step with this module.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from concierge.agent.secrets import MASK, SecretStore, normalize_ref
from concierge.backend import Backend
from concierge.errors import Conflict, ConciergeError, NotFound, ValidationFailed
from concierge.registry import DEFAULT_SANDBOX
from concierge.registry import validation as rules
from concierge.registry.models import Outcome, SourceView

__all__ = [
    "READ",
    "SecretNeed",
    "Tool",
    "ToolArgumentError",
    "ToolContext",
    "Toolkit",
    "WRITE",
    "default_toolkit",
    "delete_command",
    "health_hint",
    "main",
    "mask_arguments",
    "resolve_source",
    "write_definitions",
]

READ: Literal["read"] = "read"
WRITE: Literal["write"] = "write"

_ARGS = ConfigDict(extra="forbid", str_strip_whitespace=True)
_APPROVAL_WORDS = {"confirmed", "confirm", "approved", "approve", "yes", "force",
                   "skip_confirmation", "no_confirm", "auto_approve", "user_approved"}
_SECRET_KEYS = {"token", "password", "secret", "api_key", "apikey", "credential", "authorization"}


class ToolArgumentError(ConciergeError):
    """The model's arguments do not fit the tool (sent back to the model to fix)."""

    error = "invalid_arguments"


@dataclass
class ToolContext:
    """What a tool may use: the backend, the session's sandbox and its secret store."""

    backend: Backend
    secrets: SecretStore
    sandbox: str | None = None

    def secret(self, ref: str | None) -> str | None:
        """The credential behind a reference, or None when it is unknown."""
        if not ref:
            return None
        key = normalize_ref(ref)
        return self.secrets.get(key) if key else None


@dataclass(frozen=True)
class SecretNeed:
    """A credential the person must give (hidden input) before a write can be confirmed."""

    field: str
    purpose: str


Prepared = Any
RunFn = Callable[[ToolContext, Any, Prepared], Awaitable[Any]]
PrepareFn = Callable[[ToolContext, Any], Awaitable[Prepared]]


@dataclass(frozen=True)
class Tool:
    """One model-facing tool."""

    name: str
    description: str
    args: type[BaseModel]
    kind: Literal["read", "write"]
    run: RunFn
    prepare: PrepareFn | None = None
    summary: Callable[[Any, Prepared], str] | None = None
    needs_secret: Callable[[ToolContext, Any, Prepared], SecretNeed | None] | None = None
    progress: str | None = None
    """A short line a surface may show while the tool runs (health checks, catalog resolution)."""

    @property
    def is_write(self) -> bool:
        return self.kind == WRITE

    def definition(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": _clean_schema(self.args.model_json_schema())}}

    def parse(self, raw: dict[str, Any]) -> BaseModel:
        """Validate the model's arguments; a clear `ToolArgumentError` otherwise."""
        if not isinstance(raw, dict):
            raise ToolArgumentError("arguments must be a JSON object")
        approval = sorted(k for k in raw if k.lower() in _APPROVAL_WORDS)
        if approval:
            raise ToolArgumentError(
                f"unknown argument {approval[0]!r}: only the person can approve a change, "
                "by answering the confirmation; no argument can skip it")
        secretish = sorted(k for k in raw if k.lower() in _SECRET_KEYS)
        if secretish:
            raise ToolArgumentError(
                f"unknown argument {secretish[0]!r}: credentials are never passed directly; "
                "leave token_ref out and the person will be asked for it privately")
        try:
            return self.args.model_validate(raw)
        except ValidationError as exc:
            raise ToolArgumentError(rules.from_pydantic(exc).detail) from None


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's JSON schema trimmed for models: no titles, no null branches, no None defaults."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: walk(v) for k, v in node.items() if k != "title"}
            if "anyOf" in node:
                branches = [b for b in node["anyOf"] if b != {"type": "null"}]
                if len(branches) == 1:
                    rest = {k: v for k, v in node.items() if k != "anyOf"}
                    node = {**branches[0], **rest}
            if node.get("default", 0) is None:
                node.pop("default")
            return node
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    out = walk(schema)
    out.setdefault("properties", {})
    out["additionalProperties"] = False
    return out


def mask_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments safe to show: references stay (they are not secrets), secret-named keys masked."""
    return {k: (MASK if k.lower() in _SECRET_KEYS and v else v) for k, v in arguments.items()}


# --------------------------------------------------------------------------------------------
# Argument models

_SANDBOX = Field(default=None, description="Sandbox name or id; omit for the current sandbox.")
_SOURCE = Field(description="The source: its id (ds_…), its name, or its namespace.")


class NoArgs(BaseModel):
    model_config = _ARGS


class SandboxArgs(BaseModel):
    model_config = _ARGS
    sandbox: str | None = _SANDBOX


class ListSourcesArgs(BaseModel):
    model_config = _ARGS
    sandbox: str | None = _SANDBOX
    status: Literal["active", "paused", "error", "disconnected"] | None = Field(
        default=None, description="Only sources with this status.")


class SourceArgs(BaseModel):
    model_config = _ARGS
    source: str = _SOURCE
    sandbox: str | None = _SANDBOX


class RegisterArgs(BaseModel):
    model_config = _ARGS
    name: str = Field(min_length=1, max_length=200, description="A short label, e.g. 'Acme internal'.")
    url: str = Field(description="The server's MCP URL. https only; http only for localhost/127.0.0.1/::1.")
    auth_kind: Literal["bearer", "header_token", "none"] = Field(
        description="bearer: Authorization: Bearer <token>. header_token: the token in a custom "
                    "header (set auth_header). none: no credential.")
    auth_header: str | None = Field(default=None, description="Header name for header_token, e.g. X-Api-Key.")
    token_ref: str | None = Field(
        default=None, description="A [secret:sec_…] reference from the conversation. Omit it: the "
                                  "person is then asked for the token privately.")
    sandbox: str | None = _SANDBOX
    app_namespace: str | None = Field(
        default=None, description="Prefix of the tool names agents see (letters, digits, _ -; "
                                  "<=64). Default: the new source's id.")
    rate_cap_per_minute: int | None = Field(default=None, ge=1, le=600,
                                            description="Tool calls per minute, 1-600 (default 60).")
    allowed_tools: list[str] | None = Field(default=None,
                                            description="Offer only these tools (default: all).")


class UpdateArgs(BaseModel):
    model_config = _ARGS
    source: str = _SOURCE
    sandbox: str | None = _SANDBOX
    name: str | None = Field(default=None, min_length=1, max_length=200, description="New label.")
    url: str | None = Field(default=None, description="New MCP URL (same rules as register).")
    auth_kind: Literal["bearer", "header_token", "none"] | None = Field(
        default=None, description="New auth scheme.")
    auth_header: str | None = Field(default=None, description="New header name for header_token.")
    rotate_token: bool = Field(default=False, description="Replace the stored token; the person "
                                                          "is asked for the new one privately.")
    token_ref: str | None = Field(default=None, description="A [secret:sec_…] reference, if the "
                                                            "person already gave the new token.")
    app_namespace: str | None = Field(default=None, description="New tool-name prefix.")
    rate_cap_per_minute: int | None = Field(default=None, ge=1, le=600,
                                            description="Tool calls per minute, 1-600.")
    allowed_tools: list[str] | None = Field(default=None, description="Offer only these tools.")
    allow_all_tools: bool = Field(default=False, description="Remove the per-source tool allowlist.")


class AgentToolsArgs(BaseModel):
    model_config = _ARGS
    agent: str | None = Field(default=None, description="The agent's slug (e.g. support-bot); "
                                                        "omit for every tool in the sandbox.")
    sandbox: str | None = _SANDBOX
    app: str | None = Field(default=None, description="Only tools from this namespace.")


# --------------------------------------------------------------------------------------------
# Helpers


def _sandbox(ctx: ToolContext, explicit: str | None) -> str:
    """The sandbox a tool acts in: the argument, else the session's, else the default one."""
    return explicit or ctx.sandbox or DEFAULT_SANDBOX


def _source_row(s: SourceView) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": s.id, "name": s.name, "status": s.status.value, "url": s.base_url,
        "auth": s.auth_kind.value + (f" ({s.auth_header})" if s.auth_header else ""),
        "namespace": s.app_namespace, "tools": s.tool_count, "rate_cap_per_minute": s.rate_cap_per_minute,
    }
    if s.health_error and s.status.value == "error":
        row["health_error"] = s.health_error
    return row


async def resolve_source(ctx: ToolContext, ref: str, sandbox: str | None) -> SourceView:
    """A source by id, exact name or namespace (case-insensitive), else a unique partial name."""
    ref = ref.strip()
    if re.fullmatch(r"ds_[0-9A-Za-z]{6,40}", ref):
        return await ctx.backend.get_source(ref, sandbox=sandbox)
    where = _sandbox(ctx, sandbox)
    sources = await ctx.backend.list_sources(sandbox=where)
    live = [s for s in sources if s.status.value != "disconnected"]
    key = ref.casefold()
    for pool in (live, sources):
        exact = [s for s in pool if key in (s.name.casefold(), s.app_namespace.casefold())]
        if not exact:
            exact = [s for s in pool if key in s.name.casefold()]
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            listed = "; ".join(f"{s.id} ({s.name}, {s.status.value})" for s in exact)
            err = Conflict(f"several sources match {ref!r}: {listed}. Ask the person which one "
                           "and pass its id.")
            err.error = "ambiguous"
            raise err
    known = ", ".join(f"{s.name} ({s.id})" for s in live) or "none"
    raise NotFound(f"no source matches {ref!r} in sandbox {where!r} (sources: {known})")


def health_hint(health_error: str | None) -> str | None:
    """What to try after a failed health check, from the connector's error text."""
    if not health_error:
        return None
    text = health_error.lower()
    # Match the connector's kind prefix ("unauthorized: ...") and its phrases, never bare
    # numbers: a URL's port (127.0.0.1:40132) must not read as an HTTP status.
    for needles, hint in (
        (("unauthorized", "http 401"), "Check the token (and, for header_token, the header name); "
                                       "if it changed, rotate it."),
        (("forbidden", "http 403"), "Check the token's scopes or permissions on the server."),
        (("not_found", "http 404"), "Check the URL path: MCP endpoints usually end in /mcp (or /sse)."),
        (("connection_refused", "nothing is listening", "connection to"),
         "Make sure the server is running and the host and port are right."),
        (("dns:", "could not resolve"), "Check the spelling of the host name in the URL."),
        (("tls:", "tls with", "certificate"), "Check the certificate, or whether the server speaks "
                                              "https on that port."),
        (("timeout", "no answer", "did not complete"),
         "Check that the server is up and answering, or raise the connect timeout."),
        (("not_mcp", "not an mcp", "not as an mcp", "does not look like"),
         "Check the URL path: it must be the server's MCP endpoint."),
        (("server_error", "the server failed"), "Check the server's logs."),
    ):
        if any(n in text for n in needles):
            return hint
    return "Check the URL and the credential."


def _outcome(outcome: Outcome, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    data = outcome.model_dump(exclude_none=True)
    if outcome.status == "error":
        hint = health_hint(outcome.health_error)
        if hint:
            data["hint"] = hint
    return data | (extra or {})


async def _with_view(ctx: ToolContext, outcome: Outcome) -> dict[str, Any]:
    """The outcome plus what an agent will see: namespace and tool count."""
    extra: dict[str, Any] = {}
    if outcome.data_source_id:
        try:
            view = await ctx.backend.get_source(outcome.data_source_id)
        except ConciergeError:
            view = None
        if view is not None:
            extra = {"namespace": view.app_namespace, "tool_count": view.tool_count,
                     "url": view.base_url, "sandbox_id": view.sandbox_id}
    return _outcome(outcome, extra)


def _auth_words(kind: str, header: str | None) -> str:
    if kind == "bearer":
        return f"a bearer token ({MASK})"
    if kind == "header_token":
        return f"a token in the {header or '?'} header ({MASK})"
    return "no authentication"


def delete_command(source_id: str, sandbox: str | None = None) -> str:
    """The CLI command for permanent deletion (never run from chat)."""
    return f"concierge source delete {source_id}" + (f" --sandbox {sandbox}" if sandbox else "") + " --yes"


# --------------------------------------------------------------------------------------------
# Reads


async def _list_sandboxes(ctx: ToolContext, args: NoArgs, _: Any) -> Any:
    return {"sandboxes": [{"id": s.id, "name": s.name} for s in await ctx.backend.list_sandboxes()],
            "current": ctx.sandbox or "default"}


async def _list_sources(ctx: ToolContext, args: ListSourcesArgs, _: Any) -> Any:
    where = _sandbox(ctx, args.sandbox)
    rows = await ctx.backend.list_sources(sandbox=where, status=args.status)
    # Oldest first; the name breaks ties (ids made in the same millisecond sort randomly).
    rows = sorted(rows, key=lambda s: (s.created_at, s.name, s.id))
    return {"sandbox": where, "count": len(rows), "sources": [_source_row(s) for s in rows]}


async def _show_source(ctx: ToolContext, args: SourceArgs, _: Any) -> Any:
    s = await resolve_source(ctx, args.source, args.sandbox)
    row = _source_row(s) | {
        "sandbox_id": s.sandbox_id, "has_token": s.has_token,
        "allowed_tools": s.allowed_tools or "all", "server": s.server_name,
        "last_checked_at": s.last_checked_at, "connect_timeout": s.connect_timeout,
        "call_timeout": s.call_timeout, "ingestion_mode": s.ingestion_mode,
    }
    return {k: v for k, v in row.items() if v is not None}


async def _test_source(ctx: ToolContext, args: SourceArgs, _: Any) -> Any:
    s = await resolve_source(ctx, args.source, args.sandbox)
    return await _with_view(ctx, await ctx.backend.test_source(s.id))


async def _list_agents(ctx: ToolContext, args: SandboxArgs, _: Any) -> Any:
    agents = sorted(await ctx.backend.list_agents(sandbox=_sandbox(ctx, args.sandbox)), key=lambda a: a.slug)
    return {"agents": [{"slug": a.slug, "name": a.name, "status": a.status,
                        "tool_allowlist": a.tool_allowlist or "all"} for a in agents]}


async def _agent_tools(ctx: ToolContext, args: AgentToolsArgs, _: Any) -> Any:
    agent_tools = getattr(ctx.backend, "agent_tools", None)
    if agent_tools is None:
        raise ConciergeError("this backend cannot resolve tool catalogs", error="unsupported")
    result = await agent_tools(args.agent, sandbox=_sandbox(ctx, args.sandbox), app=args.app)
    trace = result.trace
    out: dict[str, Any] = {
        "agent": result.agent, "count": result.count, "by_app": result.by_app,
        "tools": [{"name": t.name, "app": t.app, "description": _short(t.description, 160)}
                  for t in result.tools],
        "trace": {
            "sources_resolved": trace.sources_resolved,
            "sources_skipped": [s.model_dump(exclude_none=True) for s in trace.sources_skipped],
            "allowlist_filtered_out": trace.allowlist_filtered_out,
            "allowlist_missing_entries": trace.allowlist_missing_entries,
            "collisions": trace.collisions,
        },
    }
    return out


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _delete_help(ctx: ToolContext, args: SourceArgs, _: Any) -> Any:
    s = await resolve_source(ctx, args.source, args.sandbox)
    return {"source": s.id, "name": s.name, "command": delete_command(s.id),
            "note": "Permanent deletion is not done from chat. Run this command yourself; "
                    "to only disconnect the source, revoke it instead."}


# --------------------------------------------------------------------------------------------
# Writes


async def _prepare_register(ctx: ToolContext, args: RegisterArgs) -> dict[str, Any]:
    try:
        url = rules.normalize_base_url(args.url)
        header = rules.check_header_name(args.auth_header)
        rules.check_auth_combination(args.auth_kind, has_token=True, token_sent=args.auth_kind != "none",
                                     auth_header=header)
        namespace = rules.check_namespace(args.app_namespace)
        if args.allowed_tools is not None:
            rules.check_allowed_tools(args.allowed_tools)
    except ValueError as exc:
        field = "url" if "base_url" in str(exc) else None
        raise ValidationFailed(str(exc).replace("base_url", "url"), field=field) from None
    if args.auth_kind == "none" and args.token_ref:
        raise ValidationFailed("token_ref must not be given when auth_kind is 'none'", field="token_ref")
    sb = await ctx.backend.get_sandbox(_sandbox(ctx, args.sandbox))
    if namespace:
        for s in await ctx.backend.list_sources(sandbox=sb.id):
            if s.status.value != "disconnected" and s.app_namespace.casefold() == namespace.casefold():
                err = Conflict(f"the namespace {namespace!r} is already used by {s.name!r} ({s.id}) in "
                               f"sandbox {sb.name!r}; choose another namespace or revoke that source")
                err.error = "namespace_taken"
                raise err
    return {"sandbox": sb.name, "sandbox_id": sb.id, "url": url, "auth_header": header}


def _summary_register(args: RegisterArgs, prep: dict[str, Any]) -> str:
    ns = args.app_namespace or "the new source's id"
    return (f'Register the MCP server "{args.name}" at {prep["url"]} in sandbox "{prep["sandbox"]}", '
            f"using {_auth_words(args.auth_kind, prep['auth_header'])}; tool names will start with "
            f"{ns}. A health check runs right after.")


def _secret_register(ctx: ToolContext, args: RegisterArgs, prep: Any) -> SecretNeed | None:
    if args.auth_kind == "none" or ctx.secret(args.token_ref) is not None:
        return None
    what = "bearer token" if args.auth_kind == "bearer" else f"{args.auth_header or 'header'} token"
    return SecretNeed("token_ref", f'the {what} for "{args.name}" ({prep["url"]})')


async def _register(ctx: ToolContext, args: RegisterArgs, prep: dict[str, Any]) -> Any:
    body: dict[str, Any] = {"name": args.name, "base_url": prep["url"], "auth_kind": args.auth_kind}
    if args.auth_kind == "header_token":
        body["auth_header"] = prep["auth_header"]
    if args.auth_kind != "none":
        token = ctx.secret(args.token_ref)
        if token is None:
            raise ValidationFailed("the credential is no longer available; ask the person again",
                                   field="token_ref")
        body["token"] = token
    for key in ("app_namespace", "rate_cap_per_minute", "allowed_tools"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    outcome = await ctx.backend.register_source(body, sandbox=prep["sandbox_id"])
    return await _with_view(ctx, outcome) | {"sandbox": prep["sandbox"]}


async def _prepare_target(ctx: ToolContext, args: SourceArgs | UpdateArgs) -> dict[str, Any]:
    s = await resolve_source(ctx, args.source, args.sandbox)
    sandbox = next((sb.name for sb in await ctx.backend.list_sandboxes() if sb.id == s.sandbox_id),
                   s.sandbox_id)
    return {"id": s.id, "name": s.name, "status": s.status.value, "url": s.base_url,
            "auth_kind": s.auth_kind.value, "auth_header": s.auth_header,
            "namespace": s.app_namespace, "sandbox": sandbox, "sandbox_id": s.sandbox_id,
            "rate_cap_per_minute": s.rate_cap_per_minute}


def _target(prep: dict[str, Any]) -> str:
    return f'"{prep["name"]}" ({prep["id"]}, {prep["url"]}) in sandbox "{prep["sandbox"]}"'


async def _prepare_update(ctx: ToolContext, args: UpdateArgs) -> dict[str, Any]:
    prep = await _prepare_target(ctx, args)
    if prep["status"] == "disconnected":
        raise Conflict(f"{prep['name']} ({prep['id']}) is revoked and cannot be changed; register it again")
    changes = _update_body(args, token=None)
    if not changes and not args.rotate_token and not args.token_ref:
        raise ValidationFailed("nothing to change: pass at least one field to update")
    try:
        if args.url:
            prep["new_url"] = rules.normalize_base_url(args.url)
        if args.auth_header:
            rules.check_header_name(args.auth_header)
        if args.app_namespace:
            rules.check_namespace(args.app_namespace)
        if args.allowed_tools is not None:
            rules.check_allowed_tools(args.allowed_tools)
    except ValueError as exc:
        raise ValidationFailed(str(exc).replace("base_url", "url")) from None
    kind = args.auth_kind or prep["auth_kind"]
    if kind == "header_token" and not (args.auth_header or prep["auth_header"]):
        raise ValidationFailed("auth_header is required for header_token (e.g. X-Api-Key)",
                               field="auth_header")
    if kind == "none" and (args.rotate_token or args.token_ref):
        raise ValidationFailed("a token cannot be set when auth_kind is 'none'", field="token_ref")
    if args.app_namespace and args.app_namespace.casefold() != prep["namespace"].casefold():
        for s in await ctx.backend.list_sources(sandbox=prep["sandbox_id"]):
            if (s.id != prep["id"] and s.status.value != "disconnected"
                    and s.app_namespace.casefold() == args.app_namespace.casefold()):
                err = Conflict(f"the namespace {args.app_namespace!r} is already used by {s.name!r} "
                               f"({s.id}); choose another")
                err.error = "namespace_taken"
                raise err
    return prep


def _update_body(args: UpdateArgs, *, token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for arg, key in (("name", "name"), ("url", "base_url"), ("auth_kind", "auth_kind"),
                     ("auth_header", "auth_header"), ("app_namespace", "app_namespace"),
                     ("rate_cap_per_minute", "rate_cap_per_minute"), ("allowed_tools", "allowed_tools")):
        if getattr(args, arg) is not None:
            body[key] = getattr(args, arg)
    if args.allow_all_tools:
        body["allowed_tools"] = None
    if token is not None:
        body["token"] = token
    return body


def _summary_update(args: UpdateArgs, prep: dict[str, Any]) -> str:
    parts = []
    if args.name:
        parts.append(f'rename it to "{args.name}"')
    if args.url:
        parts.append(f"move it to {prep.get('new_url', args.url)}")
    if args.auth_kind:
        parts.append(f"switch to {_auth_words(args.auth_kind, args.auth_header or prep['auth_header'])}")
    elif args.auth_header:
        parts.append(f"send the token in the {args.auth_header} header")
    if args.rotate_token or args.token_ref:
        parts.append(f"replace the stored token with a new one ({MASK})")
    if args.app_namespace:
        parts.append(f"change the tool-name prefix to {args.app_namespace}")
    if args.rate_cap_per_minute is not None:
        parts.append(f"set the rate cap to {args.rate_cap_per_minute} calls per minute")
    if args.allowed_tools is not None:
        parts.append("offer only " + ", ".join(args.allowed_tools))
    if args.allow_all_tools:
        parts.append("offer all of its tools")
    text = f"Update {_target(prep)}: " + "; ".join(parts) + "."
    if args.url or args.auth_kind or args.auth_header or args.rotate_token or args.token_ref:
        text += " A health check runs right after."
    return text


def _secret_update(ctx: ToolContext, args: UpdateArgs, prep: dict[str, Any]) -> SecretNeed | None:
    kind = args.auth_kind or prep["auth_kind"]
    switching = args.auth_kind in ("bearer", "header_token") and prep["auth_kind"] == "none"
    wants = args.rotate_token or switching or args.token_ref is not None
    if kind == "none" or not wants or ctx.secret(args.token_ref) is not None:
        return None
    what = "bearer token" if kind == "bearer" else f"{args.auth_header or prep['auth_header']} token"
    return SecretNeed("token_ref", f'the new {what} for "{prep["name"]}" ({prep["url"]})')


async def _update(ctx: ToolContext, args: UpdateArgs, prep: dict[str, Any]) -> Any:
    token = None
    if args.token_ref or args.rotate_token:
        token = ctx.secret(args.token_ref)
        if token is None:
            raise ValidationFailed("the new token is no longer available; ask the person again",
                                   field="token_ref")
    outcome = await ctx.backend.update_source(prep["id"], _update_body(args, token=token))
    return await _with_view(ctx, outcome)


def _summary_simple(verb: str, tail: str) -> Callable[[SourceArgs, dict[str, Any]], str]:
    def summary(args: SourceArgs, prep: dict[str, Any]) -> str:
        return f"{verb} {_target(prep)}. {tail}"
    return summary


async def _pause(ctx: ToolContext, args: SourceArgs, prep: dict[str, Any]) -> Any:
    return _outcome(await ctx.backend.pause_source(prep["id"]))


async def _resume(ctx: ToolContext, args: SourceArgs, prep: dict[str, Any]) -> Any:
    return await _with_view(ctx, await ctx.backend.resume_source(prep["id"]))


async def _revoke(ctx: ToolContext, args: SourceArgs, prep: dict[str, Any]) -> Any:
    return _outcome(await ctx.backend.revoke_source(prep["id"]))


# --------------------------------------------------------------------------------------------
# The toolkit


class Toolkit:
    """The tools by name, in a fixed order."""

    def __init__(self, tools: list[Tool]) -> None:
        self.tools = {t.name: t for t in tools}
        self._definitions: list[dict[str, Any]] | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.tools.values())

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def definitions(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` list (built once; treat it as read-only)."""
        if self._definitions is None:
            self._definitions = [t.definition() for t in self.tools.values()]
        return self._definitions

    @property
    def writes(self) -> set[str]:
        return {t.name for t in self.tools.values() if t.is_write}


def default_toolkit() -> Toolkit:
    """The concierge's tools."""
    return Toolkit([
        Tool("list_sandboxes", "List the sandboxes (workspaces) and which one is current.",
             NoArgs, READ, _list_sandboxes),
        Tool("list_sources", "List the MCP sources (user_mcp) in a sandbox with their status, URL, "
             "auth scheme, namespace, tool count and any health error.",
             ListSourcesArgs, READ, _list_sources),
        Tool("show_source", "Show one source in detail (never its credential).",
             SourceArgs, READ, _show_source),
        Tool("register_source",
             "Register a new MCP server as a source, then health-check it (tools/list). Needs name, "
             "url and auth_kind (+ auth_header for header_token). Never put a token in the "
             "arguments: leave token_ref out and the person is asked privately. Changes state: the "
             "person must confirm, so call it once you have everything.",
             RegisterArgs, WRITE, _register, prepare=_prepare_register, summary=_summary_register,
             needs_secret=_secret_register, progress="registering and checking the server"),
        Tool("update_source",
             "Change a source: label, url, auth scheme, header, tool-name prefix, rate cap, allowed "
             "tools, or rotate its token (rotate_token=true; the person gives the new token "
             "privately). Omitted fields keep their value. A changed url/auth/token re-runs the "
             "health check. Changes state: the person must confirm.",
             UpdateArgs, WRITE, _update, prepare=_prepare_update, summary=_summary_update,
             needs_secret=_secret_update, progress="updating and checking the server"),
        Tool("test_source", "Re-run a source's health check now (connect and list its tools). "
             "Sets status active or error; reports what failed and what to try.",
             SourceArgs, READ, _test_source, progress="checking the server"),
        Tool("pause_source", "Pause a source: agents stop seeing its tools; nothing is deleted. "
             "Changes state: the person must confirm.",
             SourceArgs, WRITE, _pause, prepare=_prepare_target,
             summary=_summary_simple("Pause", "Agents stop seeing its tools until it is resumed.")),
        Tool("resume_source", "Resume a paused source and re-run its health check. Changes state: "
             "the person must confirm.",
             SourceArgs, WRITE, _resume, prepare=_prepare_target,
             summary=_summary_simple("Resume", "A health check runs right after."),
             progress="checking the server"),
        Tool("revoke_source", "Revoke a source: delete its stored credential and disconnect it "
             "for good (only a new registration brings it back). Changes state: the person must "
             "confirm. If several sources could be meant, ask which one first.",
             SourceArgs, WRITE, _revoke, prepare=_prepare_target,
             summary=_summary_simple("Revoke", "Its stored credential is deleted and it is "
                                               "disconnected for good; your server keeps running.")),
        Tool("delete_source_command", "Permanent deletion is never done from chat. This returns "
             "the CLI command the person can run themselves.",
             SourceArgs, READ, _delete_help),
        Tool("list_agents", "List the agents in a sandbox with their tool allowlists.",
             SandboxArgs, READ, _list_agents),
        Tool("list_agent_tools", "The tools an agent has right now: the live catalog resolved from "
             "the sandbox's active sources and allowlists, with a trace of what was skipped and "
             "why. Always call this to answer questions about an agent's tools.",
             AgentToolsArgs, READ, _agent_tools, progress="resolving the tool catalog"),
    ])


def write_definitions(directory: Path, toolkit: Toolkit | None = None) -> list[Path]:
    """Write ``<directory>/<name>.json`` for each tool and remove stale ones."""
    toolkit = toolkit or default_toolkit()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for tool in toolkit:
        path = directory / f"{tool.name}.json"
        data = tool.definition() | {"x-concierge": {"kind": tool.kind}}
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale not in written:
            stale.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m concierge.agent.toolkit",
                                     description="Print or regenerate the tool definitions (tools/).")
    parser.add_argument("--write", action="store_true", help="regenerate tools/<name>.json")
    parser.add_argument("--dir", type=Path, help="target directory (default: the tools/ folder)")
    args = parser.parse_args(argv)
    if args.write:
        from concierge.agent.prompts import tools_dir

        for path in write_definitions(args.dir or tools_dir()):
            print(path)
        return 0
    json.dump(default_toolkit().definitions(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
