"""The ``sources`` table: user_mcp sources, with the namespace rule enforced by the database.

The unique index ``sources_live_namespace`` (sandbox, ``lower(app_namespace)``, among sources
that are not ``disconnected``) decides concurrent registrations on every engine and in every
process: exactly one insert of a namespace wins, the others get `NamespaceTaken`. Reads that
decide a write (revoke, a secret's rotation, a health check's result) take the row with
``for_update=True`` inside the writing transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concierge.errors import NamespaceTaken
from concierge.store._base import Connection, Database, Row
from concierge.store._errors import UniqueViolation
from concierge.store._rows import decode_json, insert, update
from concierge.store.pages import Page, fetch_page

__all__ = ["BY_ID", "DELETE", "JSON_COLUMNS", "LIVE_NAMESPACE_HOLDER", "NAMESPACE_INDEX", "SourceRows"]

JSON_COLUMNS = ("allowed_tools", "ingest_tool_calls", "headers", "stdio", "oauth")
NAMESPACE_INDEX = "sources_live_namespace"

# The statements the registry's sync repository (`concierge.registry.source_rows`) runs too.
BY_ID = "SELECT * FROM sources WHERE id = $1"
DELETE = "DELETE FROM sources WHERE id = $1"
LIVE_NAMESPACE_HOLDER = (
    "SELECT id, name FROM sources WHERE sandbox_id = $1 AND lower(app_namespace) = lower($2)"
    " AND status <> 'disconnected' AND kind = 'user_mcp' AND id <> $3")
"""The live source holding a namespace in a sandbox ($3: a source id to leave out, or '')."""


def _taken(namespace: str) -> NamespaceTaken:
    return NamespaceTaken(f"app_namespace {namespace!r} is already used by a live source in this sandbox")


def _is_namespace_clash(exc: UniqueViolation) -> bool:
    return exc.constraint == NAMESPACE_INDEX


class SourceRows:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, cx: Connection, row: Mapping[str, Any]) -> None:
        try:
            await insert(cx, "sources", row)
        except UniqueViolation as exc:
            if _is_namespace_clash(exc):
                raise _taken(str(row["app_namespace"])) from None
            raise

    async def update(self, cx: Connection, source_id: str, values: Mapping[str, Any]) -> int:
        try:
            return await update(cx, "sources", source_id, values)
        except UniqueViolation as exc:
            if _is_namespace_clash(exc):
                raise _taken(str(values.get("app_namespace", "?"))) from None
            raise

    async def get(self, source_id: str, *, cx: Connection | None = None, for_update: bool = False) -> Row | None:
        """The row (JSON columns decoded). ``for_update`` (with ``cx``): locked until commit."""
        row = await (cx.fetchrow(BY_ID, source_id, for_update=for_update) if cx else self._db.fetchrow(BY_ID, source_id))
        return decode_json(row, JSON_COLUMNS)

    async def namespace_taken(self, sandbox_id: str, namespace: str, *, other_than: str | None = None) -> bool:
        """A friendly early check; the unique index is what decides a race."""
        return await self._db.fetchrow(LIVE_NAMESPACE_HOLDER, sandbox_id, namespace, other_than or "") is not None

    async def page(self, *, sandbox_id: str | None = None, status: str | None = None,
                   include_disconnected: bool = True, cursor: str | None = None,
                   limit: int | None = None) -> Page[Row]:
        """Sources in creation order (``created_at``, ``id``), one page at a time."""
        sql, args = "SELECT * FROM sources WHERE TRUE", []
        if sandbox_id is not None:
            args.append(sandbox_id)
            sql += f" AND sandbox_id = ${len(args)}"
        if status is not None:
            args.append(status)
            sql += f" AND status = ${len(args)}"
        elif not include_disconnected:
            sql += " AND status <> 'disconnected'"
        page = await fetch_page(self._db, kind="sources", sql=sql, args=args, order=["created_at", "id"],
                                cursor=cursor, limit=limit)
        return Page([decode_json(r, JSON_COLUMNS) for r in page.items], page.next_cursor)  # type: ignore[misc]

    async def delete(self, cx: Connection, source_id: str) -> int:
        return await cx.execute(DELETE, source_id)
