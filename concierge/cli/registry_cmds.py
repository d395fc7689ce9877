"""Non-conversational registry commands: sandbox, source, agent, audit, demo-server."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from concierge import config
from concierge.cli import catalog_cmds
from concierge.cli.output import emit, table
from concierge.errors import ValidationFailed

if TYPE_CHECKING:
    from concierge.backend import Backend
    from concierge.registry.catalog_models import HeldTool
    from concierge.registry.models import Outcome, SourceView
    from concierge.registry.pages import Page

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    # sandbox
    sandbox = sub.add_parser("sandbox", help="create and list sandboxes").add_subparsers(
        dest="sandbox_cmd", metavar="SUBCOMMAND", required=True)
    p = sandbox.add_parser("create", parents=[common], help="create a sandbox")
    p.add_argument("name")
    p.set_defaults(handler=sandbox_create)
    p = sandbox.add_parser("list", parents=[common], help="list sandboxes")
    _paging(p)
    p.set_defaults(handler=sandbox_list)

    # source
    source = sub.add_parser("source", help="manage data sources").add_subparsers(
        dest="source_cmd", metavar="SUBCOMMAND", required=True)
    user_mcp = source.add_parser("user-mcp", help="register, update, test and revoke your MCP servers"
                                 ).add_subparsers(dest="user_mcp_cmd", metavar="SUBCOMMAND", required=True)
    p = user_mcp.add_parser("add", parents=[common], help="register an MCP server (runs a health check)")
    p.add_argument("name", help="a label for the source, e.g. 'Acme internal'")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url", help="the server's MCP URL (https; http for localhost); not for --transport stdio")
    where.add_argument("--url-env", metavar="VAR", help=_URL_ENV_HELP)
    p.add_argument("--auth", choices=AUTH_KINDS, help="none | bearer | header_token | oauth (default for "
                   "--transport stdio: none)")
    _source_options(p)
    _wait_option(p)
    p.set_defaults(handler=source_add)

    p = user_mcp.add_parser("update", parents=[common], help="change a source; omitted options keep their value")
    p.add_argument("id")
    p.add_argument("--name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--url")
    where.add_argument("--url-env", metavar="VAR", help=_URL_ENV_HELP)
    p.add_argument("--auth", choices=AUTH_KINDS)
    _source_options(p)
    p.add_argument("--allow-all", action="store_true", help="remove the per-source tool allowlist")
    p.set_defaults(handler=source_update)

    p = user_mcp.add_parser("approve", parents=[common],
                            help="approve tools held because their definition changed (see `show`)")
    p.add_argument("id")
    p.add_argument("--tool", action="append", metavar="NAME",
                   help="approve only this tool (its name on the server; repeat); default: every held tool")
    p.add_argument("--sandbox")
    p.set_defaults(handler=source_approve)

    p = user_mcp.add_parser("authorize", parents=[common],
                            help="sign an OAuth source in (again): prints the link to open, waits for it")
    p.add_argument("id")
    p.add_argument("--sandbox")
    _wait_option(p)
    p.set_defaults(handler=source_authorize)

    for name, fn, text in (("test", source_test, "re-run the health check (lists the tools again)"),
                           ("show", source_show, "show one source and its held tools (never its credential)"),
                           ("revoke", source_revoke, "delete the secret and disconnect (terminal)")):
        p = user_mcp.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.add_argument("--sandbox")
        if name == "show":
            _log_lines_option(p)
        p.set_defaults(handler=fn)

    p = source.add_parser("list", parents=[common], help="list sources")
    p.add_argument("--sandbox")
    p.add_argument("--status", choices=["active", "paused", "error", "auth_required", "disconnected"])
    _paging(p)
    p.set_defaults(handler=source_list)
    p = source.add_parser("show", parents=[common], help="show one source (never its credential)")
    p.add_argument("id")
    p.add_argument("--sandbox")
    _log_lines_option(p)
    p.set_defaults(handler=source_show)
    for name, fn, text in (
                           ("pause", source_pause, "stop offering the source's tools"),
                           ("resume", source_resume, "resume and re-check a paused source")):
        p = source.add_parser(name, parents=[common], help=text)
        p.add_argument("id")
        p.add_argument("--sandbox")
        p.set_defaults(handler=fn)
    p = source.add_parser("delete", parents=[common],
                          help="PERMANENTLY delete a source, its secrets and anything ingested")
    p.add_argument("id")
    p.add_argument("--sandbox")
    p.add_argument("--yes", action="store_true", help="required: confirms the permanent deletion")
    p.set_defaults(handler=source_delete)
    p = source.add_parser("pull", parents=[common], help="run the source's ingest_tool_calls and store results")
    p.add_argument("id")
    p.add_argument("--sandbox")
    p.set_defaults(handler=catalog_cmds.source_pull)

    # agent
    agent = sub.add_parser("agent", help="manage agents").add_subparsers(
        dest="agent_cmd", metavar="SUBCOMMAND", required=True)
    p = agent.add_parser("create", parents=[common], help="create an agent")
    p.add_argument("slug")
    p.add_argument("--name")
    p.add_argument("--sandbox")
    p.add_argument("--allowlist", action="append", metavar="NAME",
                   help="a tool name or glob the agent may call (repeat; none = all tools)")
    p.add_argument("--tool-source", action="append", metavar="KIND", help="default: user_mcp")
    p.add_argument("--system-prompt")
    p.set_defaults(handler=agent_create)
    p = agent.add_parser("update", parents=[common], help="change an agent")
    p.add_argument("slug")
    p.add_argument("--name")
    p.add_argument("--sandbox")
    p.add_argument("--allowlist", action="append", metavar="NAME")
    p.add_argument("--allow-all", action="store_true", help="clear the allowlist (all tools)")
    p.add_argument("--tool-source", action="append", metavar="KIND")
    p.add_argument("--system-prompt")
    p.set_defaults(handler=agent_update)
    p = agent.add_parser("list", parents=[common], help="list agents")
    p.add_argument("--sandbox")
    _paging(p)
    p.set_defaults(handler=agent_list)
    p = agent.add_parser("show", parents=[common], help="show an agent")
    p.add_argument("slug")
    p.add_argument("--sandbox")
    p.set_defaults(handler=agent_show)
    for verb, status, helptext in (("pause", "paused", "refuse every tool call the agent makes, until resumed"),
                                   ("resume", "active", "let a paused agent call its tools again")):
        p = agent.add_parser(verb, parents=[common], help=helptext)
        p.add_argument("slug")
        p.add_argument("--sandbox")
        p.set_defaults(handler=agent_set_status, status=status)
    p = agent.add_parser("tools", parents=[common], help="the agent's tools right now (live catalog)")
    p.add_argument("slug", nargs="?", help="omit to see every tool an agent could have")
    p.add_argument("--sandbox")
    p.add_argument("--app", metavar="NAMESPACE", help="only this app_namespace's tools")
    p.add_argument("--trace", action="store_true", help="show the full resolution trace")
    p.set_defaults(handler=catalog_cmds.agent_tools)

    # audit
    p = sub.add_parser("audit", parents=[common], help="show the audit log, newest first")
    p.add_argument("--sandbox")
    _paging(p, default=20)
    p.set_defaults(handler=audit)

    # demo server
    p = sub.add_parser("demo-server", parents=[common], help="serve a small demo MCP server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", help="require this token (a demo value, not a real secret)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--header", help="send the token in this header instead of Authorization: Bearer")
    group.add_argument("--query-param", metavar="NAME",
                       help="send the token in the URL instead, as ?NAME=TOKEN (e.g. api_key)")
    p.set_defaults(run=demo_server)


_URL_ENV_HELP = ("read the URL from this environment variable: for a URL with a key in it "
                 "(?api_key=…), kept out of the process list and shell history")


class _RefuseToken(argparse.Action):
    """``--token VALUE`` would land in shell history and process lists: refuse it, and say why."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        parser.error("a token is never taken as a plain argument (it would land in your shell "
                     "history); use --token-stdin or --token-env VAR")


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", action=_RefuseToken, help=argparse.SUPPRESS)
    p.add_argument("--header", help="header name for --auth header_token, e.g. X-Api-Key")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token-stdin", action="store_true", help="read the token from standard input")
    tok.add_argument("--token-env", metavar="VAR", help="read the token from this environment variable")
    p.add_argument("--sandbox", help="sandbox name or id (default: 'default')")
    p.add_argument("--namespace", help="tool-name prefix (<=64 of A-Z a-z 0-9 _ -)")
    p.add_argument("--allow", action="append", metavar="TOOL",
                   help="only offer this tool from the server (repeat)")
    p.add_argument("--rate-cap", type=int, metavar="N", help="tool calls per minute, 1-600")
    p.add_argument("--webhook-rate-cap", type=int, metavar="N", help="webhook events per minute, 1-6000")
    p.add_argument("--connect-timeout", type=float, metavar="S", help="seconds (default 10)")
    p.add_argument("--call-timeout", type=float, metavar="S", help="seconds (default 60)")
    p.add_argument("--transport", choices=["auto", "streamable-http", "sse", "stdio"],
                   help="stdio runs --command on this machine and speaks MCP on its stdin/stdout")
    p.add_argument("--pin-tools", action=argparse.BooleanOptionalAction, default=None,
                   help="hold a tool whose definition changes until it is approved (default on; "
                        "--no-pin-tools for servers whose tools change by design)")
    p.add_argument("--header-value", action="append", metavar="NAME=VALUE",
                   help="an extra header that is not a secret, e.g. X-Tenant=acme (repeat)")
    stdio = p.add_argument_group("stdio servers (--transport stdio)")
    stdio.add_argument("--command", dest="stdio_command", metavar="CMD",
                       help="the program, e.g. uvx, npx or python")
    stdio.add_argument("--arg", action="append", metavar="A",
                       help="one argument of the program (repeat; write --arg=-m for one that starts with -)")
    stdio.add_argument("--env", action="append", metavar="KEY=VALUE",
                       help="an environment variable that is not a secret (repeat)")
    stdio.add_argument("--env-secret", action="append", metavar="KEY",
                       help="a secret environment variable: its value is read from standard input, one "
                            "line per --env-secret in order (after --token-stdin/--client-secret-stdin), "
                            "or from the variable of the same name with --env-secret-from-env; kept in "
                            "the vault, never shown")
    stdio.add_argument("--env-secret-from-env", action="store_true",
                       help="read each --env-secret KEY from Concierge's own environment variable KEY")
    stdio.add_argument("--cwd", metavar="DIR", help="the program's working directory (absolute)")
    oauth = p.add_argument_group("OAuth 2.1 (--auth oauth)")
    oauth.add_argument("--client-id", metavar="ID", help="a pre-registered client id (default: Concierge "
                       "registers itself with the authorization server)")
    oauth.add_argument("--client-secret-stdin", action="store_true",
                       help="read the pre-registered client's secret from standard input")
    oauth.add_argument("--scope", action="append", metavar="S", help="a scope to ask for (repeat)")
    oauth.add_argument("--grant", choices=["authorization_code", "client_credentials"],
                       help="client_credentials for machine-to-machine servers (needs --client-id and "
                            "--client-secret-stdin); default authorization_code (a person signs in)")
    p.add_argument("--ingest", action="append", metavar="JSON",
                   help='a tool call to run on pull, e.g. \'{"name": "list_docs", "arguments": {}}\'')


