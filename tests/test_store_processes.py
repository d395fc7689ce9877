"""Several real processes on one database, on both engines: a shared rate cap holds across
them, one namespace registered from many at once has exactly one winner, a revoke racing a
rotation never leaves a secret behind, and kill -9 of a writer in the middle of a transaction
loses nothing that was acknowledged and leaves no orphan secret."""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

import anyio
import pytest

from concierge.errors import Conflict
from concierge.store import open_database
from concierge.store.buckets import RateBuckets
from concierge.store.sources import NamespaceTaken, SourceRows
from concierge.store.vault_rows import VaultRows
from tests.pg_fixtures import add_sandbox, db_url, pg_server, pg_url, source_row  # noqa: F401  (fixtures)

CTX = multiprocessing.get_context("spawn")
WAIT = 60.0
FIXED_NOW = 1_767_225_600.0  # one instant for every process: no token can refill mid-test


def _run(target: Any, args_per_process: list[tuple[Any, ...]]) -> list[Any]:
    """Start one process per argument tuple (each gets a result queue last); their results."""
    results = CTX.Queue()
    procs = [CTX.Process(target=target, args=(*args, results)) for args in args_per_process]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=WAIT) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    errors = [r for r in out if isinstance(r, str)]
    assert not errors, errors
    return out


async def _setup(url: str, *sources: str) -> None:
    db = await open_database(url)
    try:
        await add_sandbox(db)
        async with db.transaction() as cx:
            for source_id in sources:
                await SourceRows(db).insert(cx, source_row(source_id, "sb_1", source_id))
                await VaultRows(db).put(cx, f"user_mcp/{source_id}/auth", b"n" * 12, b"ciphertext")
    finally:
        await db.aclose()


# -- a cap of 5 across three processes ---------------------------------------------------------------

def _taker(url: str, tries: int, barrier: Any, results: Any) -> None:
    async def run() -> int:
        db = await open_database(url)
        try:
            buckets = RateBuckets(db, clock=lambda: FIXED_NOW)
            barrier.wait(WAIT)
            return sum([await buckets.take("tool_calls", "ds_1", 5) == 0.0 for _ in range(tries)])
        finally:
            await db.aclose()

    try:
        results.put(anyio.run(run))
    except BaseException as exc:
        results.put(repr(exc))


@pytest.mark.timeout(120)
def test_three_processes_share_one_cap_of_five(db_url: str) -> None:
    anyio.run(_setup, db_url)
    barrier = CTX.Barrier(3)
    taken = _run(_taker, [(db_url, 4, barrier)] * 3)
    assert sum(taken) == 5, taken


# -- one namespace from many processes at once -------------------------------------------------------

def _registrar(url: str, worker: int, barrier: Any, results: Any) -> None:
    async def run() -> list[str]:
        db = await open_database(url)
        outcomes: list[str] = []
        try:
            barrier.wait(WAIT)

            async def register(n: int) -> None:
                try:
                    async with db.transaction() as cx:
                        await SourceRows(db).insert(cx, source_row(f"ds_{worker}_{n}", "sb_1", "Acme"))
                        await VaultRows(db).put(cx, f"user_mcp/ds_{worker}_{n}/auth", b"n" * 12, b"c")
                    outcomes.append("won")
                except NamespaceTaken:
                    outcomes.append("taken")

            async with anyio.create_task_group() as tg:
                for n in range(5):
                    tg.start_soon(register, n)
            return outcomes
        finally:
            await db.aclose()

    try:
        results.put(anyio.run(run))
    except BaseException as exc:
        results.put(repr(exc))


@pytest.mark.timeout(120)
def test_twenty_concurrent_registrations_of_one_namespace_have_one_winner(db_url: str) -> None:
    anyio.run(_setup, db_url)
    barrier = CTX.Barrier(4)
    outcomes = [o for per in _run(_registrar, [(db_url, w, barrier) for w in range(4)]) for o in per]
    assert len(outcomes) == 20 and outcomes.count("won") == 1, outcomes

    async def check() -> tuple[int, int]:
        db = await open_database(db_url)
        try:
            return (int(await db.fetchval("SELECT COUNT(*) FROM sources WHERE lower(app_namespace) = 'acme'")),
                    int(await db.fetchval("SELECT COUNT(*) FROM vault")))
        finally:
            await db.aclose()

    assert anyio.run(check) == (1, 1)  # the losers left no row and no secret


