"""The ``sources`` table, seen by the sync registry: every statement the service runs on it.

Reads outside a transaction come back with their JSON columns decoded (`Store.query`); reads
inside one (``cx``) come back as stored, the way the writing code compares them. Reads that
decide a write (revoke, a secret's rotation, a health check's result) take the row with
``for_update=True`` in the writing transaction. The statements shared with the async store
are `concierge.store.sources`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from concierge.registry.keyset import fetch_page
from concierge.registry.pages import Page
from concierge.registry.store import Store, Transaction
from concierge.store.sources import BY_ID, DELETE, LIVE_NAMESPACE_HOLDER
from concierge.store.vault_rows import SOURCE_STATUS

__all__ = ["SourceFilter", "SourceRows"]

Row = dict[str, Any]
SourceFilter = tuple[str, list[Any]]
"""A ``WHERE …`` clause over sources and its parameters (from `SourceRows.where`)."""

_SELECT = "SELECT * FROM sources"
_COUNT = "SELECT COUNT(*) AS n FROM sources"


class SourceRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- reads -----------------------------------------------------------------------------

    def get(self, source_id: str) -> Row | None:
        return self._store.query_one(BY_ID, (source_id,))

    def get_in(self, cx: Transaction, source_id: str, *, for_update: bool = False) -> Row | None:
        """The row as stored, read in ``cx`` (``for_update``: locked until commit)."""
        return cx.execute(BY_ID, (source_id,), for_update=for_update).fetchone()

    def status_in(self, cx: Transaction, source_id: str, *, for_update: bool = False) -> str | None:
        row = cx.execute(SOURCE_STATUS, (source_id,), for_update=for_update).fetchone()
        return None if row is None else str(row["status"])

    def namespace_holder(self, sandbox_id: str, namespace: str, *, other_than: str | None = None) -> Row | None:
        """The live source (id, name) holding ``namespace`` in the sandbox (a friendly early
        check; the unique index decides a race)."""
        return self._store.query_one(LIVE_NAMESPACE_HOLDER, (sandbox_id, namespace, other_than or ""))

    def count_in_sandbox(self, sandbox_id: str) -> int:
        row = self._store.query_one("SELECT COUNT(*) AS n FROM sources WHERE sandbox_id = ?", (sandbox_id,))
        return int(row["n"]) if row else 0

    @staticmethod
    def where(*, sandbox_id: str | None = None, status: str | None = None,
              include_disconnected: bool = True) -> SourceFilter:
        sql, params = "WHERE 1=1", []
        if sandbox_id is not None:
            sql += " AND sandbox_id = ?"
            params.append(sandbox_id)
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        elif not include_disconnected:
            sql += " AND status != 'disconnected'"
        return sql, params

    def matching(self, where: SourceFilter) -> list[Row]:
        """Every matching source, oldest first."""
        return self._store.query(f"{_SELECT} {where[0]} ORDER BY created_at, id", where[1])

    def page(self, where: SourceFilter, *, limit: int, cursor: str | None) -> Page[Row]:
        return fetch_page(self._store, "sources", select=_SELECT, count=_COUNT, where=where[0], params=where[1],
                          order=("created_at", "id"), cursor=cursor, limit=limit)

    def interrupted(self, status: str, health_error: str) -> list[str]:
        """Ids of the sources left with ``status`` and ``health_error`` (a check that never finished)."""
        return [r["id"] for r in self._store.query(
            "SELECT id FROM sources WHERE status = ? AND health_error = ? ORDER BY created_at, id",
            (status, health_error))]

    def webhook_admission(self, source_id: str) -> Row | None:
        """What the webhook receiver checks first (id, name, status, its rate cap)."""
        return self._store.query_one(
            "SELECT id, name, status, webhook_rate_cap_per_minute FROM sources WHERE id = ?", (source_id,))

    # -- writes (in the caller's transaction) ----------------------------------------------

    @staticmethod
    def insert(cx: Transaction, row: Row) -> None:
        Store.insert(cx, "sources", row)

    @staticmethod
    def update(cx: Transaction, source_id: str, values: Row) -> None:
        Store.update(cx, "sources", source_id, values)

    def delete(self, cx: Transaction, source_id: str) -> None:
        """The row and every row of another table that names it (``source_id``)."""
        for table in self._dependent_tables():
            cx.execute(f"DELETE FROM {table} WHERE source_id = ?", (source_id,))
        cx.execute(DELETE, (source_id,))

    def _dependent_tables(self) -> Sequence[str]:
        tables = self._store.run(lambda db: db.tables())
        return sorted(t for t, columns in tables.items() if t != "sources" and "source_id" in columns)
