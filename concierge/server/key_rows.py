"""The ``api_keys`` table, seen by the HTTP layer: hashes and metadata only (a key is shown
once and never stored). Every statement `concierge.server.auth` runs; those shared with the
async store are `concierge.store.api_keys`'."""

from __future__ import annotations

from typing import Any

from concierge.registry.keyset import fetch_page
from concierge.registry.pages import Page
from concierge.registry.store import Store
from concierge.store.api_keys import ACTIVE_COUNT, BY_ID, LIVE_BY_HASH, REVOKE, TOUCH

__all__ = ["KeyRows"]

Row = dict[str, Any]


class KeyRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def insert(self, row: Row) -> None:
        with self._store.transaction() as cx:
            Store.insert(cx, "api_keys", row)

    def get(self, key_id: str) -> Row | None:
        return self._store.query_one(BY_ID, (key_id,))

    def live_by_hash(self, key_hash: str) -> Row | None:
        """The live (not revoked) key with this hash (id, role, sandbox_id)."""
        return self._store.query_one(LIVE_BY_HASH, (key_hash,))

    @staticmethod
    def _where(include_revoked: bool) -> str:
        return "WHERE 1=1" if include_revoked else "WHERE revoked_at IS NULL"

    def every(self, *, include_revoked: bool = True) -> list[Row]:
        """Oldest first."""
        return self._store.query(f"SELECT * FROM api_keys {self._where(include_revoked)} ORDER BY created_at, id")

    def page(self, *, include_revoked: bool = True, limit: int, cursor: str | None) -> Page[Row]:
        """Oldest first."""
        return fetch_page(self._store, "api_keys", select="SELECT * FROM api_keys",
                          count="SELECT COUNT(*) AS n FROM api_keys", where=self._where(include_revoked),
                          order=("created_at", "id"), cursor=cursor, limit=limit)

    def revoke(self, key_id: str, at: str) -> bool:
        """True if this call revoked it (a revoked key stays revoked at its first time)."""
        with self._store.transaction() as cx:
            return bool(cx.execute(REVOKE, (at, key_id)).rowcount)

    def touch(self, key_id: str, at: str) -> None:
        with self._store.transaction() as cx:
            cx.execute(TOUCH, (at, key_id))

    def active_count(self) -> int:
        row = self._store.query_one(ACTIVE_COUNT)
        return int(row["n"]) if row else 0

    def scoped_count(self) -> int:
        """Live keys that grant less than an owner of every sandbox (a sandbox, or a lower role)."""
        row = self._store.query_one("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL AND "
                                    "(sandbox_id IS NOT NULL OR role != 'owner')")
        return int(row["n"]) if row else 0
