"""Concierge conversations shared by every instance: a chat started on one instance is
continued, confirmed or given its credential on another.

    concierge_sessions   one row per conversation: its engine state (with the pending
                         confirmation) and a ``version`` bumped by every save
    concierge_events     the event history, appended in order
    kv "pending_secrets" (sealed) the credentials a conversation was handed, by reference,
                         encrypted; deleted with the conversation

`Conversations.save` is a compare-and-set on ``version``: an instance that saves a state it
loaded before another instance's save gets `StaleVersion` instead of overwriting it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from concierge.store._base import Database, Row
from concierge.store._errors import StaleVersion
from concierge.store._rows import now_iso
from concierge.store.kv import KeyValue, Sealer
from concierge.store.pages import Page, fetch_page

__all__ = ["APPEND_EVENT", "Conversations", "DELETE_EVENTS", "DELETE_SESSION", "GET_SESSION"]

# The statements the HTTP layer's sync repository (`concierge.server.conversation_rows`) runs too.
GET_SESSION = "SELECT * FROM concierge_sessions WHERE id = $1"
APPEND_EVENT = "INSERT INTO concierge_events (session_id, run_id, type, data, at) VALUES ($1, $2, $3, $4, $5)"
DELETE_EVENTS = "DELETE FROM concierge_events WHERE session_id = $1"
DELETE_SESSION = "DELETE FROM concierge_sessions WHERE id = $1"


class Conversations:
    def __init__(self, db: Database, *, sealer: Sealer) -> None:
        self._db = db
        self.secrets = KeyValue(db, "pending_secrets", sealer=sealer)

    async def create(self, session_id: str, *, sandbox_id: str, key_id: str | None, state: Any) -> int:
        now = now_iso()
        await self._db.execute(
            "INSERT INTO concierge_sessions (id, sandbox_id, key_id, state, created_at, updated_at, version)"
            " VALUES ($1, $2, $3, $4, $5, $5, 1)", session_id, sandbox_id, key_id, json.dumps(state), now)
        return 1

    async def get(self, session_id: str) -> Row | None:
        """The row with ``state`` decoded and its ``version``."""
        row = await self._db.fetchrow(GET_SESSION, session_id)
        if row is not None:
            row["state"] = json.loads(row["state"])
        return row

    async def save(self, session_id: str, state: Any, *, expected_version: int) -> int:
        """Replace the state if it is still at ``expected_version``; the new version."""
        async with self._db.transaction() as cx:
            version = await cx.fetchval(
                "UPDATE concierge_sessions SET state = $1, updated_at = $2, version = version + 1"
                " WHERE id = $3 AND version = $4 RETURNING version",
                json.dumps(state), now_iso(), session_id, expected_version)
            if version is None:
                current = await cx.fetchval("SELECT version FROM concierge_sessions WHERE id = $1", session_id)
                raise StaleVersion(
                    f"conversation {session_id} was saved by another instance (version {current}, not "
                    f"{expected_version}); load it again", current=None if current is None else int(current))
        return int(version)

    async def append_events(self, session_id: str, run_id: str | None,
                            events: Sequence[tuple[str, Any]]) -> None:
        """Append (type, data) records, in order, in one transaction."""
        at = now_iso()
        async with self._db.transaction() as cx:
            await cx.executemany(
                APPEND_EVENT, [(session_id, run_id, kind, json.dumps(data), at) for kind, data in events])

    async def events(self, session_id: str, *, cursor: str | None = None, limit: int | None = None) -> Page[Row]:
        """Oldest first; ``data`` decoded."""
        page = await fetch_page(self._db, kind="concierge_events", sql="SELECT * FROM concierge_events"
                                " WHERE session_id = $1", args=[session_id], order=["id"], cursor=cursor,
                                limit=limit)
        return Page([r | {"data": json.loads(r["data"])} for r in page.items], page.next_cursor)

    async def put_secret(self, session_id: str, ref: str, value: str) -> None:
        await self.secrets.put(f"{session_id}/{ref}", value.encode())

    async def get_secret(self, session_id: str, ref: str) -> str | None:
        entry = await self.secrets.get(f"{session_id}/{ref}")
        return None if entry is None else entry.value.decode()

    async def delete(self, session_id: str) -> None:
        """The conversation, its history and every secret it holds, in one transaction."""
        prefix = f"{session_id}/"
        async with self._db.transaction() as cx:
            await cx.execute("DELETE FROM kv WHERE namespace = $1 AND substr(key, 1, $2) = $3",
                             self.secrets.namespace, len(prefix), prefix)
            await cx.execute(DELETE_EVENTS, session_id)
            await cx.execute(DELETE_SESSION, session_id)