AUTH_KINDS = ["none", "bearer", "header_token", "oauth"]
FLAGS = {"base_url": "--url", "auth_kind": "--auth", "auth_header": "--header", "token": "--token-stdin",
         "headers": "--header-value", "command": "--command", "args": "--arg", "env": "--env",
         "secret_env": "--env-secret", "cwd": "--cwd", "client_id": "--client-id",
         "client_secret": "--client-secret-stdin", "scopes": "--scope", "grant": "--grant",
         "transport": "--transport", "app_namespace": "--namespace", "allowed_tools": "--allow",
         "rate_cap_per_minute": "--rate-cap", "connect_timeout": "--connect-timeout",
         "call_timeout": "--call-timeout", "ingest_tool_calls": "--ingest"}
"""The flag of each body field, so an error names what the user typed."""


def _with_flag(exc: ValidationFailed, args: argparse.Namespace | None = None) -> ValidationFailed:
    """``exc`` with the flag named first (``--command: command is only used …``; the URL's
    flag is ``--url-env`` when it came from there)."""
    first = exc.detail.split(" ", 1)[0].rstrip(":").split(".")[0]
    field = first if first in FLAGS else exc.field
    flag = FLAGS.get(field or "")
    if field == "base_url" and getattr(args, "url_env", None):
        flag = "--url-env"
    if flag is None or exc.detail.startswith("--"):
        return exc
    return type(exc)(f"{flag}: {exc.detail}", field=exc.field)


