"""Keyset (cursor) pagination, the same for every list.

A page is ``limit`` rows in a fixed order (a unique column last, so ties never reorder) and a
``next_cursor`` that holds the last row's sort values. The next page asks for rows *after*
those values (``(a, b) > ($n, $m)``), so a page costs the same at row 10 as at row 10,000 and
rows added meanwhile are neither skipped nor repeated. A cursor names its list: one handed out
by another list, or mangled, is refused as `InvalidCursor` (``field="cursor"``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from concierge.store._base import Connection, Database, Row
from concierge.store._errors import InvalidCursor

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "clamp_limit", "decode_cursor", "encode_cursor", "fetch_page"]

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
    """None on the last page."""


def encode_cursor(kind: str, values: Sequence[Any]) -> str:
    raw = json.dumps([kind, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, arity: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this list handed out; start again without it") from None
    if (not isinstance(decoded, list) or len(decoded) != arity + 1 or decoded[0] != kind
            or not all(isinstance(v, (str, int, float)) for v in decoded[1:])):
        raise InvalidCursor(f"cursor belongs to another list (expected one from {kind}); "
                            "start again without it")
    return decoded[1:]


def clamp_limit(limit: int | None, *, maximum: int = MAX_LIMIT) -> int:
    return DEFAULT_LIMIT if limit is None else max(1, min(int(limit), maximum))


async def fetch_page(db: Database | Connection, *, kind: str, sql: str, args: Sequence[Any] = (),
                     order: Sequence[str], descending: bool = False, cursor: str | None = None,
                     limit: int | None = None) -> Page[Row]:
    """One page of ``sql`` (a ``SELECT … WHERE …`` without ORDER BY or LIMIT; use ``WHERE
    TRUE`` for none) in ``order`` (columns, the last one unique)."""
    size = clamp_limit(limit)
    args = list(args)
    if cursor:
        after = decode_cursor(cursor, kind, len(order))
        marks = ", ".join(f"${len(args) + i}" for i in range(1, len(order) + 1))
        sql = f"{sql} AND ({', '.join(order)}) {'<' if descending else '>'} ({marks})"
        args.extend(after)
    direction = " DESC" if descending else ""
    sql = f"{sql} ORDER BY {', '.join(c + direction for c in order)} LIMIT {size + 1}"
    rows = await db.fetch(sql, *args)
    if len(rows) <= size:
        return Page(rows, None)
    rows = rows[:size]
    last = rows[-1]
    return Page(rows, encode_cursor(kind, [last[c.rsplit(".", 1)[-1]] for c in order]))
