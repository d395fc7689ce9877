"""The ``vault`` and ``vault_key_check`` tables, seen by the sync registry: ciphertexts only
(`concierge.registry.vault` encrypts and decrypts). The statements are
`concierge.store.vault_rows`', the async store's repository of the same tables."""

from __future__ import annotations

from typing import Any

from concierge.registry.store import Store, Transaction, now_iso
from concierge.store import vault_rows as sql

__all__ = ["VaultRows"]

Row = dict[str, Any]


class VaultRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def source_status(self, cx: Transaction, source_id: str) -> str | None:
        """The owning source's status, locked until ``cx`` commits (None: no such source)."""
        row = cx.execute(sql.SOURCE_STATUS, (source_id,), for_update=True).fetchone()
        return None if row is None else str(row["status"])

    @staticmethod
    def put(cx: Transaction, key: str, nonce: bytes, ciphertext: bytes) -> None:
        cx.execute(sql.PUT, (key, nonce, ciphertext, now_iso()))

    def get(self, key: str) -> Row | None:
        return self._store.query_one(sql.GET, (key,))

    def nonce(self, key: str, cx: Transaction | None = None) -> bytes | None:
        row = cx.execute(sql.VERSION, (key,)).fetchone() if cx is not None else self._store.query_one(
            sql.VERSION, (key,))
        return None if row is None else bytes(row["nonce"])

    @staticmethod
    def delete(cx: Transaction, key: str) -> None:
        cx.execute(sql.DELETE, (key,))

    @staticmethod
    def delete_prefix(cx: Transaction, prefix: str) -> int:
        return cx.execute(sql.DELETE_PREFIX, (len(prefix), prefix)).rowcount

    def count(self) -> int:
        row = self._store.query_one(sql.COUNT)
        return int(row["n"]) if row else 0

    def keys_like(self, pattern: str) -> list[str]:
        """Keys matching a ``LIKE`` pattern (``user_mcp/%/oauth/tokens``)."""
        return [r["key"] for r in self._store.query("SELECT key FROM vault WHERE key LIKE ?", (pattern,))]

    @staticmethod
    def oldest(cx: Transaction) -> Row | None:
        return cx.execute(sql.OLDEST).fetchone()

    def key_check(self, cx: Transaction | None = None) -> Row | None:
        return cx.execute(sql.KEY_CHECK).fetchone() if cx is not None else self._store.query_one(sql.KEY_CHECK)

    @staticmethod
    def record_key_check(cx: Transaction, nonce: bytes, ciphertext: bytes) -> None:
        cx.execute(sql.RECORD_KEY_CHECK, (nonce, ciphertext, now_iso()))

    def forget_key_check(self) -> None:
        """A new key for a home whose vault is empty: the old key's check value goes with it."""
        with self._store.transaction() as cx:
            cx.execute(sql.FORGET_KEY_CHECK)
