"""Key-value entries shared by every instance, with versions for compare-and-set.

A namespace holds entries of one kind (``conversations``, ``pending_secrets``, …). Each write
bumps the entry's version; a writer that read version 3 and writes with
``expected_version=3`` wins only if nobody wrote in between (else `StaleVersion`), so two
instances answering the same conversation cannot silently overwrite each other. An entry may
expire (``ttl`` seconds); an expired entry reads as absent and is purged by `purge_expired`.

Values are bytes. A namespace opened with a `Sealer` stores them encrypted (`AesGcmSealer`:
AES-256-GCM, a fresh nonce per write, the namespace and key as associated data, so a value
copied under another key does not open): use one for anything secret.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from concierge.store._base import Connection, Database
from concierge.errors import VaultError
from concierge.store._errors import StaleVersion
from concierge.store._rows import now_iso
from concierge.store.pages import Page, fetch_page

__all__ = ["ANY", "AesGcmSealer", "Entry", "KeyValue", "Sealer"]


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()
"""``expected_version=ANY``: write whatever the entry's version (the default)."""


class Sealer(Protocol):
    def seal(self, aad: bytes, plaintext: bytes) -> bytes: ...
    def open(self, aad: bytes, sealed: bytes) -> bytes: ...


class AesGcmSealer:
    """AES-256-GCM with a 96-bit random nonce stored in front of the ciphertext."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, aad: bytes, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], aad)
        except InvalidTag:
            raise VaultError("a sealed value cannot be opened with this key") from None

    def __repr__(self) -> str:  # never the key
        return "AesGcmSealer()"


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    version: int
    updated_at: str


class KeyValue:
    """One namespace of the ``kv`` table."""

    def __init__(self, db: Database, namespace: str, *, sealer: Sealer | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.namespace = namespace
        self._sealer = sealer
        self._clock = clock

    def _aad(self, key: str) -> bytes:
        return f"{self.namespace}/{key}".encode()

    def _in(self, key: str, value: bytes) -> bytes:
        return self._sealer.seal(self._aad(key), value) if self._sealer else value

    def _out(self, key: str, stored: bytes) -> bytes:
        return self._sealer.open(self._aad(key), bytes(stored)) if self._sealer else bytes(stored)

    async def get(self, key: str, *, cx: Connection | None = None) -> Entry | None:
        sql = ("SELECT key, value, version, updated_at FROM kv WHERE namespace = $1 AND key = $2"
               " AND (expires_at IS NULL OR expires_at > $3)")
        args = (self.namespace, key, float(self._clock()))
        row = await (cx.fetchrow(sql, *args, for_update=True) if cx else self._db.fetchrow(sql, *args))
        if row is None:
            return None
        return Entry(key, self._out(key, row["value"]), int(row["version"]), row["updated_at"])

    async def put(self, key: str, value: bytes, *, expected_version: int | None | _Any = ANY,
                  ttl: float | None = None, cx: Connection | None = None) -> int:
        """Write ``value``; its new version. ``expected_version``: ``None`` to create only (the
        key must be absent), an int to replace only that version, `ANY` to write regardless."""
        if cx is None:
            async with self._db.transaction() as own:
                return await self.put(key, value, expected_version=expected_version, ttl=ttl, cx=own)
        now = float(self._clock())
        expires = now + ttl if ttl is not None else None
        stored, at = self._in(key, value), now_iso()
        # An expired entry is gone: creating over it is allowed, replacing it is not.
        await cx.execute("DELETE FROM kv WHERE namespace = $1 AND key = $2 AND expires_at IS NOT NULL"
                         " AND expires_at <= $3", self.namespace, key, now)
        if expected_version is ANY:
            version = await cx.fetchval(
                "INSERT INTO kv (namespace, key, value, version, updated_at, expires_at)"
                " VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (namespace, key) DO UPDATE SET"
                " value = excluded.value, version = kv.version + 1, updated_at = excluded.updated_at,"
                " expires_at = excluded.expires_at RETURNING version",
                self.namespace, key, stored, at, expires)
            return int(version)
        if expected_version is None:
            version = await cx.fetchval(
                "INSERT INTO kv (namespace, key, value, version, updated_at, expires_at)"
                " VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (namespace, key) DO NOTHING RETURNING version",
                self.namespace, key, stored, at, expires)
        else:
            version = await cx.fetchval(
                "UPDATE kv SET value = $3, version = version + 1, updated_at = $4, expires_at = $5"
                " WHERE namespace = $1 AND key = $2 AND version = $6 RETURNING version",
                self.namespace, key, stored, at, expires, int(expected_version))  # type: ignore[arg-type]
        if version is None:
            current = await cx.fetchval("SELECT version FROM kv WHERE namespace = $1 AND key = $2",
                                        self.namespace, key)
            wanted = "absent" if expected_version is None else f"at version {expected_version}"
            found = "absent" if current is None else f"at version {current}"
            raise StaleVersion(f"{self.namespace}/{key} was expected {wanted} but is {found}: someone "
                               "else changed it; read it again", current=None if current is None else int(current))
        return int(version)

    async def delete(self, key: str, *, expected_version: int | _Any = ANY, cx: Connection | None = None) -> bool:
        """Remove the entry; False if there was none (or not at ``expected_version``)."""
        sql = "DELETE FROM kv WHERE namespace = $1 AND key = $2"
        args: list[Any] = [self.namespace, key]
        if isinstance(expected_version, int):
            sql, args = sql + " AND version = $3", [*args, expected_version]
        return bool(await (cx.execute(sql, *args) if cx else self._db.execute(sql, *args)))

    async def keys(self, *, prefix: str = "", cursor: str | None = None, limit: int | None = None) -> Page[str]:
        """Live keys in key order, one page at a time."""
        page = await fetch_page(
            self._db, kind=f"kv:{self.namespace}", cursor=cursor, limit=limit, order=["key"],
            sql="SELECT key FROM kv WHERE namespace = $1 AND substr(key, 1, $2) = $3"
                " AND (expires_at IS NULL OR expires_at > $4)",
            args=[self.namespace, len(prefix), prefix, float(self._clock())])
        return Page([r["key"] for r in page.items], page.next_cursor)

    async def purge_expired(self) -> int:
        return await self._db.execute("DELETE FROM kv WHERE namespace = $1 AND expires_at IS NOT NULL"
                                      " AND expires_at <= $2", self.namespace, float(self._clock()))
