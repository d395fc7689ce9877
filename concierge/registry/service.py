"""The lifecycle service: sandboxes, user_mcp sources, agents and the audit log.

register: validate -> row + vault (one transaction) -> one-shot health check -> ``active`` | ``error``
update:   partial; ``token`` rotates the secret; a changed URL/auth/transport re-runs the check
test:     re-run the check (``active`` on success, ``error`` on failure; a paused source stays paused)
pause / resume / revoke (``disconnected``, terminal, idempotent) / delete (permanent)

Every mutation writes an audit record in the same transaction, with before/after views that
never contain a credential. Listeners registered with `on_source_change` hear about every
change to a source (the catalog drops its cache, the gateway evicts rate buckets).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from pydantic import SecretStr, ValidationError

from concierge import config, url_secrets
from concierge.errors import (
    Conflict,
    IntegrityError,
    InvalidForSource,
    NamespaceTaken,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from concierge.ids import new_id
from concierge.mcp_client.endpoint import Endpoint
from concierge.mcp_client.kinds import ErrorKind
from concierge.mcp_client.url_policy import UrlPolicy, UrlRefused
from concierge.registry import validation as rules
from concierge.registry.models import (
    Agent,
    AgentCreate,
    AgentUpdate,
    AuditEntry,
    AuthKind,
    Outcome,
    RegisteredOutcome,
    RegisterSource,
    Sandbox,
    SourceStatus,
    SourceView,
    UNSET,
    UpdateSource,
)
from concierge.registry.agent_rows import AgentRows
from concierge.registry.audit import current_actor
from concierge.registry.audit_rows import AuditRows
from concierge.registry.change_rows import ChangeRows
from concierge.registry.keyset import mapped
from concierge.registry.pages import Page, check_limit
from concierge.registry.sandbox_rows import SandboxRows
from concierge.registry.signing import new_secret as new_webhook_secret
from concierge.registry.oauth_vault import VaultOAuthStore, oauth_key, oauth_prefix
from concierge.registry.source_rows import SourceFilter, SourceRows
from concierge.registry.store import Store, Transaction, now_iso
from concierge.registry.vault import Vault, auth_key, load_master_key, webhook_key
from concierge.registry.vault_rows import VaultRows

if TYPE_CHECKING:
    from concierge.mcp_client.oauth import OAuth
    from concierge.mcp_client.oauth_callback import CallbackInbox
    from concierge.mcp_client.results import ProbeResult
    from concierge.mcp_client.signin import SignIn
    from concierge.mcp_client.stdio import ProcessLog
    from concierge.registry.pin_book import PinBook

__all__ = ["DEFAULT_SANDBOX", "PENDING_CHECK", "Prober", "Registry", "SourceChange"]

log = logging.getLogger("concierge.registry")

DEFAULT_SANDBOX = "default"
SOURCES_SCOPE = "sources"
"""The change feed's scope for source changes (`concierge.store.changes`)."""
PENDING_CHECK = "health check did not complete"
CONNECTION_FIELDS = frozenset({"base_url", "auth_kind", "auth_header", "token", "transport",
                               "connect_timeout", "headers", "command", "args", "env", "secret_env",
                               "cwd", "client_id", "client_secret", "scopes", "grant"})
STDIO_FIELDS = ("command", "args", "env", "secret_env", "cwd")
OAUTH_FIELDS = ("client_id", "client_secret", "scopes", "grant")

Prober = Callable[[Endpoint], Awaitable["ProbeResult"]]
SourceChange = Callable[[str, str], None]  # (source_id, action)


async def _default_probe(endpoint: Endpoint) -> ProbeResult:
    """The connector's probe, imported on first use (it loads the mcp SDK)."""
    from concierge.mcp_client.connector import probe

    return await probe(endpoint)


_OAUTH_URL_KEY = ("base_url carries {name} in its query, which an OAuth sign-in would send to the authorization "
                  "server (as the resource): with auth_kind 'oauth' the URL must hold no key")


def env_key(source_id: str, name: str) -> str:
    """Where a stdio source's secret environment value is kept in the vault."""
    return f"user_mcp/{source_id}/env/{name}"


def _canon(value: Any) -> Any:
    """A JSON column's value as stored (decoded rows and raw rows compare equal)."""
    if value is None or isinstance(value, str | int | float | bytes):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _ingestion_mode(calls: list[Any] | None) -> str:
    return "pull" if calls else "live_tools_only"


class _Snapshot(NamedTuple):
    """What a health check talks to: if any of it changes while the check runs, the check's
    result describes a configuration that no longer exists and is not recorded."""

    base_url: str
    transport: str
    auth_kind: str
    auth_header: str | None
    connect_timeout: float
    vault_key: str | None
    secret_version: bytes | None
    headers: str | None = None
    stdio: str | None = None
    oauth: str | None = None
    env_versions: tuple[bytes | None, ...] = ()
    url_version: bytes | None = None


