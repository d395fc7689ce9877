"""The ``sandboxes`` table: every statement the registry runs on it."""

from __future__ import annotations

from typing import Any

from concierge.registry.keyset import fetch_page
from concierge.registry.pages import Page
from concierge.registry.store import Store, Transaction

__all__ = ["SandboxRows"]

Row = dict[str, Any]

_BY_NAME = "SELECT * FROM sandboxes WHERE lower(name) = lower(?)"
_DEFAULT_FIRST = "CASE WHEN name = 'default' THEN 0 ELSE 1 END"  # (a page's sort key: no parameter)


class SandboxRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def by_name(self, name: str) -> Row | None:
        return self._store.query_one(_BY_NAME, (name,))

    def by_ref(self, ref: str) -> Row | None:
        """By id or name (names compare without case)."""
        return self._store.query_one("SELECT * FROM sandboxes WHERE id = ? OR lower(name) = lower(?)", (ref, ref))

    def every(self, *, first: str) -> list[Row]:
        """Every sandbox: the one named ``first``, then the oldest first."""
        return self._store.query(
            "SELECT * FROM sandboxes ORDER BY (CASE WHEN name = ? THEN 0 ELSE 1 END), created_at", (first,))

    def page(self, *, only: str | None, limit: int, cursor: str | None) -> Page[Row]:
        """The default sandbox first, then the oldest first; ``only``: just that sandbox id."""
        rank = _DEFAULT_FIRST
        where, params = ("WHERE id = ?", [only]) if only is not None else ("WHERE 1=1", [])
        return fetch_page(self._store, "sandboxes", select=f"SELECT *, {rank} AS sort_rank FROM sandboxes",
                          count="SELECT COUNT(*) AS n FROM sandboxes", where=where, params=params,
                          order=(rank, "created_at", "id"), keys=("sort_rank", "created_at", "id"),
                          cursor=cursor, limit=limit)

    @staticmethod
    def insert(cx: Transaction, row: Row) -> None:
        Store.insert(cx, "sandboxes", row)

    @staticmethod
    def delete(cx: Transaction, sandbox_id: str) -> None:
        cx.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