def _wait_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true",
                   help="OAuth: do not wait for the sign-in; the source stays auth_required (finish it "
                        "with `source user-mcp authorize ID`)")
    p.add_argument("--sign-in-timeout", type=float, default=600.0, metavar="S",
                   help="OAuth: seconds to wait for the sign-in (default 600)")


def _read_line(prompt: str) -> str | None:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{prompt} (hidden): ").strip() or None
    return sys.stdin.readline().strip() or None


def _read_token(args: argparse.Namespace) -> str | None:
    if args.token_stdin:
        return _read_line("Token")
    if args.token_env:
        value = config.env_value(args.token_env)
        if not value:
            raise ValidationFailed(f"--token-env: the environment variable {args.token_env} is not set",
                                   field="token")
        return value
    return None


def _source_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for opt, key in (("name", "name"), ("url", "base_url"), ("auth", "auth_kind"),
                     ("header", "auth_header"), ("namespace", "app_namespace"),
                     ("allow", "allowed_tools"), ("rate_cap", "rate_cap_per_minute"),
                     ("webhook_rate_cap", "webhook_rate_cap_per_minute"),
                     ("connect_timeout", "connect_timeout"), ("call_timeout", "call_timeout"),
                     ("transport", "transport"), ("pin_tools", "pin_tools")):
        value = getattr(args, opt, None)
        if value is not None:
            body[key] = value
    if args.ingest:
        try:
            body["ingest_tool_calls"] = [json.loads(x) for x in args.ingest]
        except json.JSONDecodeError as exc:
            raise ValidationFailed(f"--ingest must be JSON like "
                                   f"'{{\"name\": \"list_docs\", \"arguments\": {{}}}}' ({exc.msg})",
                                   field="ingest_tool_calls") from None
    if getattr(args, "allow_all", False):
        body["allowed_tools"] = None
    if getattr(args, "url_env", None):
        url = config.env_value(args.url_env)
        if not url:
            raise ValidationFailed(f"--url-env: the environment variable {args.url_env} is not set",
                                   field="base_url")
        body["base_url"] = url
    token = _read_token(args)
    if token is not None:
        body["token"] = token
    _stdio_and_oauth_body(args, body)
    return body


