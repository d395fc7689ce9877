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

SQL here is the common ground of both engines (see `concierge.store._base`), written with
``?`` placeholders, which `Store` numbers (``$1``). Rows are plain dicts; `query` and
`query_one` decode the JSON columns.

A transaction (`Store.transaction`) is one task on the loop thread holding a
`concierge.store` transaction; the sync body's statements are run in it one by one, and the
body's end commits (an exception rolls back). ``for_update=True`` on a read inside it locks
the row until commit (PostgreSQL; SQLite's transaction holds the file's write lock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from concierge.store._rows import now_iso

if TYPE_CHECKING:
    from concierge.store import Connection, Database, DatabaseUrl

__all__ = ["Cursor", "Store", "Transaction", "now_iso"]

T = TypeVar("T")

_JSON_COLUMNS = {"allowed_tools", "ingest_tool_calls", "tool_sources", "tool_allowlist",
                 "model_settings", "before", "after", "content", "arguments"}
_COMMIT, _ROLLBACK = object(), object()


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

    def __init__(self, target: Path | str | DatabaseUrl, *, setting: str | None = None) -> None:
        from concierge.store import DEFAULT_SETTING, DatabaseUrl, open_database, parse_database_url

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
        self._closed = False
        try:
            self.db: Database = self._call(lambda: open_database(url))
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
        cursor = self.run(lambda db: _statement(db, sql, params))
        return [_decoded(r) for r in cursor.fetchall()]  # type: ignore[misc]

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        if self._closed:
            return
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


class _RolledBack(Exception):
    """Raised inside the loop thread's transaction task to roll it back."""


async def _awaited(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
