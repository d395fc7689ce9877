"""The ``webhook_events`` table, seen by the sync registry: events stored once per (source,
event id), listed newest first. The statements shared with the async store are
`concierge.store.webhook_events`'."""

from __future__ import annotations

import json
from typing import Any

from concierge.registry.keyset import fetch_page, mapped
from concierge.registry.pages import Page
from concierge.registry.store import Store, now_iso
from concierge.store.webhook_events import RECORD, SEEN

__all__ = ["WebhookEventRows"]

Row = dict[str, Any]


class WebhookEventRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, source_id: str, event_id: str, payload: Any, *, content_type: str | None) -> bool:
        """Store the event; False if this (source, event id) was stored before (a concurrent
        delivery of the same id may win the insert: still only one row)."""
        with self._store.transaction() as cx:
            cur = cx.execute(RECORD, (source_id, event_id, now_iso(), content_type, json.dumps(payload)))
        return bool(cur.rowcount)

    def seen(self, source_id: str, event_id: str) -> bool:
        return self._store.query_one(SEEN, (source_id, event_id)) is not None

    def page(self, source_id: str, *, limit: int, cursor: str | None) -> Page[Row]:
        """Newest first; ``payload`` decoded."""
        page = fetch_page(self._store, "webhook_events", select="SELECT * FROM webhook_events",
                          count="SELECT COUNT(*) AS n FROM webhook_events", where="WHERE source_id = ?",
                          params=[source_id], order=("id",), descending=True, cursor=cursor, limit=limit)
        return mapped(page, _decoded)


def _decoded(row: Row) -> Row:
    return row | {"payload": json.loads(row["payload"])}
