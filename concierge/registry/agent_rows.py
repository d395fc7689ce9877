"""The ``agents`` table: every statement the registry runs on it."""

from __future__ import annotations

from typing import Any

from concierge.registry.keyset import fetch_page
from concierge.registry.pages import Page
from concierge.registry.store import Store, Transaction

__all__ = ["AgentRows"]

Row = dict[str, Any]


class AgentRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, sandbox_id: str, ref: str) -> Row | None:
        """By slug or id, in one sandbox."""
        return self._store.query_one("SELECT * FROM agents WHERE sandbox_id = ? AND (slug = ? OR id = ?)",
                                     (sandbox_id, ref, ref))

    def in_sandbox(self, sandbox_id: str) -> list[Row]:
        return self._store.query("SELECT * FROM agents WHERE sandbox_id = ? ORDER BY created_at, slug", (sandbox_id,))

    def page(self, sandbox_id: str, *, limit: int, cursor: str | None) -> Page[Row]:
        """Oldest first."""
        return fetch_page(self._store, "agents", select="SELECT * FROM agents",
                          count="SELECT COUNT(*) AS n FROM agents", where="WHERE sandbox_id = ?",
                          params=[sandbox_id], order=("created_at", "id"), cursor=cursor, limit=limit)

    def count_in_sandbox(self, sandbox_id: str) -> int:
        row = self._store.query_one("SELECT COUNT(*) AS n FROM agents WHERE sandbox_id = ?", (sandbox_id,))
        return int(row["n"]) if row else 0

    @staticmethod
    def insert(cx: Transaction, row: Row) -> None:
        Store.insert(cx, "agents", row)

    @staticmethod
    def update(cx: Transaction, agent_id: str, values: Row) -> None:
        Store.update(cx, "agents", agent_id, values)

    @staticmethod
    def delete(cx: Transaction, agent_id: str) -> None:
        cx.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