def _pairs(values: list[str] | None, flag: str) -> dict[str, str] | None:
    if values is None:
        return None
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationFailed(f"{flag} takes NAME=VALUE (got {item[:60]!r})", field=flag)
        if name.strip() in out:
            raise ValidationFailed(f"{flag} gives {name.strip()} twice", field=flag)
        out[name.strip()] = value
    return out


def _stdio_and_oauth_body(args: argparse.Namespace, body: dict[str, Any]) -> None:
    headers = _pairs(getattr(args, "header_value", None), "--header-value")
    if headers is not None:
        body["headers"] = headers
    if args.stdio_command is not None:
        body["command"] = args.stdio_command
        if getattr(args, "url", None) is None and "transport" not in body:
            body["transport"] = "stdio"  # --command alone says it
    if args.arg is not None:
        body["args"] = args.arg
    env = _pairs(args.env, "--env")
    if env is not None:
        body["env"] = env
    if args.cwd is not None:
        body["cwd"] = args.cwd
    if args.client_secret_stdin:
        secret = _read_line("Client secret")
        if not secret:
            raise ValidationFailed("--client-secret-stdin: nothing was read from standard input",
                                   field="--client-secret-stdin")
        body["client_secret"] = secret
    if args.env_secret:
        secrets: dict[str, str] = {}
        for name in args.env_secret:
            if name in secrets:
                raise ValidationFailed(f"--env-secret gives {name} twice", field="--env-secret")
            if args.env_secret_from_env:
                value = config.env_value(name)
                if not value:
                    raise ValidationFailed(f"--env-secret {name}: the environment variable {name} is not "
                                           "set (--env-secret-from-env)", field="--env-secret")
            else:
                value = _read_line(f"Value of {name}")
                if not value:
                    raise ValidationFailed(f"--env-secret {name}: no value was read from standard input "
                                           "(one line per --env-secret)", field="--env-secret")
            secrets[name] = value
        body["secret_env"] = secrets
    for opt, key in (("client_id", "client_id"), ("scope", "scopes"), ("grant", "grant")):
        value = getattr(args, opt, None)
        if value is not None:
            body[key] = value
    if body.get("auth_kind") is None and (body.get("transport") == "stdio"):
        body["auth_kind"] = "none"


