"""``concierge serve`` and ``concierge keys create|list|revoke``.

Keys live in the local registry database (``CONCIERGE_HOME``): ``keys`` manages the keys of
the server you start on this machine. A key is printed once, when created; only its hash is
stored.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from concierge.cli.output import emit, table
from concierge.cli.registry_cmds import _emit_page, _page_args, _paging
from concierge.errors import InvalidCursor, ValidationFailed

if TYPE_CHECKING:
    from concierge.backend import LocalBackend
    from concierge.registry import Registry
    from concierge.server.auth import KeyStore

__all__ = ["add_commands", "check_bind", "url_policy_mode"]

LOOPBACK_BINDS = frozenset({"127.0.0.1", "localhost", "::1"})
ANONYMOUS_WITH_SCOPED_KEYS_FLAG = "--allow-anonymous-loopback-with-scoped-keys"
"""(The same as ``concierge.server.auth``'s, which the CLI does not import at start-up.)"""


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="serve the REST API, the chat, the widget and "
                                                      "the MCP gateway over HTTP")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--allow-anonymous-loopback", action="store_true",
                   help="serve requests from this machine without an API key (local use only; "
                        "refused with a non-loopback --host, and while keys limited to a sandbox or "
                        "role exist)")
    p.add_argument(ANONYMOUS_WITH_SCOPED_KEYS_FLAG, dest="anonymous_with_scoped_keys", action="store_true",
                   help="serve anonymous loopback requests even though keys limited to a sandbox or role "
                        "exist (any process on this machine then outranks those keys)")
    p.add_argument("--url-policy", choices=["local", "hosted"], default=None,
                   help="which addresses sources may point at: local (loopback http allowed; the default "
                        "on a loopback --host) or hosted (public addresses only, resolved and pinned; "
                        "the default on any other --host)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN", default=[],
                   help="let pages from this origin (e.g. https://app.example.com, or *) call the API "
                        "from a browser, for the widget embedded on another site (repeat)")
    p.add_argument("--allow-stdio", action="store_true",
                   help="let owner keys register stdio sources, whose programs run on THIS machine "
                        "(off: they are refused, and existing ones are not run)")
    p.add_argument("--stateless-mcp", action="store_true",
                   help="serve the per-agent MCP endpoints without sessions, so any instance behind a "
                        "load balancer answers any request (no server-to-client notifications)")
    p.set_defaults(run=serve)

    keys = sub.add_parser("keys", help="create, list and revoke API keys for `concierge serve`"
                          ).add_subparsers(dest="keys_cmd", metavar="SUBCOMMAND", required=True)
    p = keys.add_parser("create", parents=[common], help="create a key (printed once; only a hash is kept)")
    p.add_argument("--sandbox", help="limit the key to this sandbox (name or id); default: every sandbox")
    p.add_argument("--role", choices=["owner", "editor", "viewer"], default="owner",
                   help="viewer: read; editor: + changes; owner: + permanent deletes (default owner)")
    p.add_argument("--label", help="a note to recognise the key by in `keys list`")
    p.set_defaults(run=keys_create)
    p = keys.add_parser("list", parents=[common], help="list keys (never the keys themselves), oldest first")
    p.add_argument("--all", action="store_true", help="include revoked keys")
    _paging(p)
    p.set_defaults(run=keys_list)
    p = keys.add_parser("revoke", parents=[common], help="revoke a key; it is refused from the next request")
    p.add_argument("id", help="the key's id (key_…), from `keys list`")
    p.set_defaults(run=keys_revoke)


def is_loopback_bind(host: str) -> bool:
    return host in LOOPBACK_BINDS or host.startswith("127.")


def url_policy_mode(host: str, chosen: str | None) -> str:
    """``--url-policy`` as given, else hosted for any bind address other than loopback."""
    return chosen or ("local" if is_loopback_bind(host) else "hosted")


def check_bind(host: str, *, active_keys: int, allow_anonymous_loopback: bool, scoped_keys: int = 0,
               anonymous_with_scoped_keys: bool = False) -> str | None:
    """Why the server must not start with these settings, or None when it may."""
    loopback = is_loopback_bind(host)
    if allow_anonymous_loopback and scoped_keys and not anonymous_with_scoped_keys:
        return (f"--allow-anonymous-loopback is refused while {scoped_keys} API key(s) limited to a sandbox "
                "or role exist: any process on this machine would act as an owner of every sandbox "
                "and outrank them. Revoke those keys, use keys only, or start with "
                f"{ANONYMOUS_WITH_SCOPED_KEYS_FLAG} if that is what you want")
    if not loopback and allow_anonymous_loopback:
        return (f"--allow-anonymous-loopback is for local use only and cannot be combined with "
                f"--host {host}; create a key with `concierge keys create` instead")
    if not loopback and active_keys == 0:
        return (f"refusing to listen on {host} without API keys: anyone who can reach this port "
                "could change your registry. Create one with `concierge keys create`, or bind to "
                "127.0.0.1")
    if loopback and active_keys == 0 and not allow_anonymous_loopback:
        return ("no API keys exist, so every request would be refused. Create one with "
                "`concierge keys create`, or start with --allow-anonymous-loopback for local use")
    return None


