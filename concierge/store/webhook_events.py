"""The ``webhook_events`` table: accepted events, and replay de-duplication.

The unique pair (source, event id) makes a replayed event a no-op on every engine and
instance: of N concurrent deliveries of one event, one is stored and N-1 are duplicates.
"""

from __future__ import annotations

import json
from typing import Any

from concierge.store._base import Connection, Database, Row
from concierge.store._rows import now_iso
from concierge.store.pages import Page, fetch_page

__all__ = ["DELETE_FOR_SOURCE", "RECORD", "SEEN", "WebhookEvents"]

# The statements the registry's sync repository (`concierge.registry.webhook_rows`) runs too.
RECORD = ("INSERT INTO webhook_events (source_id, event_id, received_at, content_type, payload)"
          " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source_id, event_id) DO NOTHING RETURNING id")
"""One event; no row comes back when this (source, event id) was stored before."""
SEEN = "SELECT 1 AS x FROM webhook_events WHERE source_id = $1 AND event_id = $2"
DELETE_FOR_SOURCE = "DELETE FROM webhook_events WHERE source_id = $1"


class WebhookEvents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, source_id: str, event_id: str, payload: Any, *, content_type: str | None = None,
                     received_at: str | None = None) -> bool:
        """Store the event; False if this (source, event id) was stored before."""
        async with self._db.transaction() as cx:
            row = await cx.fetchrow(
                RECORD, source_id, event_id, received_at or now_iso(), content_type, json.dumps(payload))
        return row is not None

    async def seen(self, source_id: str, event_id: str) -> bool:
        return await self._db.fetchrow(SEEN, source_id, event_id) is not None

    async def page(self, source_id: str, *, cursor: str | None = None, limit: int | None = None) -> Page[Row]:
        """Newest first; ``payload`` decoded."""
        page = await fetch_page(self._db, kind="webhook_events", sql="SELECT * FROM webhook_events"
                                " WHERE source_id = $1", args=[source_id], order=["id"], descending=True,
                                cursor=cursor, limit=limit)
        return Page([r | {"payload": json.loads(r["payload"])} for r in page.items], page.next_cursor)

    async def delete_for_source(self, cx: Connection, source_id: str) -> int:
        return await cx.execute(DELETE_FOR_SOURCE, source_id)