def _outcome(outcome: Outcome, args: argparse.Namespace) -> int:
    human = f"{outcome.data_source_id}  {outcome.name}  status={outcome.status}"
    if outcome.detail:
        human += f"\n{outcome.detail}"
    if outcome.health_error and outcome.status in ("error", "auth_required"):
        human += f"\nhealth error: {outcome.health_error}"
    if outcome.status == "auth_required":
        human += (f"\nsign in with: concierge source user-mcp authorize {outcome.data_source_id}"
                  if not outcome.authorize_url else f"\nopen this link to sign in: {outcome.authorize_url}")
    emit(outcome, as_json=args.json, human=human)
    return 1 if outcome.status in ("error", "auth_required") else 0


def _log_lines_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-lines", type=int, default=20, metavar="N",
                   help="stdio: how many lines of the program's stderr to show (default 20)")


def _source_lines(s: SourceView) -> str:
    token = "none" if not s.has_token else ("stored" + (f" (…{s.token_last4})" if s.token_last4 else ""))
    rows = [
        ("id", s.id), ("name", s.name), ("status", s.status.value), ("url", s.base_url or None),
        ("command", s.command_line), ("cwd", s.cwd),
        ("env", ", ".join(f"{k}={v}" for k, v in (s.env or {}).items()) or None),
        ("secret env", ", ".join(f"{k}=***" for k in s.secret_env or []) or None),
        ("headers", ", ".join(f"{k}: {v}" for k, v in (s.headers or {}).items()) or None),
        ("oauth", None if s.grant is None else (
            f"{s.grant}" + (f", client {s.client_id}" if s.client_id else ", client registered by Concierge")
            + (f", scopes {' '.join(s.scopes)}" if s.scopes else "")
            + (", signed in" if s.signed_in else ", not signed in"))),
        ("auth", s.auth_kind.value + (f" via {s.auth_header}" if s.auth_header else "")),
        ("token", token), ("namespace", s.app_namespace),
        ("allowed tools", ", ".join(s.allowed_tools) if s.allowed_tools else "all"),
        ("ingestion", s.ingestion_mode), ("rate cap", f"{s.rate_cap_per_minute}/min"),
        ("timeouts", f"connect {s.connect_timeout:g}s, call {s.call_timeout:g}s"),
        ("tools", s.tool_count), ("server", s.server_name), ("last checked", s.last_checked_at),
        ("health error", s.health_error),
    ]
    return "\n".join(f"{k:>14}: {v}" for k, v in rows if v is not None)


def _paging(p: argparse.ArgumentParser, *, default: int | None = None) -> None:
    from concierge.registry.pages import DEFAULT_LIMIT, MAX_LIMIT

    p.add_argument("--limit", type=int, default=default or DEFAULT_LIMIT, metavar="N",
                   help=f"at most N rows (1-{MAX_LIMIT}, default {default or DEFAULT_LIMIT})")
    p.add_argument("--cursor", metavar="CURSOR", help="the next page: the cursor the previous page printed")


