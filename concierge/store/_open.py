"""`open_database`: a URL in, a migrated `Database` out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from concierge.store._base import Database
from concierge.store._migrate import MigrationSet, migrate
from concierge.store._rows import now_iso
from concierge.store._url import DEFAULT_SETTING, DatabaseUrl, parse_database_url

__all__ = ["open_database"]


async def open_database(url: DatabaseUrl | str | None = None, *, default_sqlite: Path | None = None,
                        migrations: Sequence[MigrationSet] | None = None,
                        setting: str = DEFAULT_SETTING, pool_size: int = 10) -> Database:
    """Open the database ``url`` names (unset: the SQLite file ``default_sqlite``) and apply
    ``migrations`` (default: every layer's, `concierge.store.schema.ALL`). ``setting`` names
    where the URL came from (``--database-url``) in errors. The PostgreSQL driver is imported
    only here, and only for a PostgreSQL URL."""
    parsed = url if isinstance(url, DatabaseUrl) else parse_database_url(
        url, default_sqlite=default_sqlite, setting=setting)
    if migrations is None:
        from concierge.store.schema import ALL

        migrations = ALL
    db: Database
    if parsed.dialect == "sqlite":
        from concierge.store._sqlite import SqliteDatabase

        db = await SqliteDatabase.open(parsed)
    else:
        from concierge.store._postgres import PostgresDatabase

        db = await PostgresDatabase.open(parsed, max_size=pool_size)
    try:
        await migrate(db, migrations, now=now_iso())
    except BaseException:
        await db.aclose()
        raise
    return db
