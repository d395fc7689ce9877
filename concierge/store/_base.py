"""The store interface: a `Database` (one SQLite file or one PostgreSQL database) and the
`Connection` a transaction runs on. Both engines take the same SQL:

- parameters are numbered, PostgreSQL style: ``$1, $2`` (the SQLite engine rewrites them to
  ``?1, ?2``, which SQLite binds the same way);
- the SQL is the common ground of SQLite ≥ 3.35 and PostgreSQL ≥ 12: ``ON CONFLICT … DO
  UPDATE … WHERE``, ``RETURNING``, row values (``(a, b) > ($1, $2)``), partial and expression
  indexes; ``CASE`` instead of ``LEAST``/``GREATEST`` or ``min``/``max`` of two values;
- rows come back as plain ``dict`` s; ``bytes`` for binary columns, ``int``/``float``/``str``.

Transactions (`Database.transaction`) are where the engines differ underneath, and what the
callers may rely on is the same on both:

- SQLite: ``BEGIN IMMEDIATE`` — one writer at a time across every process (others wait up to
  the busy timeout), so everything read inside a transaction stays true until it commits.
- PostgreSQL: ``READ COMMITTED``; a row read with ``for_update=True`` is locked until commit,
  and a writer that wants it waits, then reads the row as committed. Re-check a row that
  decides a write (a source's status before its secret is written) with ``for_update=True``:
  that is what makes the check hold on both engines. Unique indexes decide races between
  inserts on both (one insert wins, the other gets `UniqueViolation`).

A transaction left by an exception (cancellation included) is rolled back; commit and
rollback are shielded from cancellation so that the outcome is never left undecided.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar

from concierge.store._url import DatabaseUrl, Dialect

__all__ = ["Connection", "Database", "Row"]

Row = dict[str, Any]


class Connection(ABC):
    """What a transaction's body talks to."""

    dialect: ClassVar[Dialect]

    @abstractmethod
    async def fetch(self, sql: str, *args: Any, for_update: bool = False) -> list[Row]:
        """Every row of a query. ``for_update``: lock the rows read until commit (PostgreSQL;
        SQLite's transaction already holds the database's write lock)."""

    async def fetchrow(self, sql: str, *args: Any, for_update: bool = False) -> Row | None:
        rows = await self.fetch(sql, *args, for_update=for_update)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""

    @abstractmethod
    async def advisory_lock(self, key: int) -> None:
        """Hold a lock named by ``key`` until this transaction ends (PostgreSQL's transaction
        advisory lock; on SQLite the transaction already excludes every other writer)."""

    @abstractmethod
    async def notify(self, channel: str, payload: str) -> None:
        """Tell listeners on ``channel`` when (and only if) this transaction commits
        (PostgreSQL ``NOTIFY``; nothing on SQLite, whose listeners poll)."""


class Database(ABC):
    """One database, shared by every task of this process and by other processes."""

    dialect: ClassVar[Dialect]
    url: DatabaseUrl

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A write transaction (see the module docstring for what it guarantees)."""

    @abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Rows of one read outside any transaction (it sees what was committed before it)."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))

    async def execute(self, sql: str, *args: Any) -> int:
        """One write statement in a transaction of its own; rows changed."""
        async with self.transaction() as cx:
            return await cx.execute(sql, *args)

    @abstractmethod
    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str] | None]:
        """Notifications on ``channel`` as they commit (PostgreSQL), or None where the engine
        has none (SQLite): then the caller polls."""

    @abstractmethod
    async def tables(self) -> dict[str, list[str]]:
        """Every table of the schema and its columns, in order (for checks and tests)."""

    @abstractmethod
    async def indexes(self) -> set[str]:
        """Names of the indexes made by ``CREATE INDEX`` (not those behind keys)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection. The object is unusable afterwards."""

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url.display!r})"