def _page_args(args: argparse.Namespace) -> dict[str, Any]:
    """``--limit`` / ``--cursor`` checked here, so errors name the flags as typed."""
    from concierge.registry.pages import check_limit

    if args.cursor is not None and not args.cursor.strip():
        raise ValidationFailed("--cursor must be the cursor a previous page printed (got an empty one)",
                               field="--cursor")
    return {"limit": check_limit(args.limit, field="--limit"), "cursor": args.cursor}


async def _page(fetch: Any, args: argparse.Namespace, **kwargs: Any) -> Page[Any]:
    from concierge.errors import InvalidCursor

    try:
        return await fetch(**kwargs, **_page_args(args))
    except InvalidCursor as exc:
        raise InvalidCursor(exc.detail.replace("cursor", "--cursor", 1), field="--cursor") from None


def _emit_page(page: Page[Any], args: argparse.Namespace, human: str) -> None:
    """A page: the rows, then how many more there are and the flag that shows them."""
    if page.next_cursor is not None and human:
        more = f"{page.more} more" if not args.cursor else "more"  # a later page's offset is unknown
        human += f"\n({len(page.items)} of {page.total} shown) {more}: --cursor {page.next_cursor}"
    emit(page, as_json=args.json, human=human)


async def sandbox_create(args: argparse.Namespace, backend: Backend) -> int:
    sb = await backend.create_sandbox(args.name)
    emit(sb, as_json=args.json, human=f"created sandbox {sb.name} ({sb.id})")
    return 0


async def sandbox_list(args: argparse.Namespace, backend: Backend) -> int:
    page = await _page(backend.page_sandboxes, args)
    _emit_page(page, args, table([(s.id, s.name, s.created_at) for s in page.items],
                                 ["ID", "NAME", "CREATED"]))
    return 0


async def source_add(args: argparse.Namespace, backend: Backend) -> int:
    body = _source_body(args)
    if body.get("transport") != "stdio":
        if args.url is None and not args.url_env:
            raise ValidationFailed("--url is required (or --transport stdio --command CMD for a program "
                                   "run on this machine)", field="--url")
        if args.auth is None:
            raise ValidationFailed("--auth is required with --url: none, bearer, header_token or oauth",
                                   field="--auth")
    try:
        outcome = await backend.register_source(body, sandbox=args.sandbox)
    except ValidationFailed as exc:
        raise _with_flag(exc, args) from None
    secret = getattr(outcome, "webhook_secret", None)
    if outcome.status == "auth_required" and body.get("grant") != "client_credentials":
        outcome = await _sign_in(args, backend, outcome)
    if secret is None:
        return _outcome(outcome, args)
    # The webhook signing secret is issued once, here; it cannot be read back later.
    value = secret.get_secret_value()
    if args.json:
        emit(outcome.model_dump(mode="json") | {"webhook_secret": value}, as_json=True)
        return 1 if outcome.status in ("error", "auth_required") else 0
    code = _outcome(outcome, args)
    print(f"webhook signing secret (shown once; rotate via the API if lost): {value}")
    return code


async def _sign_in(args: argparse.Namespace, backend: Backend, outcome: Outcome | None = None) -> Outcome:
    """Print the link to open (stderr; ``{"authorize_url": …}`` first with --json), then wait
    for the sign-in and run the health check, unless --no-wait; the outcome."""
    source_id = outcome.data_source_id if outcome is not None else args.id
    assert source_id is not None
    sandbox = getattr(args, "sandbox", None)
    begin = getattr(backend, "begin_sign_in", None)
    if begin is None:  # a RemoteBackend: `serve` holds the sign-in and its callback route
        started: Outcome = await backend.authorize_source(source_id, sandbox=sandbox)  # type: ignore[attr-defined]
        if started.authorize_url is None or args.no_wait:
            if started.authorize_url:
                _announce(started.authorize_url, args)
            return started
        _announce(started.authorize_url, args)
        final: Outcome = await backend.wait_signed_in(  # type: ignore[attr-defined]
            source_id, sandbox=sandbox, timeout=args.sign_in_timeout)
        return final
    if args.no_wait:
        # The sign-in's callback would listen in this process, which ends now: no link to hand out.
        return outcome or await backend.test_source(source_id, sandbox=sandbox)
    sign_in = await begin(source_id, sandbox=sandbox, timeout=args.sign_in_timeout)
    if sign_in.authorize_url is not None:  # (None: the server let us in without a sign-in)
        _announce(sign_in.authorize_url, args)
    done: Outcome = await backend.finish_sign_in(source_id, sign_in)  # type: ignore[attr-defined]
    return done


