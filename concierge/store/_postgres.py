"""The PostgreSQL engine: asyncpg, one connection pool per process.

Chosen over psycopg 3 and SQLAlchemy by measurement (``bench/store.py``): asyncpg did about
1.5x psycopg's operations per second and 2-3x SQLAlchemy's on this machine, imports in less
time, and its ``$1`` parameters are the ones both engines already share. It is imported only
when a PostgreSQL URL is used, so the SQLite default never pays for it.

Behind a pooler in *transaction* mode (PgBouncer), asyncpg's prepared-statement cache must be
off; connect to PostgreSQL directly or use session mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import asyncpg
import asyncpg.exceptions as pgerr

from concierge.store._base import Connection, Database, Row
from concierge.store._errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    IntegrityError,
    StoreError,
    UniqueViolation,
)
from concierge.store._url import DatabaseUrl

__all__ = ["PostgresDatabase"]

_LOST = (OSError, asyncio.TimeoutError, pgerr.PostgresConnectionError, pgerr.InterfaceError,
         pgerr.OperatorInterventionError, pgerr.InsufficientResourcesError)
_REFUSED = (pgerr.InvalidCatalogNameError, pgerr.InvalidAuthorizationSpecificationError,
            pgerr.InvalidPasswordError)


class _Translate:
    """Driver errors → store errors, at the boundary (never with the URL's password)."""

    def __init__(self, url: DatabaseUrl) -> None:
        self._url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None or isinstance(exc, StoreError):
            return
        if isinstance(exc, pgerr.UniqueViolationError):
            raise UniqueViolation(str(exc), constraint=exc.constraint_name) from None
        if isinstance(exc, pgerr.IntegrityConstraintViolationError):
            raise IntegrityError(str(exc), constraint=getattr(exc, "constraint_name", None)) from None
        if isinstance(exc, pgerr.TransactionRollbackError):  # deadlock, serialization failure
            raise DatabaseBusy(f"the database {self._url.display} gave up a transaction that "
                               f"clashed with another ({exc}); try again") from None
        if isinstance(exc, _REFUSED + _LOST):
            raise DatabaseUnavailable(f"cannot use the database {self._url.display}: "
                                      f"{_scrub(str(exc) or type(exc).__name__, self._url)}") from None


def _scrub(text: str, url: DatabaseUrl) -> str:
    from urllib.parse import urlsplit

    password = urlsplit(url.dsn or "").password
    return text.replace(password, "***") if password else text


def _rowcount(status: str) -> int:
    """asyncpg's command status (``UPDATE 3``, ``INSERT 0 1``) → rows changed."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PgConnection(Connection):
    dialect: ClassVar = "postgresql"

    def __init__(self, cx: asyncpg.Connection, url: DatabaseUrl) -> None:
        self._cx = cx
        self._translate = _Translate(url)

    async def fetch(self, sql: str, *args: Any, for_update: bool = False) -> list[Row]:
        if for_update:
            sql = f"{sql} FOR UPDATE"
        with self._translate:
            return [dict(r) for r in await self._cx.fetch(sql, *args)]

    async def execute(self, sql: str, *args: Any) -> int:
        with self._translate:
            return _rowcount(await self._cx.execute(sql, *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._translate:
            await self._cx.executemany(sql, list(rows))

    async def advisory_lock(self, key: int) -> None:
        await self.execute("SELECT pg_advisory_xact_lock($1)", key)

    async def notify(self, channel: str, payload: str) -> None:
        await self.execute("SELECT pg_notify($1, $2)", channel, payload)


class PostgresDatabase(Database):
    """A PostgreSQL database. Open with `PostgresDatabase.open`; close with `aclose`."""

    dialect: ClassVar = "postgresql"

    def __init__(self, url: DatabaseUrl, pool: asyncpg.Pool) -> None:
        self.url = url
        self._pool = pool
        self._translate = _Translate(url)

    @classmethod
    async def open(cls, url: DatabaseUrl, *, min_size: int = 1, max_size: int = 10,
                   connect_timeout: float = 10.0) -> PostgresDatabase:
        with _Translate(url):
            pool = await asyncpg.create_pool(
                url.dsn, min_size=min_size, max_size=max_size, timeout=connect_timeout,
                server_settings={"application_name": "concierge"})
        return cls(url, pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        with self._translate:
            raw = await self._pool.acquire()
        try:
            tx = raw.transaction()
            with anyio.CancelScope(shield=True), self._translate:
                await tx.start()
            try:
                yield _PgConnection(raw, self.url)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    try:
                        await tx.rollback()
                    except _LOST:  # the connection is gone, and its transaction with it
                        pass
                raise
            with anyio.CancelScope(shield=True), self._translate:
                await tx.commit()
        finally:
            with anyio.CancelScope(shield=True):
                await self._pool.release(raw)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with self._translate:
            return [dict(r) for r in await self._pool.fetch(sql, *args)]

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str] | None]:
        """A connection of its own that LISTENs on ``channel``; payloads in commit order. A
        slow reader loses notifications past the buffer, never the data: listeners re-read
        the database when woken."""
        send, receive = anyio.create_memory_object_stream[str](1000)

        def deliver(_cx: object, _pid: int, _channel: str, payload: str) -> None:
            try:
                send.send_nowait(payload)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

        with self._translate:
            cx = await asyncpg.connect(self.url.dsn, server_settings={"application_name": "concierge"})
        try:
            with self._translate:
                await cx.add_listener(channel, deliver)
            async with receive:
                yield receive
        finally:
            send.close()
            with anyio.CancelScope(shield=True):
                try:
                    await cx.close(timeout=5)
                except _LOST:
                    cx.terminate()

    async def tables(self) -> dict[str, list[str]]:
        rows = await self.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["table_name"], []).append(r["column_name"])
        return out

    async def indexes(self) -> set[str]:
        rows = await self.fetch(
            "SELECT i.relname AS name FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace"
            " WHERE n.nspname = current_schema()"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)")
        return {r["name"] for r in rows}

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._pool.close()