def _local_only(args: argparse.Namespace) -> None:
    if getattr(args, "api_url", None):
        raise ValidationFailed("keys are managed on the server's machine (its CONCIERGE_HOME); "
                               "run this command there without --api-url", field="api_url")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from concierge.backend import LocalBackend
    from concierge.server import build_app
    from concierge.server.auth import KeyStore

    _local_only(args)
    from concierge.mcp_client.url_policy import UrlPolicy

    anonymous = args.allow_anonymous_loopback or args.anonymous_with_scoped_keys
    backend = LocalBackend.open(settings=args.settings)
    keys = KeyStore(backend.registry.store)
    problem = check_bind(args.host, active_keys=keys.active_count(), allow_anonymous_loopback=anonymous,
                         scoped_keys=keys.scoped_count(),
                         anonymous_with_scoped_keys=args.anonymous_with_scoped_keys)
    if problem:
        backend.registry.close()
        print(f"error: {problem}", file=sys.stderr)
        return 1
    policy = UrlPolicy(mode=url_policy_mode(args.host, args.url_policy))  # type: ignore[arg-type]
    backend.registry.url_policy = policy
    policy.add_self(args.host, args.port)
    _recover_in_background(backend)
    app = build_app(backend_factory=lambda: backend, keys=keys, allow_anonymous_loopback=anonymous,
                    host=args.host, port=args.port, cors_origins=args.cors_origin, url_policy=policy,
                    anonymous_with_scoped_keys=args.anonymous_with_scoped_keys, allow_stdio=args.allow_stdio,
                    stateless_mcp=args.stateless_mcp)
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    mode = "anonymous loopback allowed" if anonymous else "API keys required"
    if args.allow_stdio:
        mode += "; stdio sources allowed for owner keys"
    print(f"concierge serving on http://{url_host}:{args.port} ({mode}; URL policy {policy.mode}); widget "
          f"demo at /, API description at /openapi.json", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=5)
    return 0


def _recover_in_background(backend: LocalBackend) -> None:
    """Re-check the sources whose health check a killed process left unfinished, without
    holding up the server: in a thread with its own event loop (each check is bounded by the
    source's connect timeout)."""
    import threading

    import anyio

    def run() -> None:
        try:
            done = anyio.run(backend.recover_interrupted_checks)
        except Exception:  # never take the server down for this
            logging.getLogger("concierge.server").exception("re-checking interrupted health checks failed")
            return
        if done:
            print(f"re-checked {len(done)} source(s) whose health check was interrupted: "
                  + ", ".join(f"{o.data_source_id} {o.status}" for o in done), file=sys.stderr, flush=True)

    threading.Thread(target=run, name="concierge-recheck", daemon=True).start()


def _keys(args: argparse.Namespace) -> tuple[Registry, KeyStore]:
    from concierge.registry import Registry
    from concierge.server.auth import KeyStore

    registry = Registry.open(settings=args.settings)
    return registry, KeyStore(registry.store)


def keys_create(args: argparse.Namespace) -> int:
    _local_only(args)
    registry, keys = _keys(args)
    try:
        sandbox_id = registry.get_sandbox(args.sandbox).id if args.sandbox else None
        created = keys.create(role=args.role, sandbox_id=sandbox_id, label=args.label)
    finally:
        registry.close()
    scope = f"sandbox {args.sandbox}" if args.sandbox else "every sandbox"
    emit(created, as_json=args.json,
         human=f"{created.key}\n\nCreated {created.id}: {created.role.value} of {scope}. This is the only "
               "time the key is shown; send it as 'Authorization: Bearer <key>' "
               "(CONCIERGE_API_KEY for --api-url).")
    return 0


def keys_list(args: argparse.Namespace) -> int:
    _local_only(args)
    paging = _page_args(args)  # checked before anything is opened
    registry, keys = _keys(args)
    try:
        page = keys.page(include_revoked=args.all, **paging)
    except InvalidCursor as exc:
        raise InvalidCursor(exc.detail.replace("cursor", "--cursor", 1), field="--cursor") from None
    finally:
        registry.close()
    human = table([(k.id, k.prefix + "…", k.role.value, k.sandbox_id or "all", k.label,
                    k.last_used_at or "never", "revoked" if k.revoked_at else "active")
                   for k in page.items],
                  ["ID", "KEY", "ROLE", "SANDBOX", "LABEL", "LAST USED", "STATE"]) or (
        "no more API keys" if args.cursor else "no API keys")
    _emit_page(page, args, human)
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    _local_only(args)
    registry, keys = _keys(args)
    try:
        key = keys.revoke(args.id)
    finally:
        registry.close()
    emit(key, as_json=args.json, human=f"revoked {key.id}")
    return 0