def _announce(url: str, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({"authorize_url": url}), flush=True)
    print(f"Open this URL to authorize: {url}", file=sys.stderr, flush=True)


async def source_authorize(args: argparse.Namespace, backend: Backend) -> int:
    return _outcome(await _sign_in(args, backend), args)


async def source_update(args: argparse.Namespace, backend: Backend) -> int:
    try:
        outcome = await backend.update_source(args.id, _source_body(args), sandbox=args.sandbox)
    except ValidationFailed as exc:
        raise _with_flag(exc, args) from None
    return _outcome(outcome, args)


async def source_test(args: argparse.Namespace, backend: Backend) -> int:
    return _outcome(await backend.test_source(args.id, sandbox=args.sandbox), args)


async def source_revoke(args: argparse.Namespace, backend: Backend) -> int:
    return _outcome(await backend.revoke_source(args.id, sandbox=args.sandbox), args)


async def source_pause(args: argparse.Namespace, backend: Backend) -> int:
    return _outcome(await backend.pause_source(args.id, sandbox=args.sandbox), args)


async def source_resume(args: argparse.Namespace, backend: Backend) -> int:
    return _outcome(await backend.resume_source(args.id, sandbox=args.sandbox), args)


async def source_list(args: argparse.Namespace, backend: Backend) -> int:
    page = await _page(backend.page_sources, args, sandbox=args.sandbox, status=args.status)
    human = table([(s.id, s.name, s.status.value, s.app_namespace, s.auth_kind.value,
                    s.tool_count, s.base_url or (f"stdio: {s.command_line}" if s.command_line else ""))
                   for s in page.items],
                  ["ID", "NAME", "STATUS", "NAMESPACE", "AUTH", "TOOLS", "URL"]) or (
        "no more sources" if args.cursor else "no sources yet")
    _emit_page(page, args, human)
    return 0


def _held_lines(held: list[HeldTool]) -> str:
    lines = []
    for h in held:
        lines.append(f"  {h.tool} ({'changed' if h.status == 'changed' else 'new'}, held since {h.since}):")
        lines.extend(f"    - {change}" for change in h.changes)
    return "\n".join(lines)


async def source_show(args: argparse.Namespace, backend: Backend) -> int:
    s = await backend.get_source(args.id, sandbox=args.sandbox)
    held = await backend.held_tools(s.id, sandbox=args.sandbox) if s.pin_tools else []
    tail: list[str] | None = None
    if s.transport == "stdio":
        log_of = getattr(backend, "process_log", None)
        tail = log_of(s.id, lines=max(0, args.log_lines)) if log_of else None
    human = _source_lines(s)
    if tail is not None:
        human += "\n" + f"{'stderr':>14}: " + (("\n" + " " * 16).join(tail) if tail else "(nothing yet)")
    if held:
        human += (f"\n\n{len(held)} tool(s) held until approved (not offered, calls refused); "
                  f"as of the last listing:\n{_held_lines(held)}\n"
                  f"approve with: concierge source user-mcp approve {s.id} [--tool NAME]")
    emit(s.model_dump(mode="json") | {"held_tools": [h.model_dump(mode="json") for h in held]}
         | ({"stderr_tail": tail} if tail is not None else {}), as_json=args.json, human=human)
    return 0


