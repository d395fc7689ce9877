"""The store's exceptions, which live in the one tree in `concierge.errors`. Driver errors
(sqlite3, aiosqlite, asyncpg) are translated into these at the engine boundary and never leak
upwards."""

from __future__ import annotations

from concierge.errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    IntegrityError,
    InvalidCursor,
    InvalidDatabaseUrl,
    SchemaTooNew,
    StaleVersion,
    StoreError,
    UniqueViolation,
)

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
