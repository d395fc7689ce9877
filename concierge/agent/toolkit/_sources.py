"""The source tools: list, show, test (one or all), register, update, pause, resume, revoke,
approve held tool definitions, and the command for permanent deletion (which is never run from chat).

Validation is the registry's: each write's ``prepare`` feeds the call to the registry's own
request models (`RegisterSource`, `UpdateSource`) and rule functions, and translates their
messages to the tool's argument names. Nothing here restates a rule.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from concierge.agent.secrets import MASK, REF_RE
from concierge.agent.toolkit._base import SecretNeed, ToolArgumentError, ToolContext
from concierge.agent.toolkit.args import (
    ApproveArgs,
    ListSourcesArgs,
    PageSourcesArgs,
    RegisterArgs,
    SourceArgs,
    UpdateArgs,
)
from concierge.agent.toolkit.results import (
    ApprovedTools,
    DeleteCommand,
    HealthReport,
    HeldToolRow,
    Lifecycle,
    SourceDetails,
    SourceList,
    SourceRow,
)
from concierge.errors import Ambiguous, ConciergeError, ConnectorError, NotFound, ValidationFailed
from concierge.mcp_client.kinds import ErrorKind
from concierge.registry import DEFAULT_SANDBOX
from concierge import url_secrets
from concierge.registry import validation as rules
from concierge.registry.allowlists import matches_any
from concierge.registry.catalog_models import HeldTool
from concierge.registry.models import Outcome, RegisterSource, SourceView, UpdateSource

__all__ = [
    "GENERIC_HINT",
    "HEALTH_HINTS",
    "delete_command",
    "health_hint",
    "resolve_source",
    "sandbox_of",
    "source_row",
]

# The registry's field names, as the tools' arguments call them.
_ARGUMENT_NAMES = {"base_url": "url", "token": "token_ref"}
_PLACEHOLDER_TOKEN = "placeholder-token-for-validation"
"""Stands in for a credential not yet given, so the registry's rules can be asked early."""


def sandbox_of(ctx: ToolContext, explicit: str | None) -> str:
    """The sandbox a tool acts in: the argument, else the session's, else the default one."""
    return explicit or ctx.sandbox or DEFAULT_SANDBOX


def source_row(s: SourceView) -> SourceRow:
    fields: dict[str, Any] = {
        "id": s.id, "name": s.name, "status": s.status.value, "url": s.base_url,
        "auth": s.auth_kind.value + (f" ({s.auth_header})" if s.auth_header else ""),
        "namespace": s.app_namespace, "tools": s.tool_count, "rate_cap_per_minute": s.rate_cap_per_minute,
    }
    if s.health_error and s.status.value == "error":
        fields["health_error"] = s.health_error
        if s.health_error_kind is not None:
            fields["health_error_kind"] = s.health_error_kind.value
    return SourceRow(**fields)


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s_\-.]+", text.casefold()) if w]


async def resolve_source(ctx: ToolContext, ref: str, sandbox: str | None) -> SourceView:
    """A source by id, by its whole name or namespace (case, spaces, ``_`` and ``-`` ignored),
    else by whole words of its name ("staging" for "Acme staging") when only one has them.

    Never by a piece of a word: "ht" does not find "http tools". Several matches raise
    `Conflict` (``ambiguous``), none `NotFound`; both list the sources so the model can ask.
    """
    ref = ref.strip()
    if re.fullmatch(r"ds_[0-9A-Za-z]{6,40}", ref):
        return await ctx.backend.get_source(ref, sandbox=sandbox)
    where = sandbox_of(ctx, sandbox)
    sources = await ctx.backend.list_sources(sandbox=where)
    live = [s for s in sources if s.status.value != "disconnected"]
    key = _words(ref)
    for pool in (live, sources):
        exact = [s for s in pool if key and key in (_words(s.name), _words(s.app_namespace))]
        if not exact:
            exact = [s for s in pool if key and set(key) <= set(_words(s.name))]
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            listed = "; ".join(f"{s.id} ({s.name}, {s.status.value})" for s in exact)
            raise Ambiguous(f"several sources match {ref!r}: {listed}. Ask the person which one "
                           "and pass its id.")
    known = ", ".join(f"{s.name} ({s.id})" for s in live) or "none"
    raise NotFound(f"no source matches {ref!r} in sandbox {where!r} (sources: {known})")