async def source_approve(args: argparse.Namespace, backend: Backend) -> int:
    result = await backend.approve_tools(args.id, args.tool, sandbox=args.sandbox)
    human = result.detail
    if result.approved:
        human += "\napproved:\n" + _held_lines(result.approved)
    if result.still_held:
        human += "\nstill held:\n" + _held_lines(result.still_held)
    emit(result, as_json=args.json, human=human)
    return 0


async def source_delete(args: argparse.Namespace, backend: Backend) -> int:
    if not args.yes:
        raise ValidationFailed("source delete is permanent (the row, its secrets and anything "
                               "ingested); add --yes to confirm, or use `source user-mcp revoke`",
                               field="yes")
    await backend.delete_source(args.id, sandbox=args.sandbox)
    emit({"data_source_id": args.id, "deleted": True}, as_json=args.json,
         human=f"deleted {args.id} permanently")
    return 0


async def agent_create(args: argparse.Namespace, backend: Backend) -> int:
    body: dict[str, Any] = {"slug": args.slug, "tool_allowlist": args.allowlist or []}
    if args.name:
        body["name"] = args.name
    if args.tool_source:
        body["tool_sources"] = args.tool_source
    if args.system_prompt is not None:
        body["system_prompt"] = args.system_prompt
    agent = await backend.create_agent(body, sandbox=args.sandbox)
    emit(agent, as_json=args.json, human=f"created agent {agent.slug} ({agent.id})")
    return 0


async def agent_update(args: argparse.Namespace, backend: Backend) -> int:
    body: dict[str, Any] = {}
    if args.name:
        body["name"] = args.name
    if args.allowlist:
        body["tool_allowlist"] = args.allowlist
    if args.allow_all:
        body["tool_allowlist"] = []
    if args.tool_source:
        body["tool_sources"] = args.tool_source
    if args.system_prompt is not None:
        body["system_prompt"] = args.system_prompt
    agent = await backend.update_agent(args.slug, body, sandbox=args.sandbox)
    emit(agent, as_json=args.json, human=f"updated agent {agent.slug}")
    return 0


async def agent_list(args: argparse.Namespace, backend: Backend) -> int:
    page = await _page(backend.page_agents, args, sandbox=args.sandbox)
    human = table([(a.slug, a.name, ",".join(a.tool_sources), ",".join(a.tool_allowlist) or "all")
                   for a in page.items], ["SLUG", "NAME", "TOOL SOURCES", "ALLOWLIST"]) or (
        "no more agents" if args.cursor else "no agents yet")
    _emit_page(page, args, human)
    return 0


async def agent_set_status(args: argparse.Namespace, backend: Backend) -> int:
    agent = await backend.update_agent(args.slug, {"status": args.status}, sandbox=args.sandbox)
    done = "paused" if agent.status == "paused" else "resumed"
    emit(agent, as_json=args.json, human=f"{done} agent {agent.slug}" + (
        ": the gateway refuses its tool calls until `concierge agent resume " + agent.slug + "`"
        if agent.status == "paused" else ""))
    return 0


async def agent_show(args: argparse.Namespace, backend: Backend) -> int:
    a = await backend.get_agent(args.slug, sandbox=args.sandbox)
    human = "\n".join(f"{k:>14}: {v}" for k, v in (
        ("slug", a.slug), ("name", a.name), ("id", a.id), ("status", a.status),
        ("tool sources", ", ".join(a.tool_sources)),
        ("allowlist", ", ".join(a.tool_allowlist) or "all tools")))
    emit(a, as_json=args.json, human=human)
    return 0


async def audit(args: argparse.Namespace, backend: Backend) -> int:
    page = await _page(backend.page_audit, args, sandbox=args.sandbox)
    human = table([(e.at, e.actor, e.action, e.object_id) for e in page.items],
                  ["WHEN", "WHO", "WHAT", "OBJECT"]) or "no audit entries"
    _emit_page(page, args, human)
    return 0


def demo_server(args: argparse.Namespace) -> int:
    from concierge.demo_server import run_demo_server

    run_demo_server(host=args.host, port=args.port, token=args.token, header=args.header, query=args.query_param)
    return 0
