"""Schemathesis hooks for tests/test_schemathesis.py (loaded by the CLI via SCHEMATHESIS_HOOKS).

A page ``cursor`` is valid only if the server handed it out (`next_cursor`), which no schema
can state: a generated one ("0") is refused as ``invalid_cursor``, rightly. So a generated
non-empty cursor is dropped before the request is sent; the empty one (a schema violation)
is kept, and tests/test_pages.py covers real, foreign and mangled cursors."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.query and case.query.get("cursor"):
        case.query = {k: v for k, v in case.query.items() if k != "cursor"}
