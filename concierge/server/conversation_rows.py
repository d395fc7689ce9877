"""The ``concierge_sessions`` and ``concierge_events`` tables, seen by the HTTP chat: every
statement `concierge.server.chat` runs. The statements shared with the async store are
`concierge.store.conversations`'.

A conversation's ``version`` is bumped by every claim and save (compare-and-set: a save or a
claim over a version another instance has moved on from changes nothing); ``running_until``
is its run lease.
"""

from __future__ import annotations

from typing import Any

from concierge.registry.store import Store, Transaction
from concierge.store.conversations import APPEND_EVENT, DELETE_EVENTS, DELETE_SESSION, GET_SESSION

__all__ = ["ConversationRows"]

Row = dict[str, Any]
_IDLE = "running_until IS NULL OR running_until < ?"
"""No run holds the lease (its parameter: now, in Unix seconds)."""


class ConversationRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def create(self, session_id: str, *, sandbox_id: str, key_id: str | None, state: str, at: str) -> None:
        with self._store.transaction() as cx:
            Store.insert(cx, "concierge_sessions", {
                "id": session_id, "sandbox_id": sandbox_id, "key_id": key_id, "state": state,
                "created_at": at, "updated_at": at})

    def get(self, session_id: str) -> Row | None:
        return self._store.query_one(GET_SESSION, (session_id,))

    def version(self, session_id: str) -> int | None:
        row = self._store.query_one("SELECT version FROM concierge_sessions WHERE id = ?", (session_id,))
        return None if row is None else int(row["version"])

    def idle(self, *, updated_before: str, key_id: str | None, keep: int, now: float) -> list[Row]:
        """Conversations (id, state) without a run: those not updated since ``updated_before``
        (anyone's, at most 500), then the key's beyond its newest ``keep``."""
        rows = self._store.query(f"SELECT id, state FROM concierge_sessions WHERE updated_at < ? AND ({_IDLE})"
                                 " ORDER BY updated_at LIMIT 500", (updated_before, now))
        mine = "key_id IS NULL" if key_id is None else "key_id = ?"
        rows += self._store.query(
            f"SELECT id, state FROM concierge_sessions WHERE {mine} AND ({_IDLE})"
            " ORDER BY updated_at DESC, id DESC LIMIT 1000000 OFFSET ?",
            (*(() if key_id is None else (key_id,)), now, keep))
        return rows

    @staticmethod
    def forget_if_idle(cx: Transaction, session_id: str, *, now: float) -> bool:
        """Delete the conversation and its events unless a run holds it; True if deleted."""
        gone = cx.execute(f"DELETE FROM concierge_sessions WHERE id = ? AND ({_IDLE})", (session_id, now)).rowcount
        if gone:
            cx.execute(DELETE_EVENTS, (session_id,))
        return bool(gone)

    def claim(self, session_id: str, *, version: int, until: float, now: float) -> bool:
        """Take the run lease if the conversation is still at ``version`` and idle."""
        with self._store.transaction() as cx:
            return bool(cx.execute(
                "UPDATE concierge_sessions SET version = version + 1, running_until = ?"
                f" WHERE id = ? AND version = ? AND ({_IDLE})", (until, session_id, version, now)).rowcount)

    def save(self, session_id: str, state: str, *, at: str, version: int) -> bool:
        """The state, saved over ``version``; the lease ends. False if it changed meanwhile."""
        with self._store.transaction() as cx:
            return bool(cx.execute(
                "UPDATE concierge_sessions SET state = ?, updated_at = ?, version = version + 1,"
                " running_until = NULL WHERE id = ? AND version = ?", (state, at, session_id, version)).rowcount)

    def release(self, session_id: str, *, version: int) -> None:
        with self._store.transaction() as cx:
            cx.execute("UPDATE concierge_sessions SET running_until = NULL WHERE id = ? AND version = ?",
                       (session_id, version))

    def append_events(self, session_id: str, run_id: str | None, events: list[tuple[str, str]], *, at: str) -> None:
        """(type, data as JSON) records, in order, in one transaction."""
        with self._store.transaction() as cx:
            cx.executemany(APPEND_EVENT, [(session_id, run_id, kind, data, at) for kind, data in events])

    def events(self, session_id: str) -> list[Row]:
        """Oldest first."""
        return self._store.query("SELECT * FROM concierge_events WHERE session_id = ? ORDER BY id", (session_id,))

    def delete(self, session_id: str) -> None:
        with self._store.transaction() as cx:
            cx.execute(DELETE_EVENTS, (session_id,))
            cx.execute(DELETE_SESSION, (session_id,))
