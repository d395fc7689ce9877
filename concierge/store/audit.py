"""The ``audit`` table: every change, appended in the transaction that made it."""

from __future__ import annotations

from typing import Any

from concierge.store._base import Connection, Database, Row
from concierge.store._rows import decode_json, encode, now_iso
from concierge.store.pages import Page, fetch_page

__all__ = ["APPEND", "AuditLog"]

APPEND = ("INSERT INTO audit (at, sandbox_id, actor, action, object_type, object_id, before, after)"
          " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
"""One record (the registry's sync repository, `concierge.registry.audit_rows`, runs it too)."""


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, cx: Connection, *, actor: str, action: str, object_type: str, object_id: str,
                     sandbox_id: str | None, before: Any = None, after: Any = None,
                     at: str | None = None) -> None:
        await cx.execute(
            APPEND, at or now_iso(), sandbox_id, actor, action, object_type, object_id, encode(before), encode(after))

    async def page(self, *, sandbox_id: str | None = None, cursor: str | None = None,
                   limit: int | None = None) -> Page[Row]:
        """Newest first."""
        sql, args = "SELECT * FROM audit WHERE TRUE", []
        if sandbox_id is not None:
            sql, args = sql + " AND sandbox_id = $1", [sandbox_id]
        page = await fetch_page(self._db, kind="audit", sql=sql, args=args, order=["id"], descending=True,
                                cursor=cursor, limit=limit)
        return Page([decode_json(r, ("before", "after")) for r in page.items], page.next_cursor)  # type: ignore[misc]
