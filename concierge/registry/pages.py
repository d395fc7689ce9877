"""Pages of the registry's lists: ``limit`` rows, an opaque ``next_cursor``, the ``total``.

Keyset pagination over the sync store facade (``?`` placeholders, SQL that both SQLite and
PostgreSQL take): a page asks for the rows *after* the last row's sort values, written out
as ``a > ? OR (a = ? AND b > ?)``, so page 100 costs what page 1 costs and rows added
meanwhile are neither skipped nor repeated. Cursors are `concierge.store.pages`' format (a
cursor names its list; another list's or a mangled one is `InvalidCursor`, ``field="cursor"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from concierge.errors import ValidationFailed
from concierge.store.pages import decode_cursor, encode_cursor

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "check_limit", "keyset", "next_cursor"]

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    next_cursor: str | None = None
    """Pass it back as ``cursor`` for the next page; ``None`` on the last page."""
    total: int
    """How many rows the whole list has (with the same filters), on every page."""

    @property
    def more(self) -> int:
        """Rows after this page, if it is the first one (``total - len(items)``)."""
        return max(0, self.total - len(self.items))


def check_limit(limit: Any, *, field: str = "limit") -> int:
    """``limit`` as an int in 1..MAX_LIMIT (``None``: the default), else `ValidationFailed`
    naming ``field`` as the caller spelled it (``limit``, ``--limit``)."""
    if limit is None:
        return DEFAULT_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, (int, str)):
        raise ValidationFailed(f"{field} must be an integer from 1 to {MAX_LIMIT} (got {limit!r})",
                               field=field)
    try:
        value = int(limit)
    except ValueError:
        raise ValidationFailed(f"{field} must be an integer from 1 to {MAX_LIMIT} (got {limit!r})",
                               field=field) from None
    if not 1 <= value <= MAX_LIMIT:
        raise ValidationFailed(f"{field} must be from 1 to {MAX_LIMIT} (got {value})", field=field)
    return value


def keyset(kind: str, order: Sequence[str], cursor: str | None, *,
           descending: bool = False) -> tuple[str, list[Any]]:
    """The ``AND (…)`` condition (and its parameters) for the rows after ``cursor`` in
    ``order`` (columns or expressions, the last one unique); ``("", [])`` without a cursor."""
    if not cursor:
        return "", []
    after = decode_cursor(cursor, kind, len(order))
    op = "<" if descending else ">"
    alternatives, params = [], []
    for i, column in enumerate(order):
        equal = [f"{c} = ?" for c in order[:i]]
        alternatives.append("(" + " AND ".join([*equal, f"{column} {op} ?"]) + ")")
        params.extend([*after[:i], after[i]])
    return " AND (" + " OR ".join(alternatives) + ")", params


def next_cursor(kind: str, rows: list[dict[str, Any]], limit: int, keys: Sequence[str]) -> str | None:
    """The cursor after ``rows[limit - 1]`` when the query (``LIMIT limit + 1``) found more."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor(kind, [last[k] for k in keys])