HEALTH_HINTS: dict[ErrorKind, str] = {
    ErrorKind.UNAUTHORIZED: "Check the token (and, for header_token, the header name); if it changed, rotate it.",
    ErrorKind.FORBIDDEN: "Check the token's scopes or permissions on the server.",
    ErrorKind.NOT_FOUND: "Check the URL path: MCP endpoints usually end in /mcp (or /sse).",
    ErrorKind.CONNECTION_REFUSED: "Make sure the server is running and the host and port are right.",
    ErrorKind.DNS: "Check the spelling of the host name in the URL.",
    ErrorKind.TLS: "Check the certificate, or whether the server speaks https on that port.",
    ErrorKind.TIMEOUT: "Check that the server is up and answering, or raise the connect timeout.",
    ErrorKind.NOT_MCP: "Check the URL path: it must be the server's MCP endpoint.",
    ErrorKind.SERVER_ERROR: "Check the server's logs.",
    ErrorKind.PROTOCOL: "The server answered, but not by the MCP rules: check its MCP version and logs.",
    ErrorKind.TOO_MANY_TOOLS: "Limit the source to the tools you need with allowed_tools, or split the server.",
    ErrorKind.TOO_LARGE: "The server sent a message over the size cap; check what it lists.",
    ErrorKind.INVALID_URL: "Check the URL: https, or http for localhost only.",
    ErrorKind.BLOCKED: ("This server only connects to public https addresses; a private or internal "
                        "one cannot be registered here."),
    ErrorKind.AUTH_REQUIRED: "Sign in to the server again: `concierge source user-mcp authorize <id>`.",
    ErrorKind.SPAWN_FAILED: "Check the command: it must exist on this machine and be executable.",
    ErrorKind.PROCESS_EXITED: "The program exited: check its stderr log (shown with the source) and its arguments.",
    ErrorKind.UNREACHABLE: "Check that the URL is right and the server is running and reachable from here.",
}
"""What to try after a failed health check, by the kind the registry stored with it."""
GENERIC_HINT = "Check the URL and the credential."


URL_KEY_HINT = "Check the key in the URL; if it changed, give the URL again with the new key."
"""The UNAUTHORIZED hint for a source that sends no token but has a key in its URL (``?api_key=••••``)."""


def health_hint(kind: ErrorKind | str | None, *, url: str | None = None, auth_kind: str | None = None) -> str | None:
    """What to try after a failed health check of ``kind`` (``None``: no failure recorded) of
    the source at ``url`` with ``auth_kind``, when known."""
    if kind is None:
        return None
    if kind == ErrorKind.UNAUTHORIZED and auth_kind == "none" and url and url_secrets.has_masked(url):
        return URL_KEY_HINT
    try:
        return HEALTH_HINTS.get(ErrorKind(kind), GENERIC_HINT)
    except ValueError:
        return GENERIC_HINT


def delete_command(source_id: str, sandbox: str | None = None) -> str:
    """The CLI command for permanent deletion (never run from chat)."""
    return f"concierge source delete {source_id}" + (f" --sandbox {sandbox}" if sandbox else "") + " --yes"


def _shown_url(url: str | None) -> str | None:
    """``url`` as people see it: a credential in its query (a reference) shown as ••••."""
    return url_secrets.shown(url) if url else url


def _dialled_url(ctx: ToolContext, url: str | None) -> str | None:
    """``url`` with each credential reference in it (``?api_key=[secret:…]``) resolved, for the write."""
    if not url or "[secret:" not in url:
        return url

    def value(match: re.Match[str]) -> str:
        secret = ctx.secret(match.group(1))
        if secret is None:
            raise ValidationFailed("the key in the URL is no longer available; ask the person for the URL again",
                                   field="url")
        return secret  # as it was written in the URL (the query parameter's value, encoded or not)

    return REF_RE.sub(value, url)


def _check_url(ctx: ToolContext, url: str | None) -> None:
    """The URL policy's refusal now, before the confirmation, where the backend can tell it (a
    hosted server refuses private addresses); else the registry refuses it at the write."""
    check = getattr(ctx.backend, "check_source_url", None)
    if url and check is not None:
        try:
            check(url)
        except ValidationFailed as exc:
            raise _registry_refused(exc) from None


