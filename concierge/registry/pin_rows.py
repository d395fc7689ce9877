"""The ``tool_pins`` table and the pin state of ``sources`` (``pin_tools``,
``tools_pinned_at``): every statement `concierge.registry.pin_book` runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concierge.registry.store import Store, Transaction

__all__ = ["PinRows"]

Row = dict[str, Any]
_KEY = "WHERE source_id = ? AND tool_name = ?"
_FORGET = "DELETE FROM tool_pins WHERE source_id = ?"


class PinRows:
    def __init__(self, store: Store) -> None:
        self._store = store

    def of_source(self, source_id: str) -> dict[str, Row]:
        """tool name → its pin row."""
        return {r["tool_name"]: r for r in self._store.query("SELECT * FROM tool_pins WHERE source_id = ?",
                                                             (source_id,))}

    def pin_state(self, source_id: str) -> Row | None:
        """The source's ``pin_tools`` and ``tools_pinned_at`` (None: no such source)."""
        return self._store.query_one("SELECT tools_pinned_at, pin_tools FROM sources WHERE id = ?", (source_id,))

    @staticmethod
    def pinned_at(cx: Transaction, source_id: str) -> Row | None:
        """The source's ``tools_pinned_at``, read in ``cx`` (None: no such source)."""
        return cx.execute("SELECT tools_pinned_at FROM sources WHERE id = ?", (source_id,)).fetchone()

    def held_tool(self, source_id: str, tool: str) -> Row | None:
        """The pin row of ``tool`` if it is held now (and the source pins its tools)."""
        return self._store.query_one(
            "SELECT t.* FROM tool_pins t JOIN sources s ON s.id = t.source_id WHERE t.source_id = ? "
            "AND t.tool_name = ? AND t.pending_hash IS NOT NULL AND s.pin_tools = 1", (source_id, tool))

    @staticmethod
    def pin_all(cx: Transaction, source_id: str, pins: list[Row], at: str) -> None:
        """The source's first listing, pinned whole: its pins replaced by ``pins``."""
        cx.execute(_FORGET, (source_id,))
        for pin in pins:
            Store.insert(cx, "tool_pins", {"source_id": source_id} | pin)
        cx.execute("UPDATE sources SET tools_pinned_at = ? WHERE id = ?", (at, source_id))

    @staticmethod
    def write_pending(cx: Transaction, source_id: str, tool: str, values: Mapping[str, Any]) -> None:
        """Set the pending columns of a tool's pin; a tool without a pin gets one only for a
        pending definition (nothing to clear otherwise)."""
        exists = cx.execute(f"SELECT 1 FROM tool_pins {_KEY}", (source_id, tool)).fetchone()
        if exists:
            sets = ", ".join(f"{k} = ?" for k in values)
            cx.execute(f"UPDATE tool_pins SET {sets} {_KEY}", (*values.values(), source_id, tool))
        elif values.get("pending_hash") is not None:
            Store.insert(cx, "tool_pins", {"source_id": source_id, "tool_name": tool} | dict(values))

    @staticmethod
    def approve(cx: Transaction, source_id: str, tool: str, pending_hash: str, *, at: str, by: str) -> bool:
        """Pending → pinned, if the tool is still pending as ``pending_hash``; True if it was."""
        cur = cx.execute(
            "UPDATE tool_pins SET hash = pending_hash, definition = pending_definition, pinned_at = ?, "
            f"pinned_by = ?, pending_hash = NULL, pending_definition = NULL, pending_since = NULL {_KEY} "
            "AND pending_hash = ?", (at, by, source_id, tool, pending_hash))
        return bool(cur.rowcount)

    @staticmethod
    def touch_source(cx: Transaction, source_id: str, at: str) -> None:
        """Bump the source's ``updated_at`` (what the pin book's memo keys on)."""
        cx.execute("UPDATE sources SET updated_at = ? WHERE id = ?", (at, source_id))

    @staticmethod
    def reset(cx: Transaction, source_id: str) -> None:
        """Forget the source's pins: the next listing is pinned whole."""
        cx.execute(_FORGET, (source_id,))
        cx.execute("UPDATE sources SET tools_pinned_at = NULL WHERE id = ?", (source_id,))
