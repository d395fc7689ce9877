"""Pages of the registry's lists: ``limit`` rows, an opaque ``next_cursor``, the ``total``
and how many ``more`` follow. The model and the limit rule only (the HTTP client uses them);
the SQL that makes a page is `concierge.registry.keyset`.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from concierge.errors import ValidationFailed

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "check_limit"]

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
    more: int = 0
    """How many rows come after this page (0 on the last page)."""


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