def _registry_refused(exc: ValidationError | ValueError | ValidationFailed) -> ValidationFailed:
    """The registry's own message, with its field names as the tool's arguments say them."""
    failed = rules.from_pydantic(exc) if isinstance(exc, ValidationError) else (
        exc if isinstance(exc, ValidationFailed) else ValidationFailed(str(exc)))
    detail = failed.detail
    for field, argument in _ARGUMENT_NAMES.items():
        detail = re.sub(rf"\b{field}\b", argument, detail)
    argument_name = _ARGUMENT_NAMES.get(failed.field or "", failed.field)
    return ValidationFailed(detail.replace(_PLACEHOLDER_TOKEN, MASK), field=argument_name)


def _lifecycle(outcome: Outcome, extra: dict[str, Any] | None = None) -> Lifecycle:
    """The outcome as a tool result; a failed check gets the hint for the kind stored with it
    (the outcome keeps the reference shape, so the kind comes from the source's view)."""
    data = outcome.model_dump(exclude_none=True) | (extra or {})
    auth_kind = data.pop("auth_kind", None)
    if outcome.status == "error":
        hint = health_hint(data.get("health_error_kind"), url=data.get("url"), auth_kind=auth_kind)
        if hint:
            data["hint"] = hint
    else:
        data.pop("health_error_kind", None)
    return Lifecycle(**data)


async def _with_view(ctx: ToolContext, outcome: Outcome) -> Lifecycle:
    """The outcome plus what an agent will see: namespace and tool count."""
    extra: dict[str, Any] = {}
    if outcome.data_source_id:
        try:
            view = await ctx.backend.get_source(outcome.data_source_id)
        except ConciergeError:
            view = None
        if view is not None:
            extra = {"namespace": view.app_namespace, "tool_count": view.tool_count,
                     "url": view.base_url, "sandbox_id": view.sandbox_id, "auth_kind": view.auth_kind.value}
            if view.health_error_kind is not None:
                extra["health_error_kind"] = view.health_error_kind.value
    return _lifecycle(outcome, extra)


def _auth_words(kind: str, header: str | None) -> str:
    if kind == "oauth":
        return "an OAuth sign-in (you will get a link to open)"
    if kind == "bearer":
        return f"a bearer token ({MASK})"
    if kind == "header_token":
        return f"a token in the {header or '?'} header ({MASK})"
    return "no authentication"


# --------------------------------------------------------------------------------------------
# Reads


async def list_sources(ctx: ToolContext, args: PageSourcesArgs, _: Any) -> SourceList:
    """One page (oldest first): ``more`` says how many follow, ``next_cursor`` fetches them."""
    where = sandbox_of(ctx, args.sandbox)
    page = await ctx.backend.page_sources(sandbox=where, status=args.status, limit=args.limit,
                                          cursor=args.cursor)
    # The name breaks ties within the page (ids made in the same millisecond sort randomly).
    rows = sorted(page.items, key=lambda s: (s.created_at, s.name, s.id))
    return SourceList(sandbox=where, count=len(rows), sources=[source_row(s) for s in rows],
                      total=page.total, more=page.more, next_cursor=page.next_cursor)


async def show_source(ctx: ToolContext, args: SourceArgs, _: Any) -> SourceDetails:
    s = await resolve_source(ctx, args.source, args.sandbox)
    row = source_row(s).to_wire() | {
        "sandbox_id": s.sandbox_id, "auth_kind": s.auth_kind.value, "auth_header": s.auth_header,
        "has_token": s.has_token, "token": MASK if s.has_token else None,
        "allowed_tools": s.allowed_tools or "all", "server": s.server_name,
        "health_error": s.health_error,
        "health_error_kind": s.health_error_kind.value if s.health_error_kind else None,
        "last_checked_at": s.last_checked_at,
        "last_latency_ms": s.last_latency_ms,
        "webhook_rate_cap_per_minute": s.webhook_rate_cap_per_minute,
        "connect_timeout": s.connect_timeout, "call_timeout": s.call_timeout,
        "ingestion_mode": s.ingestion_mode,
    }
    held = await ctx.backend.held_tools(s.id) if s.pin_tools else []
    if held:
        row["held_tools"] = [_held_row(h) for h in held]
    return SourceDetails(**{k: v for k, v in row.items() if v is not None})


def _held_row(h: HeldTool) -> HeldToolRow:
    return HeldToolRow(tool=h.tool, status=h.status, changes=h.changes)


async def test_source(ctx: ToolContext, args: SourceArgs, _: Any) -> Lifecycle:
    s = await resolve_source(ctx, args.source, args.sandbox)
    return await _with_view(ctx, await ctx.backend.test_source(s.id))


