"""API keys: who is calling, which sandboxes they see, and what they may change.

A key looks like ``ck_`` + 43 random characters. It is shown once, when created; the database
keeps only its SHA-256 (a key has 256 random bits, so a fast hash is enough) and a short prefix
for ``keys list``. A request sends it as ``Authorization: Bearer ck_…``.

    role     viewer  read anything in its sandboxes; chat (reads run, writes cannot be approved)
             editor  + register / update / test / pause / resume / revoke, agents, tool calls,
                     approve concierge writes, hand over secrets, rotate webhook secrets
             owner   + permanent deletes; with no sandbox: create sandboxes
    sandbox  a key made with ``--sandbox S`` sees S only (another sandbox is 403);
             a key made without one sees every sandbox

Without any key, a request is served only when the server was started with
``allow_anonymous_loopback`` and it comes from 127.0.0.1 / ::1: it acts as an owner of every
sandbox (local use, like the CLI on the same machine) — but never while *scoped* keys exist
(limited to a sandbox, or below owner: the server is shared, and any local process would
outrank them) unless started with ``--allow-anonymous-loopback-with-scoped-keys``.

A request Concierge itself sent (a source's URL that reaches the server by some name) is
refused whatever it carries (`own_request_refusal`): the server's outbound requests come
from loopback and must never pass as a caller.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from pydantic import BaseModel

from concierge.errors import NotFound, PermissionDenied, ValidationFailed
from concierge.ids import new_id
from concierge.mcp_client.url_policy import is_own_outbound
from concierge.registry.keyset import mapped
from concierge.registry.pages import Page, check_limit
from concierge.registry.store import Store, now_iso
from concierge.server.key_rows import KeyRows

__all__ = ["ANONYMOUS_WITH_SCOPED_KEYS_FLAG", "ApiKey", "CreatedKey", "KeyStore", "Principal", "Role",
           "anonymous_refusal", "is_loopback", "own_request_refusal"]

ANONYMOUS_WITH_SCOPED_KEYS_FLAG = "--allow-anonymous-loopback-with-scoped-keys"

KEY_PREFIX = "ck_"
_TOUCH_EVERY_S = 60.0  # last_used_at is a hint; don't write on every request


class Role(enum.StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "editor": 1, "owner": 2}[self.value]


@dataclass(frozen=True)
class Principal:
    """The caller of one request."""

    key_id: str | None
    """None for an anonymous loopback caller."""
    role: Role
    sandbox_id: str | None
    """The one sandbox this key may use; None: every sandbox."""

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.key_id}" if self.key_id else "local-http"

    def require(self, role: Role, what: str) -> None:
        if self.role.rank < role.rank:
            raise PermissionDenied(f"{what} needs the {role.value} role; this key is a {self.role.value}")

    def require_sandbox(self, sandbox_id: str | None) -> None:
        if self.sandbox_id is not None and sandbox_id != self.sandbox_id:
            raise PermissionDenied("this key is limited to another sandbox")

    def require_global(self, what: str) -> None:
        if self.sandbox_id is not None:
            raise PermissionDenied(f"{what} needs a key that is not limited to one sandbox")


class ApiKey(BaseModel):
    """A key as `keys list` shows it: never the key itself."""

    id: str
    prefix: str
    sandbox_id: str | None
    role: Role
    label: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class CreatedKey(ApiKey):
    key: str
    """The key itself: shown once, never stored."""


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    return host == "::1" or host.startswith("127.") or host == "localhost"


def own_request_refusal(client: tuple[str, int] | None) -> str | None:
    """Why a request must be refused because Concierge sent it itself, or None."""
    if client is not None and is_own_outbound(client[0], client[1]):
        return ("this request came from Concierge itself (a source whose URL reaches this server); "
                "the server never serves its own outbound requests")
    return None


def anonymous_refusal(keys: KeyStore, *, with_scoped_keys: bool) -> str | None:
    """Why anonymous loopback access is off right now, or None when it may be served."""
    if not with_scoped_keys and keys.scoped_count():
        return ("anonymous loopback access is off while API keys limited to a sandbox or role exist "
                "(any local process would outrank them): send an API key, or start the server with "
                f"{ANONYMOUS_WITH_SCOPED_KEYS_FLAG}")
    return None


class KeyStore:
    """The ``api_keys`` table of the registry database."""

    def __init__(self, store: Store) -> None:
        from concierge.store.schema import HTTP

        store.migrate(HTTP)  # the HTTP layer's tables are made by the HTTP layer
        self.store = store
        self._rows = KeyRows(store)
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def create(self, *, role: Role | str = Role.OWNER, sandbox_id: str | None = None,
               label: str | None = None) -> CreatedKey:
        try:
            role = Role(role)
        except ValueError:
            raise ValidationFailed(f"role must be one of {', '.join(Role)} (got {role!r})",
                                   field="role") from None
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = {"id": new_id("key"), "hash": _hash(key), "prefix": key[:9], "sandbox_id": sandbox_id,
               "role": role.value, "label": label, "created_at": now_iso(), "last_used_at": None,
               "revoked_at": None}
        self._rows.insert(row)
        return CreatedKey.model_validate({k: v for k, v in row.items() if k != "hash"} | {"key": key})

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        return [ApiKey(**r) for r in self._rows.every(include_revoked=include_revoked)]

    def page(self, *, include_revoked: bool = True, limit: int | None = None,
             cursor: str | None = None) -> Page[ApiKey]:
        """One page of keys, oldest first."""
        return mapped(self._rows.page(include_revoked=include_revoked, limit=check_limit(limit), cursor=cursor),
                      lambda r: ApiKey(**r))

    def get(self, key_id: str) -> ApiKey:
        row = self._rows.get(key_id)
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        return ApiKey(**row)

    def revoke(self, key_id: str) -> ApiKey:
        """Idempotent; a revoked key is refused from the next request on."""
        key = self.get(key_id)
        if key.revoked_at is None:
            self._rows.revoke(key_id, now_iso())
        return self.get(key_id)

    def active_count(self) -> int:
        return self._rows.active_count()

    def scoped_count(self) -> int:
        """Live keys that grant less than an owner of every sandbox (a sandbox, or a lower role)."""
        return self._rows.scoped_count()

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of a live key, or None."""
        if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
            return None
        row = self._rows.live_by_hash(_hash(presented))
        if row is None:
            return None
        self._touch(row["id"])
        return Principal(key_id=row["id"], role=Role(row["role"]), sandbox_id=row["sandbox_id"])

    def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(key_id, -_TOUCH_EVERY_S) < _TOUCH_EVERY_S:
                return
            self._touched[key_id] = now
        self._rows.touch(key_id, now_iso())
