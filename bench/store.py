"""Store benchmarks: the drivers compared, then the store's own operations on both engines.
Prints numbers; asserts nothing. Starts a throw-away PostgreSQL (tests/pg_fixtures.py).

    .venv/bin/python bench/store.py [--ops 2000] [--concurrency 8] [--rounds 3] [--sources 10000]

1. drivers: N ops of (insert one row + select it back) and N small transactions (insert,
   select FOR UPDATE, update), C concurrent tasks over a pool of 4 — asyncpg, psycopg 3,
   SQLAlchemy async (psycopg / asyncpg), aiosqlite, sqlite3 + anyio.to_thread. Drivers that
   are not installed are reported as such (install them into a scratch venv to compare:
   pip install "psycopg[binary]" psycopg-pool "sqlalchemy[asyncio]");
2. import time of each driver (median of 5, minus ``python -c pass`` in the same run);
3. the store on both engines: a registration's transaction (source row + secret + audit +
   change-feed bump), a rate-bucket take, and a page of 50 sources out of ``--sources``.
Medians of ``--rounds``; ratios against asyncpg (drivers) and SQLite (store) of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from concierge.store import open_database  # noqa: E402
from concierge.store.audit import AuditLog  # noqa: E402
from concierge.store.buckets import RateBuckets  # noqa: E402
from concierge.store.changes import ChangeFeed  # noqa: E402
from concierge.store.sources import SourceRows  # noqa: E402
from concierge.store.vault_rows import VaultRows  # noqa: E402
from tests.pg_fixtures import PgServer, add_sandbox, source_row, start_pg  # noqa: E402

POOL = 4
DDL = "CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT NOT NULL)"


async def _timed(n: int, concurrency: int, op: Callable[[int], Awaitable[None]]) -> float:
    ids = iter(range(n))

    async def worker() -> None:
        for i in ids:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


# -- 1. drivers -------------------------------------------------------------------------------------

async def d_asyncpg(url: str, n: int, c: int) -> tuple[float, float]:
    import asyncpg

    pool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL)
    await pool.execute(DDL)

    async def op(i: int) -> None:
        async with pool.acquire() as cx:
            await cx.execute("INSERT INTO t (id, v) VALUES ($1, $2)", i, "x")
            await cx.fetchrow("SELECT * FROM t WHERE id = $1", i)

    async def tx(i: int) -> None:
        async with pool.acquire() as cx, cx.transaction():
            await cx.execute("INSERT INTO t (id, v) VALUES ($1, $2)", i + n, "x")
            await cx.fetchrow("SELECT * FROM t WHERE id = $1 FOR UPDATE", i + n)
            await cx.execute("UPDATE t SET v = $2 WHERE id = $1", i + n, "y")

    try:
        return await _timed(n, c, op), await _timed(n, c, tx)
    finally:
        await pool.close()


async def d_psycopg(url: str, n: int, c: int) -> tuple[float, float]:
    import psycopg_pool

    pool = psycopg_pool.AsyncConnectionPool(url, min_size=POOL, max_size=POOL, open=False)
    await pool.open()
    async with pool.connection() as cx:
        await cx.execute(DDL)

    async def op(i: int) -> None:
        async with pool.connection() as cx:
            await cx.execute("INSERT INTO t (id, v) VALUES (%s, %s)", (i, "x"))
            await (await cx.execute("SELECT * FROM t WHERE id = %s", (i,))).fetchone()

    async def tx(i: int) -> None:
        async with pool.connection() as cx:  # one transaction per pool checkout
            await cx.execute("INSERT INTO t (id, v) VALUES (%s, %s)", (i + n, "x"))
            await (await cx.execute("SELECT * FROM t WHERE id = %s FOR UPDATE", (i + n,))).fetchone()
            await cx.execute("UPDATE t SET v = %s WHERE id = %s", ("y", i + n))

    try:
        return await _timed(n, c, op), await _timed(n, c, tx)
    finally:
        await pool.close()


async def d_sqlalchemy(url: str, n: int, c: int, driver: str) -> tuple[float, float]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url.replace("postgresql://", f"postgresql+{driver}://"),
                                 pool_size=POOL, max_overflow=0)
    async with engine.begin() as cx:
        await cx.execute(text(DDL))

    async def op(i: int) -> None:
        async with engine.begin() as cx:
            await cx.execute(text("INSERT INTO t (id, v) VALUES (:id, 'x')"), {"id": i})
            (await cx.execute(text("SELECT * FROM t WHERE id = :id"), {"id": i})).fetchone()

    async def tx(i: int) -> None:
        async with engine.begin() as cx:
            await cx.execute(text("INSERT INTO t (id, v) VALUES (:id, 'x')"), {"id": i + n})
            (await cx.execute(text("SELECT * FROM t WHERE id = :id FOR UPDATE"), {"id": i + n})).fetchone()
            await cx.execute(text("UPDATE t SET v = 'y' WHERE id = :id"), {"id": i + n})

    try:
        return await _timed(n, c, op), await _timed(n, c, tx)
    finally:
        await engine.dispose()


async def d_sqlite(path: str, n: int, c: int, bridge: str) -> tuple[float, float]:
    """aiosqlite, or sqlite3 on anyio's worker threads; one writer lock, a pool of 4."""
    if bridge == "aiosqlite":
        import aiosqlite

        conns: list[Any] = [await aiosqlite.connect(path, isolation_level=None, timeout=10) for _ in range(POOL)]

        async def run(cx: Any, sql: str, *args: Any) -> Any:
            return await cx.execute_fetchall(sql, args)
    else:
        conns = [sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
                 for _ in range(POOL)]

        async def run(cx: Any, sql: str, *args: Any) -> Any:
            return await anyio.to_thread.run_sync(lambda: cx.execute(sql, args).fetchall())
    for cx in conns:
        await run(cx, "PRAGMA journal_mode=WAL")
        await run(cx, "PRAGMA synchronous=NORMAL")
    await run(conns[0], DDL)
    idle: asyncio.Queue[Any] = asyncio.Queue()
    for cx in conns:
        idle.put_nowait(cx)
    write = asyncio.Lock()

    async def op(i: int) -> None:
        cx = await idle.get()
        try:
            async with write:
                await run(cx, "INSERT INTO t (id, v) VALUES (?, ?)", i, "x")
            await run(cx, "SELECT * FROM t WHERE id = ?", i)
        finally:
            idle.put_nowait(cx)

    async def tx(i: int) -> None:
        cx = await idle.get()
        try:
            async with write:
                await run(cx, "BEGIN IMMEDIATE")
                await run(cx, "INSERT INTO t (id, v) VALUES (?, ?)", i + n, "x")
                await run(cx, "SELECT * FROM t WHERE id = ?", i + n)
                await run(cx, "UPDATE t SET v = 'y' WHERE id = ?", i + n)
                await run(cx, "COMMIT")
        finally:
            idle.put_nowait(cx)

    try:
        return await _timed(n, c, op), await _timed(n, c, tx)
    finally:
        for cx in conns:
            await cx.close() if bridge == "aiosqlite" else cx.close()


