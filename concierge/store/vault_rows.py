"""The ``vault`` and ``vault_key_check`` tables: ciphertexts only (the registry's vault
encrypts and decrypts; this module never sees a secret in clear).

Nothing is written for a source that is deleted or revoked: `VaultRows.put` reads the owning
source's row with ``for_update=True`` in the caller's transaction, so a revoke that committed a
moment ago (in any process, on either engine) is seen, and a revoke that is running waits for
this transaction or is waited for — never interleaved.
"""

from __future__ import annotations

from concierge.errors import NotFound, SourceRevoked
from concierge.store._base import Connection, Database, Row
from concierge.store._rows import now_iso

__all__ = ["COUNT", "DELETE", "DELETE_PREFIX", "FORGET_KEY_CHECK", "GET", "KEY_CHECK", "OLDEST", "PUT",
           "RECORD_KEY_CHECK", "SOURCE_STATUS", "VERSION", "VaultRows", "source_of"]

# The statements the registry's sync repository (`concierge.registry.vault_rows`) runs too.
SOURCE_STATUS = "SELECT status FROM sources WHERE id = $1"
"""Read ``for_update`` before a source's secret is written: a revoked source gets none."""
PUT = ("INSERT INTO vault (key, nonce, ciphertext, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)"
       " ON CONFLICT (key) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext,"
       " updated_at = excluded.updated_at")
GET = "SELECT key, nonce, ciphertext FROM vault WHERE key = $1"
VERSION = "SELECT nonce FROM vault WHERE key = $1"
DELETE = "DELETE FROM vault WHERE key = $1"
DELETE_PREFIX = "DELETE FROM vault WHERE substr(key, 1, $1) = $2"
COUNT = "SELECT COUNT(*) AS n FROM vault"
OLDEST = "SELECT key, nonce, ciphertext FROM vault ORDER BY created_at, key LIMIT 1"
KEY_CHECK = "SELECT nonce, ciphertext FROM vault_key_check WHERE id = 1"
RECORD_KEY_CHECK = ("INSERT INTO vault_key_check (id, nonce, ciphertext, created_at) VALUES (1, $1, $2, $3)"
                    " ON CONFLICT (id) DO NOTHING")
FORGET_KEY_CHECK = "DELETE FROM vault_key_check WHERE NOT EXISTS (SELECT 1 FROM vault)"


def source_of(key: str) -> str | None:
    """The source a vault key belongs to (``user_mcp/<id>/…``), or None."""
    kind, _, rest = key.partition("/")
    source_id, sep, _ = rest.partition("/")
    return source_id if kind == "user_mcp" and sep else None


class VaultRows:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, cx: Connection, key: str, nonce: bytes, ciphertext: bytes) -> None:
        """Store or replace one ciphertext in the caller's write transaction."""
        source_id = source_of(key)
        if source_id is not None:
            row = await cx.fetchrow(SOURCE_STATUS, source_id, for_update=True)
            if row is None:
                raise NotFound(f"no source {source_id!r}; no secret is stored for it")
            if row["status"] == "disconnected":
                raise SourceRevoked(f"source {source_id} is revoked (disconnected); its secrets were deleted "
                                    "and no new one is stored")
        now = now_iso()
        await cx.execute(PUT, key, nonce, ciphertext, now)

    async def get(self, key: str, *, cx: Connection | None = None) -> Row | None:
        row = await (cx.fetchrow(GET, key) if cx else self._db.fetchrow(GET, key))
        if row is not None:
            row["nonce"], row["ciphertext"] = bytes(row["nonce"]), bytes(row["ciphertext"])
        return row

    async def keys(self, prefix: str) -> list[str]:
        return [r["key"] for r in await self._db.fetch(
            "SELECT key FROM vault WHERE substr(key, 1, $1) = $2 ORDER BY key", len(prefix), prefix)]

    async def delete(self, cx: Connection, key: str) -> int:
        return await cx.execute(DELETE, key)

    async def delete_prefix(self, cx: Connection, prefix: str) -> int:
        """Delete every ciphertext under ``prefix``; how many there were."""
        return await cx.execute(DELETE_PREFIX, len(prefix), prefix)

    async def count(self) -> int:
        return int(await self._db.fetchval(COUNT) or 0)

    async def oldest(self, cx: Connection) -> Row | None:
        return await cx.fetchrow(OLDEST)

    async def key_check(self, cx: Connection | None = None) -> Row | None:
        return await (cx.fetchrow(KEY_CHECK) if cx else self._db.fetchrow(KEY_CHECK))

    async def record_key_check(self, cx: Connection, nonce: bytes, ciphertext: bytes) -> bool:
        """Record the check value unless one exists (a concurrent first open); True if recorded."""
        return bool(await cx.execute(RECORD_KEY_CHECK, nonce, ciphertext, now_iso()))

    async def forget_key_check(self, cx: Connection) -> int:
        """A new key for an empty vault: the old key's check value goes with it."""
        return await cx.execute(FORGET_KEY_CHECK)
