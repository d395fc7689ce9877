"""Small helpers the repositories share: timestamps, JSON columns, generic inserts/updates.

Table and column names come from code, never from input; values always go as parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from concierge.store._base import Connection, Row

__all__ = ["decode_json", "encode", "insert", "now_iso", "update"]


def now_iso() -> str:
    """UTC now as ISO 8601 with milliseconds and ``Z`` (what every timestamp column holds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(value: Any) -> Any:
    """Lists and dicts go to TEXT columns as compact, key-sorted JSON."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


def decode_json(row: Row | None, columns: Iterable[str]) -> Row | None:
    if row is None:
        return None
    for column in columns:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


async def insert(cx: Connection, table: str, values: Mapping[str, Any]) -> None:
    cols = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await cx.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", *(encode(v) for v in values.values()))


async def update(cx: Connection, table: str, row_id: str, values: Mapping[str, Any]) -> int:
    """``UPDATE table SET … WHERE id = row_id``; rows changed."""
    if not values:
        return 0
    sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(values, start=1))
    return await cx.execute(f"UPDATE {table} SET {sets} WHERE id = ${len(values) + 1}",
                            *(encode(v) for v in values.values()), row_id)