# -- a revoke racing a rotation, across processes --------------------------------------------------------

def _racer(url: str, role: str, source_ids: list[str], barrier: Any, results: Any) -> None:
    async def run() -> int:
        db = await open_database(url)
        refused = 0
        try:
            rows, vault = SourceRows(db), VaultRows(db)
            for source_id in source_ids:
                await anyio.to_thread.run_sync(barrier.wait, WAIT)
                if role == "revoke":
                    async with db.transaction() as cx:
                        await rows.get(source_id, cx=cx, for_update=True)
                        await vault.delete_prefix(cx, f"user_mcp/{source_id}/")
                        await rows.update(cx, source_id, {"status": "disconnected", "vault_key": None})
                else:
                    try:
                        async with db.transaction() as cx:
                            await vault.put(cx, f"user_mcp/{source_id}/auth", b"r" * 12, b"rotated")
                    except Conflict:
                        refused += 1
            return refused
        finally:
            await db.aclose()

    try:
        results.put(anyio.run(run))
    except BaseException as exc:
        results.put(repr(exc))


@pytest.mark.timeout(120)
def test_a_revoke_racing_a_rotation_never_leaves_a_secret(db_url: str) -> None:
    source_ids = [f"ds_{i:03d}" for i in range(40)]
    anyio.run(_setup, db_url, *source_ids)
    barrier = CTX.Barrier(2)
    _run(_racer, [(db_url, "revoke", source_ids, barrier), (db_url, "rotate", source_ids, barrier)])

    async def leftovers() -> int:
        db = await open_database(db_url)
        try:
            return int(await db.fetchval("SELECT COUNT(*) FROM vault"))
        finally:
            await db.aclose()

    assert anyio.run(leftovers) == 0


# -- kill -9 in the middle of a transaction -----------------------------------------------------------

def _writer(url: str, acks: Any) -> None:
    """Register sources one transaction at a time; after each commit, acknowledge its id. Then
    open one more transaction, write half of it, say so, and wait to be killed."""
    async def run() -> None:
        db = await open_database(url)
        rows, vault = SourceRows(db), VaultRows(db)
        n = 0
        while True:
            source_id = f"ds_{n:04d}"
            async with db.transaction() as cx:
                await rows.insert(cx, source_row(source_id, "sb_1", source_id))
                await vault.put(cx, f"user_mcp/{source_id}/auth", b"n" * 12, b"c")
                if n == 25:
                    await vault.put(cx, "user_mcp/ds_0025/webhook", b"n" * 12, b"c")
                    acks.put(("in_transaction", source_id))
                    await anyio.sleep(60)  # killed here, with the row and two secrets uncommitted
            acks.put(("committed", source_id))
            n += 1

    anyio.run(run)


@pytest.mark.timeout(120)
def test_kill_9_mid_transaction_loses_nothing_acknowledged(db_url: str) -> None:
    anyio.run(_setup, db_url)
    acks = CTX.Queue()
    proc = CTX.Process(target=_writer, args=(db_url, acks))
    proc.start()
    committed: list[str] = []
    try:
        while True:
            state, source_id = acks.get(timeout=WAIT)
            if state == "in_transaction":
                break
            committed.append(source_id)
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    assert len(committed) == 25

    async def check() -> tuple[list[str], list[str], int]:
        db = await open_database(db_url)  # the killed writer's lock or connection is gone
        try:
            ids = [r["id"] for r in await db.fetch("SELECT id FROM sources ORDER BY id")]
            orphans = [r["key"] for r in await db.fetch(
                "SELECT key FROM vault WHERE NOT EXISTS (SELECT 1 FROM sources"
                " WHERE vault.key = 'user_mcp/' || sources.id || '/auth'"
                " OR vault.key = 'user_mcp/' || sources.id || '/webhook')")]
            async with db.transaction() as cx:  # and the database takes writes again
                await SourceRows(db).insert(cx, source_row("ds_after", "sb_1", "after"))
            return ids, orphans, int(await db.fetchval("SELECT COUNT(*) FROM vault"))
        finally:
            await db.aclose()

    ids, orphans, secrets = anyio.run(check)
    assert ids == committed
    assert orphans == [] and secrets == 25
