"""The store's exceptions. Driver errors (sqlite3, aiosqlite, asyncpg) are translated into these
at the engine boundary and never leak upwards.

    ConciergeError
    ├── StoreError                 base of the store's own errors (``error = "store_error"``)
    │   ├── DatabaseUnavailable    the database cannot be opened or reached (names the URL, never its password)
    │   ├── DatabaseBusy           another process held the SQLite write lock past the busy timeout
    │   ├── IntegrityError         a constraint refused a write; ``constraint`` names it when known
    │   │   └── UniqueViolation    a unique index refused a duplicate (``constraint``: the index)
    │   └── SchemaTooNew           the database was migrated by a newer Concierge
    ├── Conflict
    │   └── StaleVersion           a compare-and-set saw a version other than the one expected
    └── ValidationFailed
        ├── InvalidDatabaseUrl     ``CONCIERGE_DATABASE_URL`` / ``--database-url`` cannot be used
        └── InvalidCursor          a page cursor that this list did not hand out
"""

from __future__ import annotations

from concierge.errors import ConciergeError, Conflict, ValidationFailed

__all__ = [
    "DatabaseBusy",
    "DatabaseUnavailable",
    "IntegrityError",
    "InvalidCursor",
    "InvalidDatabaseUrl",
    "SchemaTooNew",
    "StaleVersion",
    "StoreError",
    "UniqueViolation",
]


class StoreError(ConciergeError):
    error = "store_error"


class DatabaseUnavailable(StoreError):
    error = "database_unavailable"


class DatabaseBusy(StoreError):
    error = "database_busy"


class IntegrityError(StoreError):
    error = "integrity_error"

    def __init__(self, detail: str, *, constraint: str | None = None) -> None:
        super().__init__(detail)
        self.constraint = constraint


class UniqueViolation(IntegrityError):
    error = "unique_violation"


class SchemaTooNew(StoreError):
    error = "schema_too_new"


class StaleVersion(Conflict):
    error = "stale_version"

    def __init__(self, detail: str, *, current: int | None) -> None:
        super().__init__(detail)
        self.current = current


class InvalidDatabaseUrl(ValidationFailed):
    pass


class InvalidCursor(ValidationFailed):
    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="cursor")