async def test_all_sources(ctx: ToolContext, args: ListSourcesArgs, _: Any) -> HealthReport:
    """Every source that is not revoked, checked at once (each under its own deadline)."""
    where = sandbox_of(ctx, args.sandbox)
    sources = sorted(await ctx.backend.list_sources(sandbox=where), key=lambda s: (s.created_at, s.name))
    live = [s for s in sources if s.status.value != "disconnected"]
    skipped = [source_row(s) for s in sources if s.status.value == "disconnected"]

    async def check(s: SourceView) -> Lifecycle:
        try:
            return await _with_view(ctx, await ctx.backend.test_source(s.id))
        except ConciergeError as exc:  # one source failing to check must not hide the others
            kind = exc.kind.value if isinstance(exc, ConnectorError) else None
            return Lifecycle(data_source_id=s.id, name=s.name, status="error", error=exc.error,
                             detail=exc.detail, health_error_kind=kind, hint=health_hint(kind))

    checked = list(await asyncio.gather(*(check(s) for s in live)))
    healthy = sum(1 for c in checked if c.status == "active")
    failing = sum(1 for c in checked if c.status == "error")
    return HealthReport(sandbox=where, healthy=healthy, failing=failing, checked=checked, skipped=skipped)


async def delete_help(ctx: ToolContext, args: SourceArgs, _: Any) -> DeleteCommand:
    s = await resolve_source(ctx, args.source, args.sandbox)
    return DeleteCommand(source=s.id, name=s.name, command=delete_command(s.id),
                         note="Permanent deletion is not done from chat. Run this command yourself; "
                              "to only disconnect the source, revoke it instead.")


# --------------------------------------------------------------------------------------------
# Writes


