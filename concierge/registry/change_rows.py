"""The store's shared-state tables as the sync registry changes them: the change feed
(`concierge.store.changes`' statements) and the rate buckets a changed source drops
(`concierge.store.buckets`')."""

from __future__ import annotations

from typing import Any

from concierge.registry.store import Store, Transaction
from concierge.store.buckets import EVICT
from concierge.store.changes import BUMP_HEAD, BUMP_VERSION, CHANNEL, HEAD, SINCE

__all__ = ["ChangeRows"]


class ChangeRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def bump(cx: Transaction, scope: str, subject: str, action: str) -> int:
        """Record a change of ``subject`` in ``cx`` (call it last: the head row orders the
        writers until commit); its sequence number. PostgreSQL listeners are woken on commit."""
        seq = int(cx.execute(BUMP_HEAD, (scope,)).fetchone()["seq"])  # type: ignore[index]
        cx.execute(BUMP_VERSION, (scope, subject, seq, action))
        if cx.dialect == "postgresql":
            cx.execute("SELECT pg_notify(?, ?)", (CHANNEL, f"{scope}:{seq}"))
        return seq

    def head(self, scope: str) -> int:
        """The scope's last sequence number (0: nothing changed yet)."""
        row = self._store.query_one(HEAD, (scope,))
        return int(row["seq"]) if row else 0

    def since(self, scope: str, seq: int, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Changes numbered after ``seq`` (subject, version, seq, action), oldest first."""
        return self._store.query(SINCE, (scope, seq, limit))

    @staticmethod
    def evict_buckets(cx: Transaction, subject: str) -> None:
        """Drop every rate bucket of ``subject`` in ``cx``: every process starts it afresh."""
        cx.execute(EVICT, (subject,))