class Registry:
    """The system of record. Sync for reads and simple writes; async where a probe runs."""

    def __init__(self, store: Store, vault: Vault, *, prober: Prober | None = None,
                 actor: str = "local", url_policy: UrlPolicy | None = None,
                 data_dir: Path | None = None) -> None:
        self.store = store
        self.vault = vault
        # The repositories: the only places the registry's SQL is written.
        self._sandboxes = SandboxRows(store)
        self._sources = SourceRows(store)
        self._agents = AgentRows(store)
        self._audit_rows = AuditRows(store)
        self._change_rows = ChangeRows(store)
        self._vault_rows = VaultRows(store)
        self.data_dir = data_dir or (store.path.parent if store.path is not None else None)
        """This home's directory (logs of stdio programs live there, whichever database is used)."""
        self.url_policy = url_policy or UrlPolicy()
        """Which addresses sources may point at (local by default; ``serve`` sets its own)."""
        self._probe: Prober = prober or _default_probe
        self.actor = actor
        self._listeners: list[SourceChange] = []
        self._checking: dict[str, int] = {}  # source id -> health checks in flight in this process
        self._checking_lock = threading.Lock()  # `serve` re-checks in a thread of its own
        self.oauth_store = VaultOAuthStore(store, vault)
        """Where OAuth tokens, registered clients and discovery are kept (the vault)."""
        self.oauth_redirect_uri: str | None = None
        """Where sign-ins send the browser back (``serve`` sets its callback route); None: a
        loopback listener of the process that starts the sign-in."""
        self._oauths: dict[str, tuple[tuple[Any, ...], OAuth]] = {}  # one per source: one refresh in flight
        self._process_logs: dict[str, ProcessLog] = {}  # a stdio source's program over its restarts
        self._shared_lock = threading.Lock()
        self.allow_stdio = True
        """Whether stdio sources may be registered and run (``serve`` turns it off unless
        ``--allow-stdio``): their programs run on this machine."""
        self._own_changes: set[int] = set()  # change feed numbers this process committed
        self._feed_cursor: int | None = None  # the last change seen by `follow_changes`
        self._pins: PinBook | None = None

    @property
    def pins(self) -> PinBook:
        """Tool-definition pins: what each source's tools were approved as, what is held
        (loaded on first use: a plain ``source list`` does not need it)."""
        if self._pins is None:
            from concierge.registry.pin_book import PinBook

            self._pins = PinBook(self)
        return self._pins

    @classmethod
    def open(cls, home: str | Path | None = None, *, settings: config.Settings | None = None,
             **kwargs: Any) -> Registry:
        """The registry in ``home`` (default: the settings' ``home``; ``settings`` default:
        `concierge.config.load`)."""
        settings = settings or config.load()
        directory = config.data_dir(home or settings.home)
        store = Store(settings.database_url or config.db_path(directory),
                      setting="--database-url / CONCIERGE_DATABASE_URL")
        try:
            vault_rows = VaultRows(store)
            key = load_master_key(config.key_path(directory), from_setting=settings.master_key,
                                  secrets=vault_rows.count, forget_check=vault_rows.forget_key_check)
            vault = Vault(store, key)
        except BaseException:
            store.close()
            raise
        return cls(store, vault, data_dir=directory, **kwargs)

    def close(self) -> None:
        self.store.close()

    def on_source_change(self, listener: SourceChange) -> None:
        self._listeners.append(listener)

    def _changed(self, source_id: str, action: str) -> None:
        if action in ("revoke", "delete", "update"):
            with self._shared_lock:  # its tokens are gone (or its settings changed): no cached client
                self._oauths.pop(source_id, None)
        for listener in self._listeners:
            try:
                listener(source_id, action)
            except Exception:  # a listener must never break a committed write
                log.exception("source change listener failed")

    # -- audit -------------------------------------------------------------------------------

    # -- the change feed: what other processes changed --------------------------------------

    def _bump(self, cx: Transaction, source_id: str, action: str) -> None:
        """Record the change in the feed, in the changing transaction (call it last: the
        feed's head row orders the writers), as `concierge.store.changes.ChangeFeed.bump`
        does. Listeners in this process hear it from `_changed` after the commit; other
        processes from `follow_changes` (woken by NOTIFY on PostgreSQL)."""
        seq = self._change_rows.bump(cx, SOURCES_SCOPE, source_id, action)
        with self._checking_lock:
            if self._feed_cursor is not None:  # before the first look, the feed starts at the head
                self._own_changes.add(seq)

    async def follow_changes(self) -> list[tuple[str, str]]:
        """Tell this process's listeners (catalog, gateway) about the source changes other
        processes committed since the last look; the (source id, action) pairs. A reader
        calls it before it trusts what it holds (the catalog on every resolve). The feed is
        read as `concierge.store.changes.ChangeFeed` writes it (one indexed read)."""
        if self._feed_cursor is None:  # first look: nothing is held yet, start at the head
            self._feed_cursor = self._change_rows.head(SOURCES_SCOPE)
            return []
        rows = self._change_rows.since(SOURCES_SCOPE, self._feed_cursor, limit=1000)
        seen = []
        for row in rows:
            self._feed_cursor = max(self._feed_cursor, int(row["seq"]))
            with self._checking_lock:
                own = int(row["seq"]) in self._own_changes
                self._own_changes.discard(int(row["seq"]))
            if not own:
                seen.append((row["subject"], row["action"]))
                self._changed(row["subject"], row["action"])
        with self._checking_lock:  # a subject changed twice keeps only its last number in the feed
            self._own_changes = {seq for seq in self._own_changes if seq > self._feed_cursor}
        return seen

    def _evict_buckets(self, cx: Transaction, source_id: str) -> None:
        """Drop the source's rate buckets (tool calls, webhooks) in the changing transaction:
        every process sharing the database starts the source afresh (`StoreRateLimiter`)."""
        self._change_rows.evict_buckets(cx, source_id)

    def _audit(self, cx: Transaction, *, action: str, object_type: str, object_id: str,
               sandbox_id: str | None, before: dict[str, Any] | None = None,
               after: dict[str, Any] | None = None) -> None:
        self._audit_rows.append(cx, actor=current_actor(self.actor), action=action, object_type=object_type,
                                object_id=object_id, sandbox_id=sandbox_id, before=before, after=after)

    def audit(self, *, sandbox: str | None = None, limit: int = 50) -> list[AuditEntry]:
        limit = max(1, min(int(limit), 10_000))
        sandbox_id = self.get_sandbox(sandbox).id if sandbox is not None else None
        return [AuditEntry(**r) for r in self._audit_rows.newest(sandbox_id=sandbox_id, limit=limit)]

    def page_audit(self, *, sandbox: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> Page[AuditEntry]:
        """One page of the audit log, newest first."""
        size = check_limit(limit)
        sandbox_id = self.get_sandbox(sandbox).id if sandbox is not None else None
        return mapped(self._audit_rows.page(sandbox_id=sandbox_id, limit=size, cursor=cursor),
                      lambda r: AuditEntry(**r))

    # -- sandboxes ---------------------------------------------------------------------------

    def create_sandbox(self, name: str) -> Sandbox:
        name = name.strip()
        if not rules.NAMESPACE_RE.fullmatch(name):
            raise ValidationFailed(
                f"sandbox name {name!r} must be 1-64 characters of letters, digits, _ and -",
                field="name")
        sandbox = Sandbox(id=new_id("sb"), name=name, created_at=now_iso())
        try:
            with self.store.transaction() as cx:
                self._sandboxes.insert(cx, sandbox.model_dump())
                self._audit(cx, action="sandbox.create", object_type="sandbox", object_id=sandbox.id,
                            sandbox_id=sandbox.id, after=sandbox.model_dump())
        except IntegrityError:
            raise Conflict(f"a sandbox named {name!r} already exists") from None
        return sandbox

    def default_sandbox(self) -> Sandbox:
        row = self._sandboxes.by_name(DEFAULT_SANDBOX)
        if row:
            return Sandbox(**row)
        try:
            return self.create_sandbox(DEFAULT_SANDBOX)
        except Conflict:  # created by a concurrent caller
            return Sandbox(**self._sandboxes.by_name(DEFAULT_SANDBOX))  # type: ignore[arg-type]

    def list_sandboxes(self) -> list[Sandbox]:
        self.default_sandbox()
        return [Sandbox(**r) for r in self._sandboxes.every(first=DEFAULT_SANDBOX)]

    def page_sandboxes(self, *, limit: int | None = None, cursor: str | None = None,
                       only: str | None = None) -> Page[Sandbox]:
        """One page of sandboxes, the default one first, then oldest first; ``only``: just
        that sandbox id (a key limited to one sandbox)."""
        size = check_limit(limit)
        self.default_sandbox()
        return mapped(self._sandboxes.page(only=only, limit=size, cursor=cursor),
                      lambda r: Sandbox(id=r["id"], name=r["name"], created_at=r["created_at"]))

    def get_sandbox(self, ref: str | None = None) -> Sandbox:
        """By id or name; ``None`` means the default sandbox (created on first use)."""
        if ref is None or ref == DEFAULT_SANDBOX:
            return self.default_sandbox()
        row = self._sandboxes.by_ref(ref)
        if row is None:
            names = ", ".join(s.name for s in self.list_sandboxes())
            raise NotFound(f"no sandbox {ref!r} (sandboxes: {names})")
        return Sandbox(**row)

    def delete_sandbox(self, ref: str) -> None:
        """Permanent. The default sandbox cannot be deleted; a sandbox must be empty."""
        sb = self.get_sandbox(ref)
        if sb.name == DEFAULT_SANDBOX:
            raise Conflict("the default sandbox cannot be deleted")
        if self._sources.count_in_sandbox(sb.id) or self._agents.count_in_sandbox(sb.id):
            raise Conflict(f"sandbox {sb.name!r} still has sources or agents; delete them first")
        with self.store.transaction() as cx:
            self._sandboxes.delete(cx, sb.id)
            self._audit(cx, action="sandbox.delete", object_type="sandbox", object_id=sb.id,
                        sandbox_id=None, before=sb.model_dump())

    # -- sources: reads ----------------------------------------------------------------------

    def _view(self, row: dict[str, Any], signed_in: frozenset[str] | None = None) -> SourceView:
        """``signed_in``: the ids of the sources holding OAuth tokens, read once for a list."""
        extra: dict[str, Any] = {}
        stdio, oauth = row.get("stdio"), row.get("oauth")
        if isinstance(stdio, dict):
            extra |= {"command": stdio["command"], "args": list(stdio.get("args") or []),
                      "env": dict(stdio.get("env") or {}), "secret_env": list(stdio.get("secret_env") or []),
                      "cwd": stdio.get("cwd"),
                      "command_line": rules.command_line(stdio["command"], stdio.get("args") or [])}
        if isinstance(oauth, dict):
            extra |= {"client_id": oauth.get("client_id"), "scopes": oauth.get("scopes"),
                      "grant": oauth.get("grant") or "authorization_code",
                      "signed_in": row["id"] in signed_in if signed_in is not None
                      else self.oauth_store.holds(row["id"])}
        return SourceView(
            **{k: row[k] for k in SourceView.model_fields if k in row and k not in
               ("has_token", "ingestion_mode", "stdio", "oauth")},
            **extra,
            has_token=row["vault_key"] is not None,
            ingestion_mode=_ingestion_mode(row["ingest_tool_calls"]),
        )

    def _row(self, source_id: str, sandbox: str | None = None) -> dict[str, Any]:
        row = self._sources.get(source_id)
        if row is None:
            raise NotFound(f"no source {source_id!r}")
        if sandbox is not None and row["sandbox_id"] != self.get_sandbox(sandbox).id:
            raise NotFound(f"no source {source_id!r} in sandbox {sandbox!r}")
        return row

    def get_source(self, source_id: str, *, sandbox: str | None = None) -> SourceView:
        return self._view(self._row(source_id, sandbox))

    def _sources_where(self, sandbox: str | None, status: str | None,
                       include_disconnected: bool) -> SourceFilter:
        sandbox_id = self.get_sandbox(sandbox).id if sandbox is not None else None
        if status is not None and status not in set(SourceStatus):
            raise ValidationFailed(
                f"status must be one of {', '.join(SourceStatus)} (got {status!r})", field="status")
        return SourceRows.where(sandbox_id=sandbox_id, status=status, include_disconnected=include_disconnected)

    def _signed_in(self, rows: list[dict[str, Any]]) -> frozenset[str]:
        """The OAuth sources among ``rows`` that hold tokens (one query, not one per source)."""
        if not any(r["auth_kind"] == AuthKind.OAUTH for r in rows):
            return frozenset()
        return frozenset(key.split("/")[1] for key in self._vault_rows.keys_like("user_mcp/%/oauth/tokens"))

    def list_sources(self, *, sandbox: str | None = None, status: str | None = None,
                     include_disconnected: bool = True) -> list[SourceView]:
        """Every matching source (for the catalog and the gateway); surfaces use `page_sources`."""
        rows = self._sources.matching(self._sources_where(sandbox, status, include_disconnected))
        signed_in = self._signed_in(rows)
        return [self._view(r, signed_in) for r in rows]

    def page_sources(self, *, sandbox: str | None = None, status: str | None = None,
                     limit: int | None = None, cursor: str | None = None) -> Page[SourceView]:
        """One page of sources, oldest first (``sandbox=None``: every sandbox)."""
        size = check_limit(limit)
        page = self._sources.page(self._sources_where(sandbox, status, True), limit=size, cursor=cursor)
        signed_in = self._signed_in(page.items)
        return mapped(page, lambda r: self._view(r, signed_in))

    def endpoint(self, source_id: str) -> Endpoint:
        """How to reach a source's server, with its decrypted credential. Never log this."""
        return self._endpoint(self._row(source_id))

    def process_log(self, source_id: str) -> ProcessLog:
        """The stdio program's log of ``source_id`` in this process (pid, exits, stderr tail)."""
        from concierge.registry.stdio_logs import FileProcessLog

        with self._shared_lock:
            held = self._process_logs.get(source_id)
            if held is None:
                held = self._process_logs[source_id] = FileProcessLog(self._stdio_log_path(source_id))
            return held

    def _stdio_log_path(self, source_id: str) -> Path:
        if self.data_dir is None:  # a registry built by hand over a database server
            import tempfile

            return Path(tempfile.gettempdir()) / "concierge-stdio-logs" / f"{source_id}.log"
        return self.data_dir / "logs" / "stdio" / f"{source_id}.log"

    def stdio_log_tail(self, source_id: str, *, lines: int = 20) -> list[str]:
        """The last lines a stdio source's program wrote to stderr (secrets redacted): this
        process's log, else what the process running it last saved."""
        from concierge.registry.stdio_logs import read_tail

        self._row(source_id)
        with self._shared_lock:
            held = self._process_logs.get(source_id)
        if held is not None and held.starts:
            return held.tail(lines)
        return read_tail(self._stdio_log_path(source_id), lines) or []

    def oauth(self, source_id: str) -> OAuth:
        """The source's `OAuth` (one per source and configuration, shared by every connection)."""
        return self._oauth(self._row(source_id))

    def _oauth(self, row: dict[str, Any]) -> OAuth:
        from concierge.mcp_client.oauth import OAuth

        cfg = row.get("oauth") or {}
        version = self.vault.version(row["vault_key"]) if row["vault_key"] else None
        fingerprint = (row["base_url"], cfg.get("client_id"), tuple(cfg.get("scopes") or ()),
                       cfg.get("grant"), version, self.oauth_redirect_uri)
        with self._shared_lock:
            held = self._oauths.get(row["id"])
            if held is not None and held[0] == fingerprint:
                return held[1]
        secret = self.vault.get(row["vault_key"]) if row["vault_key"] else None
        oauth = OAuth(self._dial_url(row), self.oauth_store, source=row["id"],
                      grant=cfg.get("grant") or "authorization_code", client_id=cfg.get("client_id"),
                      client_secret=secret, scope=" ".join(cfg.get("scopes") or []) or None,
                      redirect_uri=self.oauth_redirect_uri if cfg.get("client_id") else None)
        with self._shared_lock:
            self._oauths[row["id"]] = (fingerprint, oauth)
        return oauth

    def _dial_url(self, row: dict[str, Any]) -> str:
        """The URL a connection dials: the stored one with its credentials from the vault."""
        url = str(row["base_url"])
        if not url_secrets.has_masked(url):
            return url
        return url_secrets.unmask(url, url_secrets.loads(self.vault.get(url_secrets.url_key(row["id"]))))

    def _endpoint(self, row: dict[str, Any], token: str | None = None) -> Endpoint:
        timeouts = {"connect_timeout": row["connect_timeout"], "call_timeout": row["call_timeout"]}
        stdio = row.get("stdio")
        if row["transport"] == "stdio" and isinstance(stdio, dict):
            self._check_stdio_allowed()
            secret_env = {name: self.vault.get(env_key(row["id"], name)) or ""
                          for name in stdio.get("secret_env") or []}
            return Endpoint.stdio(stdio["command"], tuple(stdio.get("args") or ()), env=stdio.get("env") or {},
                                  secret_env=secret_env, cwd=stdio.get("cwd"),
                                  process_log=self.process_log(row["id"]), **timeouts)
        extra_headers = row.get("headers") or {}
        if row["auth_kind"] == AuthKind.OAUTH:
            return Endpoint(url=self._dial_url(row), transport=row["transport"], extra_headers=extra_headers,
                            auth=self._oauth(row), url_policy=self.url_policy, **timeouts)
        headers: dict[str, str] = {}
        if row["auth_kind"] != AuthKind.NONE:
            secret = token if token is not None else (
                self.vault.get(row["vault_key"]) if row["vault_key"] else None)
            if secret is not None:
                if row["auth_kind"] == AuthKind.BEARER:
                    headers["Authorization"] = f"Bearer {secret}"
                else:
                    headers[row["auth_header"]] = secret
        return Endpoint(url=self._dial_url(row), headers=headers, transport=row["transport"],
                        extra_headers=extra_headers, url_policy=self.url_policy, **timeouts)

    def _check_stdio_allowed(self) -> None:
        if not self.allow_stdio:
            raise PermissionDenied("this server does not run programs on its machine: stdio sources need "
                                   "`concierge serve --allow-stdio` (and an owner key)")

    def check_url_policy(self, base_url: str) -> None:
        """Refuse ``base_url`` if the URL policy does (400 naming ``base_url``), before anything
        is written: the concierge asks this before its confirmation."""
        self._check_url_policy(base_url)

    def _check_url_policy(self, base_url: str) -> None:
        try:
            self.url_policy.check_url(base_url)
        except UrlRefused as exc:
            raise ValidationFailed(str(exc), field="base_url") from None

    # -- sources: writes ---------------------------------------------------------------------

    def parse_register(self, body: dict[str, Any] | RegisterSource) -> RegisterSource:
        if isinstance(body, RegisterSource):
            return body
        try:
            return RegisterSource.model_validate(body)
        except ValidationError as exc:
            raise rules.from_pydantic(exc) from None

    def parse_update(self, body: dict[str, Any] | UpdateSource) -> UpdateSource:
        if isinstance(body, UpdateSource):
            return body
        try:
            return UpdateSource.model_validate(body)
        except ValidationError as exc:
            raise rules.from_pydantic(exc) from None

    async def register(self, body: dict[str, Any] | RegisterSource, *,
                       sandbox: str | None = None) -> Outcome:
        """Validate, store the secret, then the row, then run one health check."""
        req = self.parse_register(body)
        is_stdio = req.transport == "stdio"
        if is_stdio:
            self._check_stdio_allowed()
        else:
            self._check_url_policy(req.base_url or "")
        sb = self.get_sandbox(sandbox)
        source_id = new_id("ds")
        namespace = req.app_namespace or source_id
        self._check_namespace_free(sb.id, namespace)
        now = now_iso()
        token = req.token.get_secret_value() if req.token else None
        client_secret = req.client_secret.get_secret_value() if req.client_secret else None
        secret_env = {k: x.get_secret_value() for k, x in (req.secret_env or {}).items()}
        webhook_secret = new_webhook_secret()
        base_url, url_values = self._split_url(req.base_url or "")
        if url_values and req.auth_kind == AuthKind.OAUTH:
            raise ValidationFailed(_OAUTH_URL_KEY.format(name=url_values[0][0]), field="base_url")
        row: dict[str, Any] = {
            "id": source_id, "sandbox_id": sb.id, "kind": "user_mcp", "name": req.name,
            "base_url": base_url, "transport": req.transport, "auth_kind": str(req.auth_kind),
            "headers": req.headers or None,
            "stdio": {"command": req.command, "args": req.args or [], "env": req.env or {},
                      "secret_env": sorted(secret_env), "cwd": req.cwd} if is_stdio else None,
            "oauth": {"client_id": req.client_id, "scopes": req.scopes,
                      "grant": req.grant or "authorization_code"} if req.auth_kind == AuthKind.OAUTH else None,
            "auth_header": req.auth_header if req.auth_kind == AuthKind.HEADER_TOKEN else None,
            "vault_key": auth_key(source_id) if token or client_secret else None,
            "token_last4": token[-4:] if token and len(token) >= 12 else None,
            "app_namespace": namespace, "allowed_tools": req.allowed_tools,
            "ingest_tool_calls": [c.model_dump() for c in req.ingest_tool_calls or []],
            "rate_cap_per_minute": req.rate_cap_per_minute,
            "webhook_rate_cap_per_minute": req.webhook_rate_cap_per_minute,
            "connect_timeout": req.connect_timeout, "call_timeout": req.call_timeout,
            "status": SourceStatus.ERROR.value, "health_error": PENDING_CHECK,
            "health_error_kind": None, "tool_count": None, "server_name": None, "last_checked_at": None,
            "last_latency_ms": None, "pin_tools": req.pin_tools, "created_at": now, "updated_at": now,
        }
        try:
            with self.store.transaction() as cx:  # the row and its secrets, all or nothing
                self._sources.insert(cx, row)
                if token or client_secret:  # (the vault takes a secret only for a live source row)
                    self.vault.put(cx, auth_key(source_id), token or client_secret or "")
                for name, value in secret_env.items():
                    self.vault.put(cx, env_key(source_id, name), value)
                if url_values:
                    self.vault.put(cx, url_secrets.url_key(source_id), url_secrets.dumps(url_values))
                self.vault.put(cx, webhook_key(source_id), webhook_secret)
                self._audit(cx, action="source.register", object_type="source", object_id=source_id,
                            sandbox_id=sb.id, after=self._view(row).model_dump(mode="json"))
                self._bump(cx, source_id, "register")
        except IntegrityError:
            raise self._namespace_taken(namespace, sb.name) from None
        log.info("registered source %s (%s) in sandbox %s", source_id,
                 base_url or f"stdio: {req.url_or_command}", sb.name)
        outcome = await self._check(source_id, action="source.health_check")
        self._changed(source_id, "register")
        # The webhook signing secret is returned this once (excluded from model_dump()).
        return RegisteredOutcome(**outcome.model_dump(), webhook_secret=SecretStr(webhook_secret))

    @staticmethod
    def _split_url(url: str, stored: list[tuple[str, str]] | None = None) -> tuple[str, list[tuple[str, str]]]:
        """``url`` as stored (its credential values masked) and those values (`url_secrets`)."""
        try:
            return url_secrets.split(url, stored)
        except url_secrets.MissingValue as exc:
            raise ValidationFailed(str(exc), field="base_url") from None

    def _check_namespace_free(self, sandbox_id: str, namespace: str, *, except_id: str | None = None) -> None:
        row = self._sources.namespace_holder(sandbox_id, namespace, other_than=except_id)
        if row:
            sb = self.get_sandbox(sandbox_id)
            raise self._namespace_taken(namespace, sb.name, holder=row)

    @staticmethod
    def _namespace_taken(namespace: str, sandbox_name: str,
                         holder: dict[str, Any] | None = None) -> NamespaceTaken:
        who = f" by {holder['name']!r} ({holder['id']})" if holder else ""
        return NamespaceTaken(f"app_namespace {namespace!r} is already used{who} in sandbox "
                              f"{sandbox_name!r}; choose another namespace or revoke that source")

    async def update(self, source_id: str, body: dict[str, Any] | UpdateSource, *,
                     sandbox: str | None = None) -> Outcome:
        """Partial update. Omitted fields keep their value; ``token`` rotates the secret."""
        req = self.parse_update(body)
        before = self._row(source_id, sandbox)
        if before["status"] == SourceStatus.DISCONNECTED:
            raise self._revoked_conflict(source_id)
        sent = req.sent()
        if not sent:
            raise ValidationFailed("nothing to update: send at least one field", field=None)
        was_stdio = before["transport"] == "stdio"
        if "transport" in sent and (sent["transport"] == "stdio") != was_stdio:
            raise InvalidForSource(
                f"transport cannot change between stdio and HTTP for source {source_id}; "
                "register the server again instead", field="transport")
        for name in STDIO_FIELDS:
            if name in sent and not was_stdio:
                raise InvalidForSource(f"{name} is only used by stdio sources; source {source_id} "
                                       f"is reached at {before['base_url']}", field=name)
        if was_stdio:
            for name in ("base_url", "auth_kind", "token", "auth_header", "headers"):
                if name in sent:
                    raise InvalidForSource(f"{name} is not used by stdio source {source_id} (it runs "
                                           "a program; give it env or secret_env instead)", field=name)
        if "command" in sent and not sent["command"]:
            raise ValidationFailed("command must not be empty", field="command")
        new_url_values: list[tuple[str, str]] | None = None
        if "base_url" in sent:
            stored = url_secrets.loads(self.vault.get(url_secrets.url_key(source_id))) \
                if url_secrets.has_masked(before["base_url"]) else []
            sent["base_url"], new_url_values = self._split_url(sent["base_url"], stored)
            self._check_url_policy(url_secrets.unmask(sent["base_url"], new_url_values))
            if new_url_values == stored:
                new_url_values = None  # the same credentials: nothing to write
        token_obj: SecretStr | None = sent.pop("token", None)
        token = token_obj.get_secret_value() if token_obj is not None else None
        secret_obj = sent.pop("client_secret", UNSET)
        client_secret = secret_obj.get_secret_value() if isinstance(secret_obj, SecretStr) else None
        env_sent = sent.pop("secret_env", UNSET)
        new_env: dict[str, str] | None = None if env_sent is UNSET else {
            k: x.get_secret_value() for k, x in (env_sent or {}).items()}
        stdio_sent = {k: sent.pop(k) for k in ("command", "args", "env", "cwd") if k in sent}
        oauth_sent = {k: sent.pop(k) for k in ("client_id", "scopes", "grant") if k in sent}

        merged = dict(before)
        for key, value in sent.items():
            if key == "ingest_tool_calls":
                value = [c.model_dump() for c in value or []]
            merged[key] = str(value) if key == "auth_kind" else value
        kind = merged["auth_kind"]
        was_oauth = before["auth_kind"] == AuthKind.OAUTH
        is_oauth = kind == AuthKind.OAUTH
        if is_oauth and url_secrets.has_masked(merged["base_url"]):
            name = next((n for n, _ in (new_url_values or [])), None) or "a key"
            raise (ValidationFailed if "base_url" in sent or "auth_kind" in sent else InvalidForSource)(
                _OAUTH_URL_KEY.format(name=name), field="base_url")
        oauth_given = [k for k, x in oauth_sent.items() if x is not None] + (
            ["client_secret"] if secret_obj is not UNSET and secret_obj is not None else [])
        if oauth_given and not is_oauth:
            name = oauth_given[0]
            raise (ValidationFailed if "auth_kind" in sent else InvalidForSource)(
                f"{name} is only used with auth_kind 'oauth'", field=name)
        if was_stdio:
            stdio = dict(before["stdio"] or {})
            stdio.update({k: (x if x is not None else ([] if k == "args" else {} if k == "env" else None))
                          for k, x in stdio_sent.items()})
            if new_env is not None:
                stdio["secret_env"] = sorted(new_env)
            both = set(stdio.get("env") or {}) & set(stdio.get("secret_env") or [])
            if both:
                raise ValidationFailed(f"env {sorted(both)[0]} is given both as a plain and as a secret value",
                                       field="env")
            merged["stdio"] = stdio
        if is_oauth:
            cfg = dict(before["oauth"] or {}) if was_oauth else {"client_id": None, "scopes": None,
                                                                 "grant": "authorization_code"}
            cfg.update({k: x for k, x in oauth_sent.items()})
            cfg["grant"] = cfg.get("grant") or "authorization_code"
            has_secret = client_secret is not None or (
                secret_obj is UNSET and was_oauth and before["vault_key"] is not None)
            try:
                rules.check_oauth_combination(kind, client_id=cfg.get("client_id"), client_secret=has_secret,
                                              scopes=list(cfg.get("scopes") or []) or None, grant=cfg.get("grant"))
            except ValueError as exc:
                raise InvalidForSource(str(exc), field="client_id") from None
            if token is not None:
                raise ValidationFailed("token is not used with auth_kind 'oauth'; give a client secret as "
                                       "client_secret", field="token")
            merged["oauth"] = cfg
        else:
            merged["oauth"] = None
        if "headers" in sent and sent["headers"]:
            try:
                rules.check_extra_headers(sent["headers"], auth_header=merged["auth_header"])
            except ValueError as exc:
                raise ValidationFailed(str(exc), field="headers") from None
        if kind != AuthKind.HEADER_TOKEN and "auth_header" not in sent:
            merged["auth_header"] = None
        if is_oauth:
            pass  # no token: the sign-in gets them
        elif "auth_kind" in sent:  # the rules the body breaks on its own: 400
            self._check_auth(kind, has_token=True, token_sent=token is not None, error=ValidationFailed,
                             auth_header=sent["auth_header"] if "auth_header" in sent else
                             ("(stored)" if kind == AuthKind.HEADER_TOKEN else None))
        # ... and with the source as stored (a token or header it lacks): 409 (a client
        # secret is no token: crossing the oauth boundary drops the old secret)
        if not is_oauth:
            self._check_auth(kind, has_token=token is not None or (
                before["vault_key"] is not None and not was_oauth),
                token_sent=token is not None, auth_header=merged["auth_header"], error=InvalidForSource)
        if "app_namespace" in sent and sent["app_namespace"] != before["app_namespace"]:
            self._check_namespace_free(before["sandbox_id"], sent["app_namespace"], except_id=source_id)

        drop_secret = before["vault_key"] is not None and (
            kind == AuthKind.NONE or was_oauth != is_oauth or (is_oauth and secret_obj is None))
        if client_secret is not None:
            token = client_secret
        if token is not None:
            merged["vault_key"] = auth_key(source_id)
            merged["token_last4"] = token[-4:] if len(token) >= 12 else None
        elif drop_secret:
            merged["vault_key"] = None
            merged["token_last4"] = None
        # a new client, secret, scope or server invalidates every token held: sign in again
        drop_tokens = was_oauth and (not is_oauth or bool(oauth_sent) or secret_obj is not UNSET
                                     or "base_url" in sent)
        touched = set(sent) | set(stdio_sent) | set(oauth_sent) | (
            {"token"} if token is not None else set()) | ({"secret_env"} if new_env is not None else set()) | (
            {"client_secret"} if secret_obj is not UNSET else set())
        recheck = bool(CONNECTION_FIELDS & touched)
        merged["updated_at"] = now_iso()
        changes = {k: merged[k] for k in merged if merged[k] != before[k]}
        try:
            with self.store.transaction() as cx:
                # Re-read under the write lock: a revoke committed since `before` was read (in
                # this process or another) wins, and nothing is written for a revoked source.
                status = self._sources.status_in(cx, source_id, for_update=True)
                if status is None:
                    raise NotFound(f"no source {source_id!r}")
                if status == SourceStatus.DISCONNECTED:
                    raise self._revoked_conflict(source_id)
                if token is not None:
                    self.vault.put(cx, auth_key(source_id), token)
                elif drop_secret:
                    self.vault.delete(cx, auth_key(source_id))
                if new_env is not None:
                    self.vault.delete_prefix(cx, f"user_mcp/{source_id}/env/")
                    for name, value in new_env.items():
                        self.vault.put(cx, env_key(source_id, name), value)
                if new_url_values:
                    self.vault.put(cx, url_secrets.url_key(source_id), url_secrets.dumps(new_url_values))
                elif new_url_values is not None:
                    self.vault.delete(cx, url_secrets.url_key(source_id))
                if drop_tokens:
                    self.vault.delete_prefix(cx, oauth_prefix(source_id))
                self._sources.update(cx, source_id, changes)
                self._evict_buckets(cx, source_id)
                if "base_url" in changes or changes.get("pin_tools"):
                    self.pins.reset(cx, source_id)  # another server, or pinning back on: start over
                after = self._view(merged).model_dump(mode="json")
                if token is not None:
                    after["client_secret" if is_oauth else "token"] = "rotated"
                if new_env is not None:
                    after["secret_env_values"] = "replaced"
                if new_url_values is not None:
                    after["url_credentials"] = "replaced" if new_url_values else "deleted"
                if drop_tokens:
                    after["oauth_tokens"] = "deleted"
                self._audit(cx, action="source.update", object_type="source", object_id=source_id,
                            sandbox_id=before["sandbox_id"],
                            before=self._view(before).model_dump(mode="json"), after=after)
                self._bump(cx, source_id, "update")
        except IntegrityError:
            sb = self.get_sandbox(before["sandbox_id"])
            raise self._namespace_taken(merged["app_namespace"], sb.name) from None
        self._changed(source_id, "update")
        if recheck:
            return await self._check(source_id, action="source.health_check")
        return self._outcome(self._row(source_id), detail="updated")

    @staticmethod
    def _check_auth(kind: str, *, has_token: bool, token_sent: bool, auth_header: str | None,
                    error: type[ValidationFailed]) -> None:
        try:
            rules.check_auth_combination(kind, has_token=has_token, token_sent=token_sent,
                                         auth_header=auth_header)
        except ValueError as exc:
            raise error(str(exc), field="token" if str(exc).startswith("token") else
                        "auth_header" if str(exc).startswith("auth_header") else "auth_kind") from None

    @staticmethod
    def _revoked_conflict(source_id: str) -> Conflict:
        return Conflict(f"source {source_id} is revoked (disconnected) and cannot be updated; "
                        "register it again instead")

    # -- OAuth sign-in ----------------------------------------------------------------------

    async def begin_sign_in(self, source_id: str, *, sandbox: str | None = None,
                            inbox: CallbackInbox | None = None, redirect_uri: str | None = None,
                            timeout: float | None = None) -> SignIn:
        """Start a sign-in to an OAuth source (authorization-code grant); returns once its
        authorize URL is known (``sign_in.authorize_url``). Finish with `finish_sign_in`.
        Without ``inbox`` the browser comes back to a loopback listener of this process."""
        from concierge.errors import ConnectorError
        from concierge.mcp_client.signin import DEFAULT_SIGN_IN_TIMEOUT, begin_sign_in

        row = self._row(source_id, sandbox)
        if row["status"] == SourceStatus.DISCONNECTED:
            raise Conflict(f"source {source_id} is revoked (disconnected); register it again to sign in")
        if row["auth_kind"] != AuthKind.OAUTH:
            raise InvalidForSource(f"source {source_id} does not use OAuth (auth_kind "
                                   f"{row['auth_kind']}); nothing to sign in to", field="auth_kind")
        if (row["oauth"] or {}).get("grant") == "client_credentials":
            raise InvalidForSource(f"source {source_id} uses the client_credentials grant: nobody signs "
                                   "in; run its health check instead", field="grant")
        try:
            return await begin_sign_in(self._endpoint(row), inbox=inbox,
                                       redirect_uri=redirect_uri or (self.oauth_redirect_uri if inbox else None),
                                       timeout=timeout or DEFAULT_SIGN_IN_TIMEOUT)
        except ConnectorError as exc:
            self.mark_auth_required(source_id, exc.sentence, kind=exc.kind)
            raise

    async def finish_sign_in(self, source_id: str, sign_in: SignIn) -> Outcome:
        """Wait for ``sign_in`` to end; then the health check (``active``), or ``auth_required``
        with the reason when nobody signed in."""
        from concierge.errors import ConnectorError

        try:
            await sign_in.wait()
        except ConnectorError as exc:
            self.mark_auth_required(source_id, exc.sentence, kind=exc.kind)
            return self._outcome(self._row(source_id), detail=exc.sentence)
        return await self._check(source_id, action="source.health_check")

    def mark_auth_required(self, source_id: str, reason: str, *,
                           kind: ErrorKind = ErrorKind.AUTH_REQUIRED) -> None:
        """A live request was refused for want of a sign-in (a refused refresh): the source is
        ``auth_required`` with ``reason`` until someone signs in again (paused and revoked stay)."""
        with self.store.transaction() as cx:
            current = self._sources.get_in(cx, source_id)
            if current is None or current["status"] not in (
                    SourceStatus.ACTIVE, SourceStatus.ERROR, SourceStatus.AUTH_REQUIRED):
                return
            fields = {"status": SourceStatus.AUTH_REQUIRED.value, "health_error": reason,
                      "health_error_kind": kind.value, "last_checked_at": now_iso()}
            if all(current[k] == x for k, x in fields.items() if k != "last_checked_at"):
                return
            self._sources.update(cx, source_id, fields)
            self._audit(cx, action="source.auth_required", object_type="source", object_id=source_id,
                        sandbox_id=current["sandbox_id"],
                        before={"status": current["status"], "health_error": current["health_error"]},
                        after={"status": fields["status"], "health_error": reason})
        self._changed(source_id, "status")

    async def test(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        row = self._row(source_id, sandbox)
        if row["status"] == SourceStatus.DISCONNECTED:
            raise Conflict(f"source {source_id} is revoked (disconnected); register it again to use it")
        return await self._check(source_id, action="source.test")

    def _snapshot(self, row: Any, cx: Transaction | None = None) -> _Snapshot:
        vault_key = row["vault_key"]
        keys = row.keys()
        stdio = row["stdio"] if "stdio" in keys else None
        names = (json.loads(stdio) if isinstance(stdio, str) else stdio or {}).get("secret_env") or []
        return _Snapshot(row["base_url"], row["transport"], row["auth_kind"], row["auth_header"],
                         float(row["connect_timeout"]), vault_key,
                         self.vault.version(vault_key, cx) if vault_key else None,
                         _canon(row["headers"] if "headers" in keys else None), _canon(stdio),
                         _canon(row["oauth"] if "oauth" in keys else None),
                         tuple(self.vault.version(env_key(row["id"], n), cx) for n in names),
                         self.vault.version(url_secrets.url_key(row["id"]), cx)
                         if url_secrets.has_masked(row["base_url"]) else None)

    async def _check(self, source_id: str, *, action: str) -> Outcome:
        """One tools/list health check; records status, tool count, latency and time.

        The result is recorded only if the source's connection settings (URL, transport, auth,
        secret, connect timeout) are the ones the check started with: a slow check against an
        old URL must not overwrite the result of a newer configuration."""
        row = self._row(source_id)
        started = self._snapshot(row)
        with self._checking_lock:
            self._checking[source_id] = self._checking.get(source_id, 0) + 1
        try:
            result = await self._probe(self._endpoint(row))
        finally:
            with self._checking_lock:
                self._checking[source_id] -= 1
                if not self._checking[source_id]:
                    del self._checking[source_id]
        fields: dict[str, Any] = {
            "last_checked_at": now_iso(), "last_latency_ms": round(result.latency_ms, 2),
        }
        if result.ok:
            fields |= {"health_error": None, "health_error_kind": None, "tool_count": result.tool_count,
                       "server_name": result.server_name}
            new_status = SourceStatus.ACTIVE
        else:
            kind = result.error_kind or ErrorKind.UNKNOWN
            fields |= {"health_error": result.error or "health check failed",
                       "health_error_kind": kind.value}
            # an OAuth source nobody signed in to, or whose refresh was refused
            new_status = SourceStatus.AUTH_REQUIRED if kind is ErrorKind.AUTH_REQUIRED else SourceStatus.ERROR
        with self.store.transaction() as cx:
            current = self._sources.get_in(cx, source_id, for_update=True)
            if current is None:
                raise NotFound(f"no source {source_id!r} (deleted while its health check ran)")
            if current["status"] == SourceStatus.DISCONNECTED:
                stale = "revoked"  # revoked stays revoked
            elif self._snapshot(current, cx) != started:
                stale = "changed"
            else:
                stale = None
                if current["status"] in (SourceStatus.ACTIVE, SourceStatus.ERROR, SourceStatus.AUTH_REQUIRED):
                    fields["status"] = new_status.value  # paused stays paused
                self._sources.update(cx, source_id, fields)
                self._audit(cx, action=action, object_type="source", object_id=source_id,
                            sandbox_id=row["sandbox_id"],
                            before={"status": current["status"], "health_error": current["health_error"]},
                            after={k: fields.get(k, current[k]) for k in
                                   ("status", "health_error", "tool_count", "last_latency_ms")})
                if fields.get("status", current["status"]) != current["status"]:
                    self._bump(cx, source_id, "status")
        outcome = "ok" if result.ok else result.error_kind
        if stale == "revoked":
            return self._outcome(self._row(source_id))
        if stale == "changed":
            log.info("health check %s (%s) not recorded: the connection settings changed meanwhile",
                     source_id, outcome)
            return self._outcome(self._row(source_id), detail=(
                "this check's result was not recorded: the source's connection settings changed "
                "while it ran, and the check of the new settings decides its status"))
        if result.ok:
            try:  # registration pins the listing; later checks record what changed
                self.pins.observe(self.get_source(source_id), result.tools)
            except Exception:  # the catalog checks again (and holds everything if it cannot)
                log.exception("tool pins of %s not updated by its health check", source_id)
        if fields.get("status", current["status"]) != current["status"]:
            self._changed(source_id, "status")
        log.info("health check %s: %s", source_id, outcome)
        detail = (f"healthy: {result.tool_count} tools in {result.latency_ms:.0f} ms"
                  if result.ok else f"health check failed: {result.error}")
        return self._outcome(self._row(source_id), detail=detail)

    async def recheck_interrupted(self, *, concurrency: int = 8) -> list[Outcome]:
        """Re-run the health check of every source whose check never finished (the process
        running it was killed: status ``error``, ``health_error`` "health check did not
        complete"), except checks running in this process right now. Call it at start-up or
        before the first catalog; a check racing one in another process is harmless (the
        stale-result rule above keeps the newer configuration's result)."""
        ids = [i for i in self._sources.interrupted(SourceStatus.ERROR.value, PENDING_CHECK)
               if i not in self._checking]
        outcomes: dict[str, Outcome] = {}
        limiter = anyio.CapacityLimiter(max(1, concurrency))

        async def one(source_id: str) -> None:
            async with limiter:
                try:
                    outcomes[source_id] = await self._check(source_id, action="source.health_check")
                except NotFound:  # deleted meanwhile
                    pass
                except PermissionDenied:  # a stdio source on a server that runs no programs
                    pass

        if ids:
            log.info("re-checking %d source(s) whose health check was interrupted", len(ids))
            async with anyio.create_task_group() as tg:
                for source_id in ids:
                    tg.start_soon(one, source_id)
        return [outcomes[i] for i in ids if i in outcomes]

    def _outcome(self, row: dict[str, Any], *, detail: str | None = None) -> Outcome:
        return Outcome(data_source_id=row["id"], status=row["status"], name=row["name"],
                       ingestion_mode=_ingestion_mode(row["ingest_tool_calls"]),
                       health_error=row["health_error"], detail=detail)

    def _set_status(self, source_id: str, sandbox: str | None, *, action: str, to: SourceStatus,
                    allowed_from: set[SourceStatus], detail: str) -> Outcome:
        row = self._row(source_id, sandbox)
        status = SourceStatus(row["status"])
        if status == to:
            return self._outcome(row, detail=f"already {to.value}")
        if status not in allowed_from:
            raise Conflict(f"source {source_id} is {status.value} and cannot be {detail}")
        with self.store.transaction() as cx:
            self._sources.update(cx, source_id, {"status": to.value, "updated_at": now_iso()})
            self._evict_buckets(cx, source_id)
            self._audit(cx, action=action, object_type="source", object_id=source_id,
                        sandbox_id=row["sandbox_id"], before={"status": status.value},
                        after={"status": to.value})
            self._bump(cx, source_id, action.split(".")[1])
        self._changed(source_id, action.split(".")[1])
        return self._outcome(self._row(source_id), detail=detail)

    def pause(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        """Stop offering the source's tools; nothing is deleted."""
        return self._set_status(source_id, sandbox, action="source.pause", to=SourceStatus.PAUSED,
                                allowed_from={SourceStatus.ACTIVE, SourceStatus.ERROR,
                                              SourceStatus.AUTH_REQUIRED}, detail="paused")

    async def resume(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        """Un-pause and re-run the health check (``active`` or ``error``)."""
        row = self._row(source_id, sandbox)
        if row["status"] == SourceStatus.DISCONNECTED:
            raise Conflict(f"source {source_id} is revoked (disconnected) and cannot be resumed; "
                           "register it again instead")
        if row["status"] == SourceStatus.PAUSED:
            with self.store.transaction() as cx:
                self._sources.update(cx, source_id, {
                    "status": SourceStatus.ERROR.value, "health_error": PENDING_CHECK,
                    "health_error_kind": None, "updated_at": now_iso()})
                self._audit(cx, action="source.resume", object_type="source", object_id=source_id,
                            sandbox_id=row["sandbox_id"], before={"status": "paused"},
                            after={"status": "resumed; health check follows"})
        return await self._check(source_id, action="source.health_check")

    def revoke(self, source_id: str, *, sandbox: str | None = None) -> Outcome:
        """Delete every secret of the source and mark it ``disconnected`` (terminal).

        Idempotent, and a repeated revoke still deletes any secret found under the source,
        so a revoked source never keeps one. Status and secrets are read and changed in one
        write transaction, so a concurrent update cannot slip a secret in between."""
        self._row(source_id, sandbox)  # 404 for an unknown source or another sandbox's
        with self.store.transaction() as cx:
            row = self._sources.get_in(cx, source_id, for_update=True)
            if row is None:
                raise NotFound(f"no source {source_id!r}")
            already = row["status"] == SourceStatus.DISCONNECTED
            deleted = self.vault.delete_prefix(cx, f"user_mcp/{source_id}/")
            self._evict_buckets(cx, source_id)
            if not already:
                self._sources.update(cx, source_id, {
                    "status": SourceStatus.DISCONNECTED.value, "vault_key": None, "token_last4": None,
                    "updated_at": now_iso()})
                before = self._view(self._decoded(row)).model_dump(mode="json")
            if not already or deleted:
                self._audit(cx, action="source.revoke", object_type="source", object_id=source_id,
                            sandbox_id=row["sandbox_id"],
                            before=before if not already else {"status": "disconnected"},
                            after={"status": "disconnected", "secrets": "deleted"})
            if not already:
                self._bump(cx, source_id, "revoke")
        if already:
            return self._outcome(self._row(source_id), detail="already revoked" + (
                f"; {deleted} leftover secret(s) deleted" if deleted else ""))
        self._changed(source_id, "revoke")
        log.info("revoked source %s", source_id)
        return self._outcome(self._row(source_id), detail="revoked: secrets deleted, status disconnected")

    @staticmethod
    def _decoded(row: dict[str, Any]) -> dict[str, Any]:
        """A raw row read inside a transaction, with its JSON columns decoded."""
        out = dict(row)
        for key in ("allowed_tools", "ingest_tool_calls", "headers", "stdio", "oauth"):
            if isinstance(out.get(key), str):
                out[key] = json.loads(out[key])
        return out

    def delete_source(self, source_id: str, *, sandbox: str | None = None) -> None:
        """Permanent: the row, its secrets and anything ingested from it."""
        row = self._row(source_id, sandbox)
        with self.store.transaction() as cx:
            self.vault.delete_prefix(cx, f"user_mcp/{source_id}/")
            self._evict_buckets(cx, source_id)
            self._sources.delete(cx, source_id)
            self._stdio_log_path(source_id).unlink(missing_ok=True)
            self._audit(cx, action="source.delete", object_type="source", object_id=source_id,
                        sandbox_id=row["sandbox_id"], before=self._view(row).model_dump(mode="json"))
            self._bump(cx, source_id, "delete")
        self._changed(source_id, "delete")

    # -- agents ------------------------------------------------------------------------------

    def create_agent(self, body: dict[str, Any] | AgentCreate, *, sandbox: str | None = None) -> Agent:
        try:
            req = body if isinstance(body, AgentCreate) else AgentCreate.model_validate(body)
        except ValidationError as exc:
            raise rules.from_pydantic(exc) from None
        sb = self.get_sandbox(sandbox)
        now = now_iso()
        agent = Agent(id=new_id("ag"), sandbox_id=sb.id, slug=req.slug, name=req.name or req.slug,
                      system_prompt=req.system_prompt, tool_sources=req.tool_sources,
                      tool_allowlist=req.tool_allowlist, model_settings=req.model_settings,
                      status="active", created_at=now, updated_at=now)
        try:
            with self.store.transaction() as cx:
                self._agents.insert(cx, agent.model_dump())
                self._audit(cx, action="agent.create", object_type="agent", object_id=agent.id,
                            sandbox_id=sb.id, after=agent.model_dump())
        except IntegrityError:
            raise Conflict(f"an agent {req.slug!r} already exists in sandbox {sb.name!r}") from None
        return agent

    def get_agent(self, slug: str, *, sandbox: str | None = None) -> Agent:
        sb = self.get_sandbox(sandbox)
        row = self._agents.get(sb.id, slug)
        if row is None:
            known = ", ".join(a.slug for a in self.list_agents(sandbox=sb.id)) or "none yet"
            raise NotFound(f"no agent {slug!r} in sandbox {sb.name!r} (agents: {known})")
        return Agent(**row)

    def list_agents(self, *, sandbox: str | None = None) -> list[Agent]:
        sb = self.get_sandbox(sandbox)
        return [Agent(**r) for r in self._agents.in_sandbox(sb.id)]

    def page_agents(self, *, sandbox: str | None = None, limit: int | None = None,
                    cursor: str | None = None) -> Page[Agent]:
        """One page of a sandbox's agents, oldest first."""
        size = check_limit(limit)
        sb = self.get_sandbox(sandbox)
        return mapped(self._agents.page(sb.id, limit=size, cursor=cursor), lambda r: Agent(**r))

    def update_agent(self, slug: str, body: dict[str, Any] | AgentUpdate, *,
                     sandbox: str | None = None) -> Agent:
        try:
            req = body if isinstance(body, AgentUpdate) else AgentUpdate.model_validate(body)
        except ValidationError as exc:
            raise rules.from_pydantic(exc) from None
        before = self.get_agent(slug, sandbox=sandbox)
        changes = req.sent() | {"updated_at": now_iso()}
        after = before.model_copy(update=changes)
        with self.store.transaction() as cx:
            self._agents.update(cx, before.id, changes)
            self._audit(cx, action="agent.update", object_type="agent", object_id=before.id,
                        sandbox_id=before.sandbox_id, before=before.model_dump(), after=after.model_dump())
        return after

    def delete_agent(self, slug: str, *, sandbox: str | None = None) -> None:
        agent = self.get_agent(slug, sandbox=sandbox)
        with self.store.transaction() as cx:
            self._agents.delete(cx, agent.id)
            self._audit(cx, action="agent.delete", object_type="agent", object_id=agent.id,
                        sandbox_id=agent.sandbox_id, before=agent.model_dump())
