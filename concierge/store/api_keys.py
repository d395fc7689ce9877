"""The ``api_keys`` table: hashes and metadata only (a key is shown once and never stored)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concierge.store._base import Database, Row
from concierge.store._rows import insert
from concierge.store.pages import Page, fetch_page

__all__ = ["ACTIVE_COUNT", "ApiKeyRows", "BY_ID", "LIVE_BY_HASH", "REVOKE", "TOUCH"]

# The statements the HTTP layer's sync repository (`concierge.server.key_rows`) runs too.
BY_ID = "SELECT * FROM api_keys WHERE id = $1"
LIVE_BY_HASH = "SELECT id, role, sandbox_id FROM api_keys WHERE hash = $1 AND revoked_at IS NULL"
REVOKE = "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
TOUCH = "UPDATE api_keys SET last_used_at = $1 WHERE id = $2"
ACTIVE_COUNT = "SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL"


class ApiKeyRows:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, row: Mapping[str, Any]) -> None:
        async with self._db.transaction() as cx:
            await insert(cx, "api_keys", row)

    async def get(self, key_id: str) -> Row | None:
        return await self._db.fetchrow(BY_ID, key_id)

    async def live_by_hash(self, key_hash: str) -> Row | None:
        """The live (not revoked) key with this hash — what every request checks, on every instance."""
        return await self._db.fetchrow(LIVE_BY_HASH, key_hash)

    async def page(self, *, include_revoked: bool = True, cursor: str | None = None,
                   limit: int | None = None) -> Page[Row]:
        sql = "SELECT * FROM api_keys WHERE TRUE" + ("" if include_revoked else " AND revoked_at IS NULL")
        return await fetch_page(self._db, kind="api_keys", sql=sql, order=["created_at", "id"],
                                cursor=cursor, limit=limit)

    async def revoke(self, key_id: str, at: str) -> bool:
        """Idempotent; True if this call revoked it."""
        return bool(await self._db.execute(REVOKE, at, key_id))

    async def touch(self, key_id: str, at: str) -> None:
        await self._db.execute(TOUCH, at, key_id)

    async def active_count(self) -> int:
        return int(await self._db.fetchval(ACTIVE_COUNT) or 0)
