"""Printing for the CLI: JSON on stdout with ``--json``, short human lines otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from concierge.errors import ConciergeError

__all__ = ["emit", "error", "table"]


def emit(obj: Any, *, as_json: bool, human: str | None = None) -> None:
    if as_json:
        from pydantic_core import to_jsonable_python

        print(json.dumps(to_jsonable_python(obj), indent=2, sort_keys=False))
    elif human is not None:
        print(human)


def error(exc: ConciergeError, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(exc.to_dict(), indent=2))
    else:
        print(f"error: {exc.detail}", file=sys.stderr)


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    if not rows:
        return ""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), *(line(r) for r in rows)])