def import_ms(module: str, reps: int = 5) -> float:
    def once(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - start

    base = statistics.median(once("pass") for _ in range(reps))
    return (statistics.median(once(f"import {module}") for _ in range(reps)) - base) * 1000


# -- 3. the store --------------------------------------------------------------------------------------

async def store_ops(url: str, n: int, c: int, sources: int) -> dict[str, float]:
    db = await open_database(url)
    try:
        await add_sandbox(db)
        rows, vault, audit, feed = SourceRows(db), VaultRows(db), AuditLog(db), ChangeFeed(db)

        async def register(i: int) -> None:
            source_id = f"ds_{i:06d}"
            async with db.transaction() as cx:
                await rows.insert(cx, source_row(source_id, "sb_1", source_id))
                await vault.put(cx, f"user_mcp/{source_id}/auth", os.urandom(12), os.urandom(48))
                await audit.append(cx, actor="bench", action="source.register", object_type="source",
                                   object_id=source_id, sandbox_id="sb_1", after={"status": "active"})
                await feed.bump(cx, "source", source_id, "register")

        buckets = RateBuckets(db)

        async def take(i: int) -> None:
            await buckets.take("tool_calls", f"ds_{i % 50}", 600)

        out = {"register tx/s": await _timed(n, c, register), "bucket takes/s": await _timed(n, c, take)}
        async with db.transaction() as cx:  # fill up to --sources for the page timing
            for i in range(n, sources):
                await rows.insert(cx, source_row(f"ds_{i:06d}", "sb_1", f"ds_{i:06d}"))
        times, cursor = [], None
        for _ in range(40):
            start = time.perf_counter()
            page = await rows.page(sandbox_id="sb_1", limit=50, cursor=cursor)
            times.append((time.perf_counter() - start) * 1000)
            cursor = page.next_cursor
        out[f"page of 50 / {sources} ms"] = statistics.median(times)
        return out
    finally:
        await db.aclose()


async def main(args: argparse.Namespace) -> None:
    pg: PgServer = start_pg()
    try:
        drivers: dict[str, list[tuple[float, float]]] = {}
        store: dict[str, list[dict[str, float]]] = {}
        candidates: list[tuple[str, str, Callable[..., Awaitable[tuple[float, float]]], tuple[Any, ...]]] = [
            ("asyncpg", "asyncpg", d_asyncpg, ()), ("psycopg 3", "psycopg_pool", d_psycopg, ()),
            ("SQLAlchemy+psycopg", "sqlalchemy", d_sqlalchemy, ("psycopg",)),
            ("SQLAlchemy+asyncpg", "sqlalchemy", d_sqlalchemy, ("asyncpg",)),
        ]
        for _ in range(args.rounds):
            for name, module, fn, extra in candidates:
                if importlib.util.find_spec(module) is None or (extra == ("psycopg",) and
                                                                  importlib.util.find_spec("psycopg") is None):
                    continue
                drivers.setdefault(name, []).append(await fn(pg.create_database(), args.ops, args.concurrency, *extra))
            for bridge in ("aiosqlite", "sqlite3+to_thread"):
                with tempfile.TemporaryDirectory() as d:
                    drivers.setdefault(bridge, []).append(
                        await d_sqlite(os.path.join(d, "b.db"), args.ops, args.concurrency, bridge))
            with tempfile.TemporaryDirectory() as d:
                store.setdefault("SQLite", []).append(
                    await store_ops(f"sqlite://{d}/s.db", args.ops, args.concurrency, args.sources))
            store.setdefault("PostgreSQL", []).append(
                await store_ops(pg.create_database(), args.ops, args.concurrency, args.sources))
    finally:
        pg.stop()

    print(f"1. drivers: {args.ops} ops, {args.concurrency} tasks, pool of {POOL}, median of {args.rounds}")
    base = statistics.median(r[0] for r in drivers["asyncpg"])
    for name, results in drivers.items():
        ops, txs = (statistics.median(r[i] for r in results) for i in (0, 1))
        print(f"   {name:20s} insert+select {ops:7.0f} ops/s ({ops / base:4.2f}x asyncpg)   transaction {txs:7.0f} tx/s")
    missing = [n for n, m, _, _ in candidates if n not in drivers]
    if missing:
        print(f"   not installed here: {', '.join(missing)}")
    print("2. import time (median of 5, minus python -c pass)")
    for module in ("asyncpg", "psycopg", "sqlalchemy.ext.asyncio", "aiosqlite", "concierge.store"):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            print(f"   import {module:24s} {import_ms(module):5.0f} ms")
    print(f"3. the store ({args.ops} registrations / takes, {args.concurrency} tasks), median of {args.rounds}")
    lite = {k: statistics.median(r[k] for r in store["SQLite"]) for k in store["SQLite"][0]}
    for engine, results in store.items():
        values = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print("   " + f"{engine:11s} " + "   ".join(f"{k} {v:8.1f} ({v / lite[k]:4.2f}x SQLite)"
                                                      for k, v in values.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sources", type=int, default=10000)
    asyncio.run(main(parser.parse_args()))
