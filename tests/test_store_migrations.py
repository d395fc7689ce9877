"""Migrations on both engines: the same versions and the same schema, a no-op on reopen, a
newer schema refused, an old SQLite home adopted with its data, and several processes
migrating one fresh database at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import anyio
import pytest

from concierge.store import Migration, MigrationSet, SchemaTooNew, open_database, schema_versions
from concierge.store.schema import ALL, HTTP, REGISTRY, STORE
from concierge.store.sources import SourceRows
from tests.pg_fixtures import db_url, pg_server, pg_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio

LATEST = {s.component: s.latest for s in ALL}


async def test_fresh_databases_get_the_same_versions_and_schema_on_both_engines(
        tmp_path: Path, pg_url: str) -> None:
    lite = await open_database(f"sqlite://{tmp_path / 'c.db'}")
    pg = await open_database(pg_url)
    try:
        assert await schema_versions(lite) == await schema_versions(pg) == LATEST
        assert await lite.tables() == await pg.tables()
        assert await lite.indexes() == await pg.indexes()
        assert {"sources", "vault", "vault_key_check", "api_keys", "rate_buckets", "kv",
                "change_versions", "schema_version"} <= set(await pg.tables())
        assert "sources_live_namespace" in await pg.indexes()
    finally:
        await lite.aclose()
        await pg.aclose()


async def test_reopening_applies_nothing(db_url: str) -> None:
    db = await open_database(db_url)
    rows = await db.fetchval("SELECT COUNT(*) FROM schema_version")
    await db.aclose()
    db = await open_database(db_url)
    try:
        assert await db.fetchval("SELECT COUNT(*) FROM schema_version") == rows == sum(LATEST.values())
    finally:
        await db.aclose()


async def test_a_new_migration_is_applied_on_start_and_recorded(db_url: str) -> None:
    await (await open_database(db_url)).aclose()
    newer = MigrationSet("registry", (*REGISTRY.migrations, Migration(
        REGISTRY.latest + 1, "a note per source", "ALTER TABLE sources ADD COLUMN note TEXT;")))
    db = await open_database(db_url, migrations=(STORE, newer, HTTP))
    try:
        assert (await schema_versions(db))["registry"] == REGISTRY.latest + 1
        assert "note" in (await db.tables())["sources"]
    finally:
        await db.aclose()


async def test_a_database_from_a_newer_concierge_is_refused(db_url: str) -> None:
    db = await open_database(db_url)
    await db.execute("INSERT INTO schema_version (component, version, description, applied_at)"
                     " VALUES ('registry', 99, 'from the future', 'x')")
    await db.aclose()
    with pytest.raises(SchemaTooNew) as caught:
        await open_database(db_url)
    assert "registry v99" in caught.value.detail and f"v{REGISTRY.latest}" in caught.value.detail
    assert "upgrade Concierge" in caught.value.detail


async def test_a_home_made_by_the_old_registry_store_is_adopted_with_its_data(tmp_path: Path) -> None:
    from tests.legacy_store import MIGRATIONS, Store  # the code that wrote homes until now

    path = tmp_path / "concierge.db"
    old = Store(path)
    with old.transaction() as cx:
        cx.execute("INSERT INTO sandboxes (id, name, created_at) VALUES ('sb_1', 'default', 'x')")
        cx.execute("INSERT INTO api_keys (id, hash, prefix, role, created_at) VALUES ('key_1', 'h', 'ck_', 'owner', 'x')")
    assert old.schema_version == len(MIGRATIONS) == 5
    old.close()
    db = await open_database(f"sqlite://{path}")
    try:
        assert await schema_versions(db) == LATEST
        adopted = await db.fetch("SELECT component, version, description FROM schema_version"
                                 " WHERE description LIKE '%adopted%' ORDER BY component, version")
        assert [(r["component"], r["version"]) for r in adopted] == [
            ("http", 1), ("registry", 1), ("registry", 2), ("registry", 3), ("registry", 4)]
        assert "health_error_kind" in (await db.tables())["sources"]
        assert await db.fetchval("SELECT name FROM sandboxes WHERE id = 'sb_1'") == "default"
        assert await db.fetchval("SELECT version FROM concierge_sessions") is None  # the new column exists
        assert "version" in (await db.tables())["concierge_sessions"]
        page = await SourceRows(db).page()
        assert page.items == [] and page.next_cursor is None
    finally:
        await db.aclose()


def test_an_old_home_is_adopted_layer_by_layer(tmp_path: Path) -> None:
    """The registry opens an old home first (its sets adopted), the HTTP layer later: the HTTP
    set's tables, made by the old store, are adopted then instead of made again."""
    from concierge.registry.store import Store
    from concierge.server.auth import KeyStore
    from tests.legacy_store import Store as LegacyStore

    path = tmp_path / "concierge.db"
    old = LegacyStore(path)
    with old.transaction() as cx:
        cx.execute("INSERT INTO api_keys (id, hash, prefix, role, created_at) VALUES ('key_1', 'h', 'ck_', 'owner', 'x')")
        cx.execute("INSERT INTO webhook_events (source_id, event_id, received_at, payload) VALUES ('ds_1', 'e', 'x', '1')")
    old.close()
    store = Store(path)
    try:
        assert set(store.schema_version) == {"store", "registry"}
        assert store.query_one("SELECT event_id FROM webhook_events")["event_id"] == "e"  # type: ignore[index]
        keys = KeyStore(store)
        assert store.schema_version == LATEST
        assert [k.id for k in keys.list()] == ["key_1"]
        adopted = store.query("SELECT component, version FROM schema_version WHERE description LIKE '%adopted%'"
                              " ORDER BY component, version")
        assert [(r["component"], r["version"]) for r in adopted] == [
            ("http", 1), ("registry", 1), ("registry", 2), ("registry", 3), ("registry", 4)]
    finally:
        store.close()


def _open_and_close(url: str, barrier: Any, results: Any) -> None:
    async def run() -> None:
        db = await open_database(url)
        try:
            results.put(await schema_versions(db))
        finally:
            await db.aclose()

    barrier.wait(30)
    try:
        anyio.run(run)
    except BaseException as exc:  # reported, not swallowed
        results.put(repr(exc))


@pytest.mark.timeout(90)
def test_processes_starting_together_on_a_fresh_database_migrate_it_once(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_and_close, args=(db_url, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert got == [LATEST] * n

    async def count() -> int:
        db = await open_database(db_url)
        try:
            return int(await db.fetchval("SELECT COUNT(*) FROM schema_version"))
        finally:
            await db.aclose()

    assert anyio.run(count) == sum(LATEST.values())
