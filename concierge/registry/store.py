"""The registry's database, seen synchronously: `concierge.store` (SQLite or PostgreSQL, async)
run on an event loop thread of its own.

The registry's reads and simple writes are sync methods (the CLI, the HTTP routes and the
tests call them as such), and the store is async. `Store` bridges the two: every statement
is handed to the store's loop thread and the caller waits for its answer, exactly as it
waited for sqlite3 before. The caller's own event loop is blocked for that time, as it was by
sqlite3: a local SQLite statement takes the same time as before plus a thread hop (tens of
microseconds), a PostgreSQL statement one loopback round trip. Async code that must not wait
(the catalog's change checks, the gateway's rate buckets) uses `Store.arun`, which awaits the
loop thread's answer instead of blocking.

SQL is the common ground of both engines (see `concierge.store._base`), written with ``?``
placeholders, which `Store` numbers (``$1``), or already numbered (the statements the
repositories share with `concierge.store`'s). Rows are plain dicts; `query` and `query_one`
decode the JSON columns. The SQL itself is the repositories' (``*_rows.py``): this module
runs it and adds only the generic row insert/update they use.

Opening a `Store` applies the store's and the registry's migration sets; a layer above
applies its own with `Store.migrate` (the HTTP layer's API keys and conversations).

On SQLite the statements skip both thread hops: reads outside a transaction (`query`,
`query_one`) run on a read-only connection of the calling thread's own (WAL lets it read
beside the writer and see every committed transaction), and a transaction runs ``BEGIN
IMMEDIATE`` … ``COMMIT`` on this store's one sync writer connection, on the caller's thread
(other processes, and the store's async writer used for rate buckets, wait for the file's
write lock up to the busy timeout). The file, its schema and its migrations are the store's.
Measured with ``bench/server.py``: through the loop thread, the warm catalog and listings
served 3-4x fewer requests per second than the old sqlite3 store.

On PostgreSQL a transaction (`Store.transaction`) is one task on the loop thread holding a
`concierge.store` transaction; the sync body's statements are run in it one by one, and the
body's end commits (an exception rolls back). ``for_update=True`` on a read inside it locks
the row until commit (PostgreSQL; SQLite's transaction holds the file's write lock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from concierge.store._rows import now_iso

if TYPE_CHECKING:
    from concierge.store import Connection, Database, DatabaseUrl, MigrationSet

__all__ = ["Cursor", "Store", "Transaction", "now_iso"]

T = TypeVar("T")

_JSON_COLUMNS = {"allowed_tools", "ingest_tool_calls", "headers", "stdio", "oauth", "tool_sources", "tool_allowlist",
                 "model_settings", "before", "after", "content", "arguments"}
_COMMIT, _ROLLBACK = object(), object()


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """``?`` placeholders → ``$1, $2, …`` (outside quoted literals)."""
    out, n, quote = [], 0, ""
    for ch in sql:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            continue
        out.append(ch)
    return "".join(out)


def _returns_rows(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return head in ("SELECT", "WITH", "VALUES", "PRAGMA") or " RETURNING " in f" {sql.upper()} "


def _decoded(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    for key in _JSON_COLUMNS & row.keys():
        if isinstance(row[key], str):
            row[key] = json.loads(row[key])
    return row


def _encode(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


class Cursor:
    """What `Transaction.execute` answers: the rows (for a query) and the rows changed."""

    def __init__(self, rows: list[dict[str, Any]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> dict[str, Any] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._rows)


async def _statement(cx: Connection | Database, sql: str, params: Sequence[Any],
                     for_update: bool = False) -> Cursor:
    sql = numbered(sql)
    args = [_encode(p) for p in params]
    if _returns_rows(sql):
        if for_update:
            rows = await cx.fetch(sql, *args, for_update=True)  # type: ignore[call-arg]
        else:
            rows = await cx.fetch(sql, *args)
        return Cursor(rows, len(rows))
    return Cursor([], await cx.execute(sql, *args))


class Transaction:
    """A transaction's sync face: each `execute` runs on the loop thread, in the transaction."""

    def __init__(self, store: Store, queue: asyncio.Queue[Any]) -> None:
        self._store = store
        self._queue = queue

    def _submit(self, item: Any) -> None:
        self._store._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def execute(self, sql: str, params: Sequence[Any] = (), *, for_update: bool = False) -> Cursor:
        return self.run(lambda cx: _statement(cx, sql, params, for_update))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        encoded = [[_encode(v) for v in row] for row in rows]
        self.run(lambda cx: cx.executemany(numbered(sql), encoded))

    def run(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        """``await fn(cx)`` inside this transaction (for the store's own repositories)."""
        answer: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._submit((fn, answer))
        return answer.result()

    @property
    def dialect(self) -> str:
        return self._store.dialect


class Store:
    """A connection to the registry database (either engine). Safe to share between threads."""

    def __init__(self, target: Path | str | DatabaseUrl, *, setting: str | None = None,
                 migrations: Sequence[MigrationSet] | None = None) -> None:
        """``migrations``: the sets to apply on open (default: the store's and the registry's;
        a layer above adds its own with `migrate`)."""
        from concierge.store import DEFAULT_SETTING, DatabaseUrl, open_database, parse_database_url
        from concierge.store.schema import REGISTRY, STORE

        if isinstance(target, DatabaseUrl):
            url = target
        elif isinstance(target, Path):
            url = parse_database_url(None, default_sqlite=target)
        else:
            url = parse_database_url(target, setting=setting or DEFAULT_SETTING)
        self.url = url
        self.dialect = url.dialect
        self.path: Path | None = url.path
        if url.path is not None:
            from concierge import config

            config.private_file(url.path)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="concierge-store", daemon=True)
        self._thread.start()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # every thread's own connections (`_reader`, `_own`)
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None  # SQLite: the sync writer (opened on first use)
        self._writer_lock = threading.RLock()
        self._closed = False
        sets = tuple(migrations) if migrations is not None else (STORE, REGISTRY)
        self._migrated = {s.component for s in sets}
        try:
            self.db: Database = self._call(lambda: open_database(url, migrations=sets))
        except BaseException:
            self._stop_loop()
            raise

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a Store method was called on the store's own thread")
        if self._closed:
            raise RuntimeError("the store is closed")
        return asyncio.run_coroutine_threadsafe(_awaited(fn), self._loop).result()

    def run(self, fn: Callable[[Database], Awaitable[T]]) -> T:
        """``await fn(db)`` on the store's loop thread; its answer (the caller waits)."""
        return self._call(lambda: fn(self.db))

    async def arun(self, fn: Callable[[Database], Awaitable[T]]) -> T:
        """``await fn(db)`` on the store's loop thread, awaited from the caller's loop (which
        keeps running meanwhile)."""
        if self._closed:
            raise RuntimeError("the store is closed")
        future = asyncio.run_coroutine_threadsafe(_awaited(lambda: fn(self.db)), self._loop)
        return await asyncio.wrap_future(future)

    def migrate(self, *sets: MigrationSet) -> None:
        """Apply ``sets`` (a layer's own tables) unless this store has already: each layer
        creates its tables, and only those."""
        missing = [s for s in sets if s.component not in self._migrated]
        if not missing:
            return
        from concierge.store import migrate

        self.run(lambda db: migrate(db, missing, now=now_iso()))
        self._migrated.update(s.component for s in missing)

    @property
    def schema_version(self) -> dict[str, int]:
        """component → version (``schema_version``)."""
        from concierge.store import schema_versions

        return self.run(schema_versions)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction, committed when the body ends, rolled back on any exception."""
        if getattr(self._local, "in_transaction", False):
            raise RuntimeError("a Store transaction was opened inside another on the same thread")
        if self.path is not None:
            with self._sqlite_transaction() as tx:
                yield tx
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        done = asyncio.run_coroutine_threadsafe(self._serve(queue, started), self._loop)
        try:
            started.result()
        except BaseException:
            done.cancel()
            raise
        tx = Transaction(self, queue)
        self._local.in_transaction = True
        try:
            try:
                yield tx
            except BaseException:
                tx._submit(_ROLLBACK)
                try:
                    done.result()
                except _RolledBack:
                    pass
                raise
            tx._submit(_COMMIT)
            done.result()
        finally:
            self._local.in_transaction = False

    @contextmanager
    def _sqlite_transaction(self) -> Iterator[Transaction]:
        """SQLite: ``BEGIN IMMEDIATE`` on this store's sync writer connection, on the caller's
        thread (one transaction at a time in this process; other processes, and the store's
        own async writer, wait for the file's write lock up to the busy timeout)."""
        from concierge.store._sqlite import _Translate

        translate = _Translate(self.db)  # type: ignore[arg-type]
        with self._writer_lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            if self._writer is None:
                assert self.path is not None
                self._writer = sqlite3.connect(self.path, isolation_level=None, timeout=10.0,
                                               check_same_thread=False)
                self._writer.row_factory = _dict_row
                for pragma in ("busy_timeout=10000", "foreign_keys=ON", "synchronous=NORMAL"):
                    self._writer.execute(f"PRAGMA {pragma}")
            cx = self._writer
            with translate:
                cx.execute("BEGIN IMMEDIATE")
            self._local.in_transaction = True
            try:
                yield _SqliteTransaction(self, cx, translate)
            except BaseException:
                cx.execute("ROLLBACK")
                raise
            else:
                try:
                    with translate:
                        cx.execute("COMMIT")
                except BaseException:
                    if cx.in_transaction:
                        cx.execute("ROLLBACK")
                    raise
            finally:
                self._local.in_transaction = False

    async def _serve(self, queue: asyncio.Queue[Any], started: concurrent.futures.Future[None]) -> None:
        try:
            async with self.db.transaction() as cx:
                started.set_result(None)
                while True:
                    item = await queue.get()
                    if item is _COMMIT:
                        return
                    if item is _ROLLBACK:
                        raise _RolledBack
                    fn, answer = item
                    try:
                        answer.set_result(await fn(cx))
                    except Exception as exc:  # the body decides; raising out of it rolls back
                        answer.set_exception(exc)
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if self.path is not None and not getattr(self._local, "in_transaction", False):
            return [_decoded(r) for r in self._read(sql, params)]  # type: ignore[misc]
        cursor = self.run(lambda db: _statement(db, sql, params))
        return [_decoded(r) for r in cursor.fetchall()]  # type: ignore[misc]

    def _read(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        """A read on this thread's own read-only connection to the SQLite file."""
        cx = self._reader()
        from concierge.store._sqlite import _sql, _Translate  # the engine's own $n and error handling

        with _Translate(self.db):  # type: ignore[arg-type]
            return list(cx.execute(_sql(numbered(sql)), [_encode(p) for p in params]).fetchall())

    def _reader(self) -> sqlite3.Connection:
        """This thread's own read-only connection to the SQLite file (opened on first use)."""
        return self._thread_connection("reader", 10.0, ("busy_timeout=10000", "query_only=ON"))

    def _own(self) -> sqlite3.Connection:
        """This thread's own read-write connection to the SQLite file (opened on first use):
        autocommit, and never waiting for the write lock (`write_at_once`, `data_version`)."""
        return self._thread_connection("own", 0, ("busy_timeout=0", "synchronous=NORMAL"))

    def _thread_connection(self, kind: str, timeout: float, pragmas: tuple[str, ...]) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("the store is closed")
        cx: sqlite3.Connection | None = getattr(self._local, kind, None)
        if cx is None:
            assert self.path is not None
            cx = sqlite3.connect(self.path, isolation_level=None, timeout=timeout, check_same_thread=False)
            cx.row_factory = _dict_row
            for pragma in pragmas:
                cx.execute(f"PRAGMA {pragma}")
            setattr(self._local, kind, cx)
            with self._readers_lock:
                self._readers.append(cx)
        return cx

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def data_version(self) -> int | None:
        """SQLite's ``PRAGMA data_version`` on this thread's own connection (`write_at_once`'s):
        it moves with every commit by any other connection to the file, every write of the
        registry among them, and not with that connection's own (rate buckets). None on
        PostgreSQL, which has no such signal."""
        if self.path is None:
            return None
        if getattr(self._local, "in_transaction", False):
            row = self.query_one("PRAGMA data_version")
            return int(row["data_version"]) if row else None
        # asked on every call the gateway admits: straight to the connection (a few µs, not tens)
        return int(self._own().execute("PRAGMA data_version").fetchone()["data_version"])

    def write_at_once(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]] | None:
        """SQLite: one statement, committed by itself on this thread's own connection if the
        file's write lock is free at once; its rows. None, with nothing done, when the lock is
        held (by another process, or this store's writers), inside a transaction, and on
        PostgreSQL: the caller then awaits the statement through `arun`, which waits its turn.

        For the gateway's rate buckets, taken on every refill of a busy source: on the caller's
        thread, without the two thread hops and three round trips of `arun`, and without
        blocking its loop on another writer. Its commits are not seen by `data_version` (the
        same connection's), so the caches that ask it stay valid across a refill."""
        if self.path is None or getattr(self._local, "in_transaction", False):
            return None
        from concierge.store._sqlite import _sql

        cx = self._own()
        try:
            return list(cx.execute(_sql(numbered(sql)), [_encode(p) for p in params]).fetchall())
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise

    def close(self) -> None:
        if self._closed:
            return
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        try:
            self._call(lambda: self.db.aclose())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __repr__(self) -> str:
        return f"Store({self.url.display!r})"

    # -- generic row writes (inside a transaction) ---------------------------------------------

    @staticmethod
    def insert(cx: Transaction, table: str, values: dict[str, Any]) -> None:
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cx.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(values.values()))

    @staticmethod
    def update(cx: Transaction, table: str, row_id: str, values: dict[str, Any]) -> None:
        if not values:
            return
        sets = ", ".join(f"{k} = ?" for k in values)
        cx.execute(f"UPDATE {table} SET {sets} WHERE id = ?", [*values.values(), row_id])


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


class _SqliteTransaction(Transaction):
    """A SQLite transaction's statements, run on the caller's thread."""

    def __init__(self, store: Store, cx: sqlite3.Connection, translate: Any) -> None:
        self._store = store
        self._cx = cx
        self._translate = translate

    def execute(self, sql: str, params: Sequence[Any] = (), *, for_update: bool = False) -> Cursor:
        from concierge.store._sqlite import _sql

        with self._translate:
            cur = self._cx.execute(_sql(numbered(sql)), [_encode(p) for p in params])
            rows = cur.fetchall() if cur.description is not None else []
        return Cursor(rows, len(rows) if cur.description is not None else cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        from concierge.store._sqlite import _sql

        with self._translate:
            self._cx.executemany(_sql(numbered(sql)), [[_encode(v) for v in row] for row in rows])

    def run(self, fn: Callable[[Connection], Awaitable[T]]) -> T:
        raise RuntimeError("a SQLite transaction of the registry's store runs SQL only (execute)")


class _RolledBack(Exception):
    """Raised inside the loop thread's transaction task to roll it back."""


async def _awaited(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
