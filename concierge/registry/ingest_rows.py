"""The ``ingested_results`` table: what `concierge.registry.ingest` keeps of each pull."""

from __future__ import annotations

from typing import Any

from concierge.registry.store import Store, now_iso

__all__ = ["IngestRows"]


class IngestRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def store_if_changed(self, source_id: str, tool_name: str, arguments: dict[str, Any], *, call_key: str,
                         content_hash: str, content: dict[str, Any]) -> bool:
        """Insert the result unless the last one stored for this call has the same hash (one
        transaction: the check and the insert); True if stored."""
        with self._store.transaction() as cx:
            last = cx.execute("SELECT content_hash FROM ingested_results WHERE source_id = ? "
                              "AND call_key = ? ORDER BY id DESC LIMIT 1", (source_id, call_key)).fetchone()
            if last is not None and last["content_hash"] == content_hash:
                return False
            Store.insert(cx, "ingested_results", {
                "source_id": source_id, "tool_name": tool_name, "arguments": arguments, "call_key": call_key,
                "content_hash": content_hash, "fetched_at": now_iso(), "content": content})
            return True

    def newest(self, source_id: str, *, limit: int) -> list[dict[str, Any]]:
        return self._store.query(
            "SELECT id, source_id, tool_name, arguments, content_hash, content, fetched_at "
            "FROM ingested_results WHERE source_id = ? ORDER BY id DESC LIMIT ?", (source_id, limit))
