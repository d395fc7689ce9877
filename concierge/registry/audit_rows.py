"""The ``audit`` table, seen by the sync registry: records appended in the transaction that
made the change (`concierge.store.audit`'s statement), and the log read newest first."""

from __future__ import annotations

from typing import Any

from concierge.registry.keyset import fetch_page
from concierge.registry.pages import Page
from concierge.registry.store import Store, Transaction, now_iso
from concierge.store.audit import APPEND

__all__ = ["AuditRows"]

Row = dict[str, Any]


class AuditRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def append(cx: Transaction, *, actor: str, action: str, object_type: str, object_id: str,
               sandbox_id: str | None, before: Any = None, after: Any = None) -> None:
        cx.execute(APPEND, (now_iso(), sandbox_id, actor, action, object_type, object_id, before, after))

    def newest(self, *, sandbox_id: str | None, limit: int) -> list[Row]:
        if sandbox_id is not None:
            return self._store.query("SELECT * FROM audit WHERE sandbox_id = ? ORDER BY id DESC LIMIT ?",
                                     (sandbox_id, limit))
        return self._store.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))

    def page(self, *, sandbox_id: str | None, limit: int, cursor: str | None) -> Page[Row]:
        """Newest first."""
        where, params = ("WHERE sandbox_id = ?", [sandbox_id]) if sandbox_id is not None else ("WHERE 1=1", [])
        return fetch_page(self._store, "audit", select="SELECT * FROM audit", count="SELECT COUNT(*) AS n FROM audit",
                          where=where, params=params, order=("id",), descending=True, cursor=cursor, limit=limit)