def _register_body(args: RegisterArgs, url: str | None) -> dict[str, Any]:
    """The register body without its credential: stdio (command split as a shell would) or URL."""
    body: dict[str, Any] = {"name": args.name, "auth_kind": args.auth_kind}
    if args.command:
        try:
            words = shlex.split(args.command)
        except ValueError as exc:
            raise ValidationFailed(f"command {args.command!r} cannot be read ({exc})", field="command") from None
        if not words:
            raise ValidationFailed("command must not be empty", field="command")
        body |= {"transport": "stdio", "command": words[0], "args": words[1:]}
        if url:
            body["base_url"] = url
    else:
        body["base_url"] = url
    if args.auth_kind == "oauth":
        for key in ("scopes", "client_id"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
    return body


async def prepare_register(ctx: ToolContext, args: RegisterArgs) -> dict[str, Any]:
    body = _register_body(args, args.url)
    if args.auth_header is not None:
        body["auth_header"] = args.auth_header
    if args.auth_kind not in ("none", "oauth") or (args.token_ref and args.auth_kind != "oauth"):
        body["token"] = _PLACEHOLDER_TOKEN  # the credential may come later; its presence is a rule
    for key in ("app_namespace", "rate_cap_per_minute", "allowed_tools"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    try:
        request = RegisterSource.model_validate(body)
    except ValidationError as exc:
        raise _registry_refused(exc) from None
    _check_url(ctx, request.base_url)
    sb = await ctx.backend.get_sandbox(sandbox_of(ctx, args.sandbox))
    # Told before the yes: a second source for one server is allowed, but rarely meant.
    at_url = await ctx.backend.sources_at_url(request.base_url, sandbox=sb.id) if request.base_url else None
    prep: dict[str, Any] = {
        "sandbox": sb.name, "sandbox_id": sb.id, "url": _shown_url(request.base_url),
        "auth_header": request.auth_header,
        "same_url": [f'"{name}" ({sid})' for name, sid in at_url.names] if at_url else [],
        "command_line": request.url_or_command if request.transport == "stdio" else None}
    if at_url and at_url.total > len(at_url.names):
        prep["same_url_more"] = at_url.total - len(at_url.names)
    return prep


def summary_register(args: RegisterArgs, prep: dict[str, Any]) -> str:
    ns = args.app_namespace or "the new source's id"
    if prep.get("command_line"):
        # the command in plain words: it runs on the machine that hosts Concierge
        text = (f'Register the local MCP server "{args.name}" in sandbox "{prep["sandbox"]}": it runs the '
                f"program `{prep['command_line']}` on the machine that hosts Concierge, and speaks MCP on "
                f"its stdin/stdout; tool names will start with {ns}.")
    else:
        text = (f'Register the MCP server "{args.name}" at {prep["url"]} in sandbox "{prep["sandbox"]}", '
                f"using {_auth_words(args.auth_kind, prep['auth_header'])}; tool names will start with "
                f"{ns}.")
    extras = []
    if args.rate_cap_per_minute is not None:
        extras.append(f"rate cap {args.rate_cap_per_minute} calls per minute")
    if args.allowed_tools is not None:
        extras.append("only " + ", ".join(args.allowed_tools))
    if extras:
        text += " With " + "; ".join(extras) + "."
    text += " A health check runs right after."
    if prep.get("same_url"):
        named = list(prep["same_url"]) + ([f"{prep['same_url_more']:,} more"] if prep.get("same_url_more") else [])
        text += (" Note: " + " and ".join(named) + (" already points" if len(named) == 1
                 else " already point") + " at this URL; this adds another source for the same server.")
    return text


def secret_register(ctx: ToolContext, args: RegisterArgs, prep: Any) -> SecretNeed | None:
    if args.auth_kind in ("none", "oauth") or ctx.secret(args.token_ref) is not None:
        return None
    what = "bearer token" if args.auth_kind == "bearer" else f"{args.auth_header or 'header'} token"
    return SecretNeed("token_ref", f'the {what} for "{args.name}" ({prep["url"]})')


async def register(ctx: ToolContext, args: RegisterArgs, prep: dict[str, Any]) -> Lifecycle:
    body = _register_body(args, _dialled_url(ctx, args.url))
    if args.auth_kind == "header_token":
        body["auth_header"] = prep["auth_header"]
    if args.auth_kind not in ("none", "oauth"):
        token = ctx.secret(args.token_ref)
        if token is None:
            raise ValidationFailed("the credential is no longer available; ask the person again",
                                   field="token_ref")
        body["token"] = token
    for key in ("app_namespace", "rate_cap_per_minute", "allowed_tools"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    outcome = await ctx.backend.register_source(body, sandbox=prep["sandbox_id"])
    result = await _with_view(ctx, outcome)
    update: dict[str, Any] = {"sandbox": prep["sandbox"]}
    if prep.get("command_line"):
        update["command_line"] = prep["command_line"]
    start = getattr(ctx.backend, "start_sign_in", None)
    if outcome.status == "auth_required" and args.auth_kind == "oauth" and start is not None:
        try:
            url = await start(str(outcome.data_source_id))  # the sign-in waits for the person meanwhile
        except ConciergeError as exc:  # discovery or registration failed: say why, keep the source
            url = None
            update["hint"] = f"The sign-in could not start: {exc}"
        if url:
            update |= {"authorize_url": url, "hint": "Open this link to sign in; the source becomes active "
                                                     "once you have: " + url}
    return result.model_copy(update=update)


async def prepare_target(ctx: ToolContext, args: SourceArgs | UpdateArgs) -> dict[str, Any]:
    s = await resolve_source(ctx, args.source, args.sandbox)
    sandbox = next((sb.name for sb in await ctx.backend.list_sandboxes() if sb.id == s.sandbox_id),
                   s.sandbox_id)
    return {"id": s.id, "name": s.name, "status": s.status.value, "url": s.base_url,
            "auth_kind": s.auth_kind.value, "auth_header": s.auth_header, "has_token": s.has_token,
            "namespace": s.app_namespace, "sandbox": sandbox, "sandbox_id": s.sandbox_id,
            "rate_cap_per_minute": s.rate_cap_per_minute}


def _update_body(args: UpdateArgs, *, token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for arg, key in (("name", "name"), ("url", "base_url"), ("auth_kind", "auth_kind"),
                     ("auth_header", "auth_header"), ("app_namespace", "app_namespace"),
                     ("rate_cap_per_minute", "rate_cap_per_minute"), ("allowed_tools", "allowed_tools"),
                     ("call_timeout", "call_timeout"), ("connect_timeout", "connect_timeout")):
        if getattr(args, arg) is not None:
            body[key] = getattr(args, arg)
    if args.allow_all_tools:
        body["allowed_tools"] = None
    if token is not None:
        body["token"] = token
    return body


def _new_credential(args: UpdateArgs, prep: dict[str, Any]) -> bool:
    """A credential must be given: a rotation, or a switch to a scheme that sends one."""
    switching = args.auth_kind in ("bearer", "header_token") and args.auth_kind != prep["auth_kind"]
    return args.rotate_token or switching or args.token_ref is not None


async def prepare_update(ctx: ToolContext, args: UpdateArgs) -> dict[str, Any]:
    prep = await prepare_target(ctx, args)
    new_token = _new_credential(args, prep)
    body = _update_body(args, token=_PLACEHOLDER_TOKEN if new_token else None)
    if not body:
        raise ToolArgumentError("nothing to change: give at least one field to update")
    try:
        request = UpdateSource.model_validate(body)
        # The auth rule spans fields: ask it about the source as it would be after the change.
        kind = args.auth_kind or prep["auth_kind"]
        header = args.auth_header or (prep["auth_header"] if kind == "header_token" else None)
        rules.check_auth_combination(kind, has_token=new_token or prep["has_token"],
                                     token_sent=new_token, auth_header=header)
    except (ValidationError, ValueError) as exc:
        raise _registry_refused(exc) from None
    if args.url:
        _check_url(ctx, request.base_url if isinstance(request.base_url, str) else None)
        prep["new_url"] = _shown_url(request.base_url if isinstance(request.base_url, str) else None)
    return prep


def summary_update(args: UpdateArgs, prep: dict[str, Any]) -> str:
    parts = []
    if args.name:
        parts.append(f'rename it to "{args.name}"')
    if args.url:
        parts.append(f"move it to {prep.get('new_url', args.url)}"
                     + (" (with the key given in it)" if REF_RE.search(args.url) else ""))
    if args.auth_kind:
        parts.append(f"switch to {_auth_words(args.auth_kind, args.auth_header or prep['auth_header'])}")
    elif args.auth_header:
        parts.append(f"send the token in the {args.auth_header} header")
    if (args.rotate_token or args.token_ref) and not (args.auth_kind and args.auth_kind != prep["auth_kind"]):
        parts.append(f"replace the stored token with a new one ({MASK})")
    if args.app_namespace:
        parts.append(f"change the tool-name prefix to {args.app_namespace}")
    if args.rate_cap_per_minute is not None:
        parts.append(f"set the rate cap to {args.rate_cap_per_minute} calls per minute")
    if args.allowed_tools is not None:
        parts.append("offer only " + ", ".join(args.allowed_tools))
    if args.allow_all_tools:
        parts.append("offer all of its tools")
    if args.call_timeout is not None:
        parts.append(f"let one tool call take up to {_seconds(args.call_timeout)}")
    if args.connect_timeout is not None:
        parts.append(f"let connecting take up to {_seconds(args.connect_timeout)}")
    text = f"Update {_target(prep)}: " + "; ".join(parts) + "."
    if args.url or args.auth_kind or args.auth_header or args.rotate_token or args.token_ref \
            or args.connect_timeout is not None:
        text += " A health check runs right after."
    return text


def secret_update(ctx: ToolContext, args: UpdateArgs, prep: dict[str, Any]) -> SecretNeed | None:
    kind = args.auth_kind or prep["auth_kind"]
    if kind == "none" or not _new_credential(args, prep) or ctx.secret(args.token_ref) is not None:
        return None
    what = "bearer token" if kind == "bearer" else f"{args.auth_header or prep['auth_header']} token"
    return SecretNeed("token_ref", f'the new {what} for "{prep["name"]}" ({prep["url"]})')


async def update(ctx: ToolContext, args: UpdateArgs, prep: dict[str, Any]) -> Lifecycle:
    token = None
    if _new_credential(args, prep) and (args.auth_kind or prep["auth_kind"]) != "none":
        token = ctx.secret(args.token_ref)
        if token is None:
            raise ValidationFailed("the new token is no longer available; ask the person again",
                                   field="token_ref")
    body = _update_body(args, token=token)
    if "base_url" in body:
        body["base_url"] = _dialled_url(ctx, body["base_url"])
    outcome = await ctx.backend.update_source(prep["id"], body)
    return await _with_view(ctx, outcome)


def _seconds(value: float) -> str:
    shown = f"{value:g}"
    return f"{shown} second" + ("" if shown == "1" else "s")


def _target(prep: dict[str, Any]) -> str:
    return f'"{prep["name"]}" ({prep["id"]}, {prep["url"]}) in sandbox "{prep["sandbox"]}"'


def summary_simple(verb: str, tail: str) -> Callable[[SourceArgs, dict[str, Any]], str]:
    def summary(args: SourceArgs, prep: dict[str, Any]) -> str:
        return f"{verb} {_target(prep)}. {tail}" + _losing(prep)
    return summary


_MAX_AGENTS_NAMED = 5
_IMPACT_SECONDS = 3.0


async def prepare_switch_off(ctx: ToolContext, args: SourceArgs) -> dict[str, Any]:
    """`prepare_target`, plus which agents use the source's tools now (for a pause or revoke:
    the person sees who loses what before the yes). Best effort: left out if the catalog cannot
    be read quickly."""
    prep = await prepare_target(ctx, args)
    if prep["status"] != "active":
        return prep
    try:
        catalog, agents = await asyncio.wait_for(asyncio.gather(
            ctx.backend.agent_tools(None, sandbox=prep["sandbox_id"]),
            ctx.backend.page_agents(sandbox=prep["sandbox_id"], limit=100)), _IMPACT_SECONDS)
    except (ConciergeError, asyncio.TimeoutError):
        return prep
    tools = [t.name for t in catalog.tools if t.source_id == prep["id"]]
    losing: list[tuple[str, int]] = []
    for agent in agents.items:
        if agent.status != "active" or "user_mcp" not in agent.tool_sources:
            continue
        allowlist = agent.tool_allowlist
        n = len(tools) if allowlist in ("all", []) else sum(1 for t in tools if matches_any(list(allowlist), t))
        if n:
            losing.append((agent.slug, n))
    prep["losing"] = losing
    prep["agents_unread"] = agents.more
    return prep


def _losing(prep: dict[str, Any]) -> str:
    losing = prep.get("losing")
    if losing is None:
        return ""
    if not losing:
        return " No agent uses its tools right now." if not prep.get("agents_unread") else ""
    named = ", ".join(f"{slug} ({n} tool{'s' if n != 1 else ''})" for slug, n in losing[:_MAX_AGENTS_NAMED])
    more = len(losing) - _MAX_AGENTS_NAMED + (prep.get("agents_unread") or 0)
    return f" Agents using its tools now: {named}" + (f" and {more} more" if more > 0 else "") + "."


async def pause(ctx: ToolContext, args: SourceArgs, prep: dict[str, Any]) -> Lifecycle:
    return _lifecycle(await ctx.backend.pause_source(prep["id"]))


async def resume(ctx: ToolContext, args: SourceArgs, prep: dict[str, Any]) -> Lifecycle:
    return await _with_view(ctx, await ctx.backend.resume_source(prep["id"]))


async def revoke(ctx: ToolContext, args: SourceArgs, prep: dict[str, Any]) -> Lifecycle:
    return _lifecycle(await ctx.backend.revoke_source(prep["id"]))


async def prepare_approve(ctx: ToolContext, args: ApproveArgs) -> dict[str, Any]:
    """The source and exactly what would be approved (refused when nothing is held)."""
    prep = await prepare_target(ctx, args)
    held = await ctx.backend.held_tools(prep["id"])
    if args.tools:
        unknown = [t for t in args.tools if t not in {h.tool for h in held}]
        if unknown:
            raise ValidationFailed(f"tool {unknown[0]!r} of {prep['name']} is not held (held: "
                                   f"{', '.join(h.tool for h in held) or 'none'})", field="tools")
        held = [h for h in held if h.tool in args.tools]
    if not held:
        raise ValidationFailed(f"nothing of {prep['name']} is held: every listed tool is approved", field="tools")
    return prep | {"held": [_held_row(h).to_wire() for h in held]}


def summary_approve(args: ApproveArgs, prep: dict[str, Any]) -> str:
    parts = [f"{h['tool']} ({'; '.join(h['changes'])})" for h in prep["held"]]
    return (f"Approve the changed tool definitions of {_target(prep)}: {', '.join(parts)}. "
            "Agents will be offered them as they are now.")


async def accept_changes(ctx: ToolContext, args: ApproveArgs, prep: dict[str, Any]) -> ApprovedTools:
    names = [h["tool"] for h in prep["held"]]
    result = await ctx.backend.approve_tools(prep["id"], names)
    return ApprovedTools(data_source_id=prep["id"], name=prep["name"],
                         approved=[_held_row(h) for h in result.approved],
                         still_held=[_held_row(h) for h in result.still_held], detail=result.detail)
