"""The store: one async interface over two engines, SQLite (the embedded default: one file,
usable by several processes at once) and PostgreSQL (for more than one machine).

    db = await open_database(settings.database_url, default_sqlite=home / "concierge.db")
    async with db.transaction() as cx:
        row = await cx.fetchrow("SELECT status FROM sources WHERE id = $1", source_id, for_update=True)
        ...

Layout:

    _url          which database (``CONCIERGE_DATABASE_URL``), parsed once, password never shown
    _base         `Database` / `Connection`: the interface and the transaction guarantees
    _sqlite       aiosqlite engine (WAL, busy timeout, one writer + readers)
    _postgres     asyncpg engine (pool, row locks, LISTEN/NOTIFY)
    _migrate      per-layer migration sets in ``schema_version``, safe under concurrent starts
    schema/       the migration sets: store, registry, http
    pages         keyset pagination for every list
    buckets       shared token buckets (rate caps), checked and taken in one statement
    changes       change feed: versions per subject, commit-ordered sequence per scope
    kv            versioned key-value entries (compare-and-set), optionally sealed
    sources, vault_rows, audit, api_keys, webhook_events, conversations
                  the async repositories: each table's SQL in one place, its statements as
                  module constants that the sync repositories of the registry and the HTTP
                  layer (``concierge/registry/*_rows.py``, ``concierge/server/*_rows.py``) run too

Dependencies point down: this package imports only `concierge.errors`, the drivers and
cryptography; nothing above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.store._base import Connection, Database, Row
    from concierge.store._errors import DatabaseBusy, DatabaseUnavailable, IntegrityError, InvalidCursor, InvalidDatabaseUrl, SchemaTooNew, StaleVersion, StoreError, UniqueViolation
    from concierge.store._migrate import Migration, MigrationSet, migrate, schema_versions
    from concierge.store._open import open_database
    from concierge.store._rows import now_iso
    from concierge.store._url import DEFAULT_SETTING, DatabaseUrl, Dialect, parse_database_url
    from concierge.store.pages import Page

__all__ = [
    "Connection",
    "DEFAULT_SETTING",
    "Database",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "DatabaseUrl",
    "Dialect",
    "IntegrityError",
    "InvalidCursor",
    "InvalidDatabaseUrl",
    "Migration",
    "MigrationSet",
    "Page",
    "Row",
    "SchemaTooNew",
    "StaleVersion",
    "StoreError",
    "UniqueViolation",
    "migrate",
    "now_iso",
    "open_database",
    "parse_database_url",
    "schema_versions",
]

_EXPORTS = {
    "Connection": "_base",
    "Database": "_base",
    "Row": "_base",
    "DatabaseBusy": "_errors",
    "DatabaseUnavailable": "_errors",
    "IntegrityError": "_errors",
    "InvalidCursor": "_errors",
    "InvalidDatabaseUrl": "_errors",
    "SchemaTooNew": "_errors",
    "StaleVersion": "_errors",
    "StoreError": "_errors",
    "UniqueViolation": "_errors",
    "Migration": "_migrate",
    "MigrationSet": "_migrate",
    "migrate": "_migrate",
    "schema_versions": "_migrate",
    "open_database": "_open",
    "now_iso": "_rows",
    "DEFAULT_SETTING": "_url",
    "DatabaseUrl": "_url",
    "Dialect": "_url",
    "parse_database_url": "_url",
    "Page": "pages",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
