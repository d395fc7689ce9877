"""The SQLite engine: one file in WAL mode, shared by every process on the machine.

aiosqlite runs each connection on a thread of its own, so no statement (or busy wait) ever
blocks the event loop. Writes go through one writer connection, in ``BEGIN IMMEDIATE``
transactions queued on an in-process lock (tasks of one process wait on the event loop, not in
SQLite's busy handler); other processes wait for the file's write lock up to the busy timeout.
Reads outside a transaction go to a few read-only connections, which WAL lets run beside the
writer and see every committed transaction.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from itertools import cycle
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite
import anyio

from concierge.store._base import Connection, Database, Row
from concierge.store._errors import DatabaseBusy, DatabaseUnavailable, IntegrityError, UniqueViolation
from concierge.store._url import DatabaseUrl

__all__ = ["SqliteDatabase"]

# aiosqlite logs every statement with its parameters at DEBUG: payloads and ciphertexts have no
# place in a log, whatever level the application sets for the root logger.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

_PARAM = re.compile(r"\$(\d+)")
_UNIQUE = re.compile(r"UNIQUE constraint failed: (?:index '([^']+)'|(.+))")


@functools.lru_cache(maxsize=1024)
def _sql(sql: str) -> str:
    """``$1`` → ``?1``: SQLite binds numbered parameters exactly as PostgreSQL does."""
    return _PARAM.sub(r"?\1", sql)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def _private_file(path: Path) -> None:
    """Create the database file 0600 before SQLite creates it under the umask (SQLite gives its
    -wal and -shm files the database file's mode)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


class _Translate:
    """Driver errors → store errors, at the boundary."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._db = database

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, sqlite3.IntegrityError):
            text = str(exc)
            match = _UNIQUE.match(text)
            if match:
                raise UniqueViolation(text, constraint=match.group(1) or match.group(2)) from None
            raise IntegrityError(text) from None
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            raise DatabaseBusy(f"the database {self._db.url.display} stayed locked by another process "
                               f"for {self._db.busy_timeout:g} s; try again") from None


class _SqliteConnection(Connection):
    dialect: ClassVar = "sqlite"

    def __init__(self, cx: aiosqlite.Connection, database: SqliteDatabase) -> None:
        self._cx = cx
        self._translate = _Translate(database)

    async def fetch(self, sql: str, *args: Any, for_update: bool = False) -> list[Row]:
        with self._translate:
            return list(await self._cx.execute_fetchall(_sql(sql), args))  # type: ignore[arg-type]

    async def execute(self, sql: str, *args: Any) -> int:
        with self._translate:
            cursor = await self._cx.execute(_sql(sql), args)
        return int(cursor.rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._translate:
            await self._cx.executemany(_sql(sql), list(rows))

    async def advisory_lock(self, key: int) -> None:
        return None  # BEGIN IMMEDIATE already excludes every other writer

    async def notify(self, channel: str, payload: str) -> None:
        return None  # SQLite has no notifications: listeners poll


class SqliteDatabase(Database):
    """A SQLite file. Open with `SqliteDatabase.open`; close with `aclose`."""

    dialect: ClassVar = "sqlite"

    def __init__(self, url: DatabaseUrl, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection],
                 *, busy_timeout: float) -> None:
        self.url = url
        self.path = url.path
        self.busy_timeout = busy_timeout
        self._writer = writer
        self._readers = readers
        self._next_reader = cycle(readers)
        self._write_lock = anyio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: DatabaseUrl, *, readers: int = 2, busy_timeout: float = 10.0) -> SqliteDatabase:
        assert url.path is not None
        path = url.path
        if not path.parent.is_dir():
            raise DatabaseUnavailable(f"cannot open the database {url.display}: the directory "
                                      f"{path.parent} does not exist")
        try:
            _private_file(path)
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot create the database {url.display}: {exc.strerror}") from None
        opened: list[aiosqlite.Connection] = []
        try:
            writer = await cls._connect(path, busy_timeout, opened)
            await cls._use_wal(writer, busy_timeout)
            for pragma in ("foreign_keys=ON", "synchronous=NORMAL"):
                await writer.execute(f"PRAGMA {pragma}")
            pool = []
            for _ in range(max(1, readers)):
                reader = await cls._connect(path, busy_timeout, opened)
                await reader.execute("PRAGMA query_only=ON")  # a write on a reader is a bug: fail loudly
                pool.append(reader)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                for cx in opened:
                    await cx.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise DatabaseUnavailable(f"cannot open the database {url.display}: {exc}") from None
            raise
        return cls(url, writer, pool, busy_timeout=busy_timeout)

    @staticmethod
    async def _connect(path: Path, busy_timeout: float, opened: list[aiosqlite.Connection]) -> aiosqlite.Connection:
        cx = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout)
        opened.append(cx)
        cx.row_factory = _dict_row  # type: ignore[assignment]  # rows become dicts on the connection's thread
        await cx.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        return cx

    @staticmethod
    async def _use_wal(cx: aiosqlite.Connection, timeout: float) -> None:
        """Switch to WAL. Switching needs the file to itself, and SQLite answers "database is
        locked" at once, without waiting, while another process opening the same new file
        holds it (processes starting together on a fresh home): so wait and retry here."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                await cx.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._write_lock:
            cx = _SqliteConnection(self._writer, self)
            # Shielded: a BEGIN cancelled in flight would still run on the connection's thread
            # and leave it inside a transaction that nobody ends.
            with anyio.CancelScope(shield=True):
                await cx.execute("BEGIN IMMEDIATE")
            try:
                yield cx
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._rollback()
                raise
            with anyio.CancelScope(shield=True):
                try:
                    await cx.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise

    async def _rollback(self) -> None:
        try:
            await self._writer.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:  # SQLite already rolled it back (e.g. a failed COMMIT)
            if "no transaction is active" not in str(exc):
                raise

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with _Translate(self):
            return list(await next(self._next_reader).execute_fetchall(_sql(sql), args))  # type: ignore[arg-type]

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str] | None]:
        yield None

    async def tables(self) -> dict[str, list[str]]:
        names = [r["name"] for r in await self.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: [c["name"] for c in await self.fetch(f'PRAGMA table_info("{n}")')] for n in names}

    async def indexes(self) -> set[str]:
        rows = await self.fetch("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        return {r["name"] for r in rows}

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            for cx in (self._writer, *self._readers):
                await cx.close()
