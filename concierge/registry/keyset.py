"""Keyset pages over the registry's sync store facade (``?`` placeholders, SQL that both
SQLite and PostgreSQL take).

A page asks for the rows *after* the last row's sort values, written out as
``a >= ? AND (a > ? OR (a = ? AND b > ?))``, so page 100 costs what page 1 costs and rows
added meanwhile are neither skipped nor repeated. Cursors are `concierge.store.pages`' format
(a cursor names its list; another list's or a mangled one is `InvalidCursor`,
``field="cursor"``), with the number of rows before it appended, for `Page.more`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from concierge.errors import InvalidCursor
from concierge.registry.pages import Page
from concierge.store.pages import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from concierge.registry.store import Store

__all__ = ["After", "after", "fetch_page", "mapped", "page_of"]

T = TypeVar("T")


class After(NamedTuple):
    """Where a page starts: the ``AND (…)`` condition and its parameters (empty for the first
    page), and how many rows earlier pages held (for `Page.more`)."""

    sql: str
    params: list[Any]
    offset: int


def after(kind: str, order: Sequence[str], cursor: str | None, *, descending: bool = False) -> After:
    """The rows after ``cursor`` in ``order`` (columns or expressions, the last one unique)."""
    if not cursor:
        return After("", [], 0)
    *values, offset = decode_cursor(cursor, kind, len(order) + 1)
    if not isinstance(offset, int) or offset < 0:
        raise InvalidCursor("cursor is not one this list handed out; start again without it")
    op = "<" if descending else ">"
    alternatives, params = [], []
    for i, column in enumerate(order):
        equal = [f"{c} = ?" for c in order[:i]]
        alternatives.append("(" + " AND ".join([*equal, f"{column} {op} ?"]) + ")")
        params.extend([*values[:i], values[i]])
    # The leading ``a >= ?`` is implied by the alternatives; it is there so that both engines
    # start the page with an index range instead of scanning the list from the top.
    return After(f" AND {order[0]} {op}= ? AND (" + " OR ".join(alternatives) + ")",
                 [values[0], *params], offset)


def fetch_page(store: Store, kind: str, *, select: str, count: str, where: str = "WHERE 1=1",
               params: Sequence[Any] = (), order: Sequence[str], keys: Sequence[str] | None = None,
               cursor: str | None, limit: int, descending: bool = False) -> Page[dict[str, Any]]:
    """One page of rows: ``select`` (``SELECT … FROM t``) and ``count`` (``SELECT COUNT(*) AS n
    FROM t``) with ``where`` and its ``params``, in ``order``; ``keys``: the row's columns that
    hold the ``order`` values (default: ``order`` itself). The repositories own the SQL; this
    only adds the page's start, order and limit."""
    start = after(kind, order, cursor, descending=descending)
    direction = " DESC" if descending else ""
    rows = store.query(f"{select} {where}{start.sql} ORDER BY {', '.join(c + direction for c in order)} LIMIT ?",
                       [*params, *start.params, limit + 1])
    total = store.query_one(f"{count} {where}", list(params))
    return page_of(kind, rows, limit=limit, keys=keys or order, start=start,
                   total=int(total["n"]) if total else 0, item=lambda r: r)


def mapped(page: Page[Any], item: Callable[[Any], T]) -> Page[T]:
    """The same page with each item made by ``item``."""
    return Page[T](items=[item(r) for r in page.items], next_cursor=page.next_cursor, total=page.total,
                   more=page.more)


def page_of(kind: str, rows: list[dict[str, Any]], *, limit: int, keys: Sequence[str], start: After,
            total: int, item: Callable[[dict[str, Any]], T]) -> Page[T]:
    """The page from a query that asked for ``limit + 1`` rows (one more says there are more)."""
    shown = rows[:limit]
    cursor = None
    if len(rows) > limit:
        cursor = encode_cursor(kind, [*(shown[-1][k] for k in keys), start.offset + len(shown)])
    more = max(0, total - start.offset - len(shown)) if cursor else 0
    return Page[T](items=[item(r) for r in shown], next_cursor=cursor, total=total,
                   more=max(more, 1) if cursor else 0)
