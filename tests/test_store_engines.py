"""The store's interface on both engines: a real SQLite file and a real PostgreSQL database.
URL parsing, types, transactions (commit, rollback, cancellation), the namespace rule, row
locks ordering a revoke against a rotation, and errors that name the database without its
password."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

from concierge.errors import Conflict
from concierge.store import (
    DatabaseUnavailable,
    InvalidDatabaseUrl,
    UniqueViolation,
    open_database,
    parse_database_url,
)
from concierge.errors import NamespaceTaken
from concierge.store.sources import SourceRows
from concierge.store.vault_rows import VaultRows
from tests.pg_fixtures import add_sandbox, db_url, pg_server, pg_url, source_row  # noqa: F401  (fixtures)

FAKE_PASSWORD = "pw-" + "test-token-123"


# -- URLs -------------------------------------------------------------------------------------

def test_unset_url_is_the_default_sqlite_file(tmp_path: Path) -> None:
    for raw in (None, "", "   "):
        url = parse_database_url(raw, default_sqlite=tmp_path / "concierge.db")
        assert (url.dialect, url.path) == ("sqlite", tmp_path / "concierge.db")


def test_postgresql_url_keeps_its_password_out_of_sight() -> None:
    url = parse_database_url(f"postgresql://app:{FAKE_PASSWORD}@db.internal:6543/concierge?sslmode=require")
    assert url.dialect == "postgresql"
    assert url.dsn is not None and FAKE_PASSWORD in url.dsn  # the driver needs it
    assert FAKE_PASSWORD not in url.display and FAKE_PASSWORD not in repr(url) and FAKE_PASSWORD not in str(url)
    assert url.display == "postgresql://app:***@db.internal:6543/concierge?sslmode=require"
    assert parse_database_url("postgres://app@localhost/c").dialect == "postgresql"


@pytest.mark.parametrize(("raw", "says"), [
    ("mysql://app@localhost/c", "unsupported scheme 'mysql'"),
    (f"postgresql://app:{FAKE_PASSWORD}@localhost", "names no database"),
    ("postgresql:///c", "names no host"),
    (f"postgresql://app:{FAKE_PASSWORD}@localhost:99999/c", "port"),
    ("sqlite://relative.db", "three slashes"),
    ("/var/lib/concierge.db", "unsupported scheme"),
])
def test_bad_url_names_the_flag_and_never_the_password(raw: str, says: str) -> None:
    with pytest.raises(InvalidDatabaseUrl) as caught:
        parse_database_url(raw, setting="--database-url")
    assert caught.value.field == "--database-url"
    assert caught.value.detail.startswith("--database-url")
    assert says in caught.value.detail
    assert FAKE_PASSWORD not in caught.value.detail


async def test_unreachable_postgresql_is_a_clear_error_without_the_password() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatabaseUnavailable) as caught:
        await open_database(f"postgresql://app:{FAKE_PASSWORD}@127.0.0.1:{port}/concierge")
    assert f"postgresql://app:***@127.0.0.1:{port}/concierge" in caught.value.detail
    assert FAKE_PASSWORD not in caught.value.detail


async def test_missing_sqlite_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        await open_database(f"sqlite://{tmp_path}/nowhere/concierge.db")


async def test_sqlite_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        db = await open_database(None, default_sqlite=tmp_path / "concierge.db")
        await db.aclose()
    finally:
        os.umask(old)
    for name in ("concierge.db", "concierge.db-wal", "concierge.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


# -- rows, transactions -------------------------------------------------------------------------

pytestmark = pytest.mark.anyio


async def test_values_come_back_as_written(db_url: str) -> None:
    db = await open_database(db_url)
    try:
        nonce = bytes(range(12)) + b"\x00\xff"
        async with db.transaction() as cx:
            await cx.execute("INSERT INTO vault (key, nonce, ciphertext, created_at, updated_at)"
                             " VALUES ($1, $2, $3, $4, $4)", "k/1", nonce, b"", "2026-01-01T00:00:00.000Z")
            await cx.execute("INSERT INTO rate_buckets (kind, subject, per_minute, tokens, at)"
                             " VALUES ($1, $2, $3, $4, $5)", "tool_calls", "ds_x", 7, 2.5, 1767225600.123)
        row = await db.fetchrow("SELECT * FROM vault WHERE key = $1", "k/1")
        assert row == {"key": "k/1", "nonce": nonce, "ciphertext": b"", "created_at": "2026-01-01T00:00:00.000Z",
                       "updated_at": "2026-01-01T00:00:00.000Z"}
        bucket = await db.fetchrow("SELECT per_minute, tokens, at FROM rate_buckets")
        assert bucket == {"per_minute": 7, "tokens": 2.5, "at": 1767225600.123}
        assert await db.fetchval("SELECT COUNT(*) FROM vault WHERE key = $1", "k/1") == 1
        assert await db.fetchrow("SELECT * FROM vault WHERE key = $1", "absent") is None
    finally:
        await db.aclose()


async def test_transaction_commits_or_rolls_back_whole(db_url: str) -> None:
    db = await open_database(db_url)
    try:
        await add_sandbox(db)
        with pytest.raises(RuntimeError):
            async with db.transaction() as cx:
                await cx.execute("INSERT INTO sandboxes (id, name, created_at) VALUES ('sb_2', 'two', 'x')")
                assert await cx.fetchval("SELECT COUNT(*) FROM sandboxes") == 2  # seen inside
                raise RuntimeError("boom")
        assert await db.fetchval("SELECT COUNT(*) FROM sandboxes") == 1
        async with db.transaction() as cx:
            assert await cx.execute("UPDATE sandboxes SET name = 'renamed' WHERE id = 'sb_1'") == 1
            assert await cx.execute("UPDATE sandboxes SET name = 'x' WHERE id = 'nope'") == 0
        assert await db.fetchval("SELECT name FROM sandboxes WHERE id = 'sb_1'") == "renamed"
    finally:
        await db.aclose()


async def test_cancelled_transaction_rolls_back_and_the_database_stays_usable(db_url: str) -> None:
    db = await open_database(db_url)
    try:
        await add_sandbox(db)
        with anyio.move_on_after(0.2) as scope:
            async with db.transaction() as cx:
                await cx.execute("INSERT INTO sandboxes (id, name, created_at) VALUES ('sb_2', 'two', 'x')")
                await anyio.sleep(30)
        assert scope.cancelled_caught
        assert await db.fetchval("SELECT COUNT(*) FROM sandboxes") == 1
        async with db.transaction() as cx:  # the connection is not left inside a transaction
            await cx.execute("INSERT INTO sandboxes (id, name, created_at) VALUES ('sb_3', 'three', 'x')")
        assert await db.fetchval("SELECT COUNT(*) FROM sandboxes") == 2
    finally:
        await db.aclose()


async def test_a_second_database_object_sees_commits_at_once(db_url: str) -> None:
    """Two instances on one database (two pools / two SQLite connections sets)."""
    a, b = await open_database(db_url), await open_database(db_url)
    try:
        await add_sandbox(a)
        assert await b.fetchval("SELECT name FROM sandboxes WHERE id = 'sb_1'") == "default"
    finally:
        await a.aclose()
        await b.aclose()


# -- the namespace rule -------------------------------------------------------------------------

async def test_namespace_is_unique_among_live_sources_whatever_the_case(db_url: str) -> None:
    db = await open_database(db_url)
    rows = SourceRows(db)
    try:
        await add_sandbox(db)
        await add_sandbox(db, "sb_2", "other")
        async with db.transaction() as cx:
            await rows.insert(cx, source_row("ds_1", "sb_1", "Acme"))
        with pytest.raises(NamespaceTaken) as caught:
            async with db.transaction() as cx:
                await rows.insert(cx, source_row("ds_2", "sb_1", "acme"))
        assert caught.value.error == "namespace_taken" and "'acme'" in caught.value.detail
        assert await rows.namespace_taken("sb_1", "ACME")
        async with db.transaction() as cx:  # another sandbox may use it
            await rows.insert(cx, source_row("ds_3", "sb_2", "acme"))
        async with db.transaction() as cx:  # a revoked source frees it
            await rows.update(cx, "ds_1", {"status": "disconnected"})
            await rows.insert(cx, source_row("ds_4", "sb_1", "ACME"))
        with pytest.raises(NamespaceTaken):  # and an update into a taken namespace is refused too
            async with db.transaction() as cx:
                await rows.insert(cx, source_row("ds_5", "sb_1", "beta"))
                await rows.update(cx, "ds_5", {"app_namespace": "acme"})
        assert await db.fetchval("SELECT COUNT(*) FROM sources WHERE id = 'ds_5'") == 0  # rolled back whole
        with pytest.raises(UniqueViolation):  # other unique keys are not mistaken for the namespace
            async with db.transaction() as cx:
                await rows.insert(cx, source_row("ds_4", "sb_2", "gamma"))
    finally:
        await db.aclose()


# -- row locks: a revoke and a rotation never interleave ------------------------------------------

async def _revoke(db: Any, source_id: str, *, hold: anyio.Event | None = None,
                  holding: anyio.Event | None = None) -> None:
    rows, vault = SourceRows(db), VaultRows(db)
    async with db.transaction() as cx:
        row = await rows.get(source_id, cx=cx, for_update=True)
        assert row is not None
        await vault.delete_prefix(cx, f"user_mcp/{source_id}/")
        await rows.update(cx, source_id, {"status": "disconnected", "vault_key": None})
        if holding is not None and hold is not None:
            holding.set()
            await hold.wait()  # still uncommitted: a rotation must wait for us


async def test_rotation_waits_for_a_running_revoke_and_then_stores_nothing(db_url: str) -> None:
    """Two instances: A revokes and holds its transaction open; B rotates the token meanwhile.
    B must not write the secret (it would be an orphan: the revoke already deleted the rest)."""
    a, b = await open_database(db_url), await open_database(db_url)
    try:
        await add_sandbox(a)
        async with a.transaction() as cx:
            await SourceRows(a).insert(cx, source_row("ds_1", "sb_1", "acme"))
            await VaultRows(a).put(cx, "user_mcp/ds_1/auth", b"n" * 12, b"old-ciphertext")
        holding, hold, rotated = anyio.Event(), anyio.Event(), anyio.Event()
        outcome: list[BaseException | None] = []

        async def rotate() -> None:
            try:
                async with b.transaction() as cx:
                    await VaultRows(b).put(cx, "user_mcp/ds_1/auth", b"m" * 12, b"new-ciphertext")
                outcome.append(None)
            except Conflict as exc:
                outcome.append(exc)
            rotated.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _revoke(a, "ds_1", hold=hold, holding=holding))
            await holding.wait()
            tg.start_soon(rotate)
            with anyio.move_on_after(0.5):
                await rotated.wait()
            assert not rotated.is_set(), "the rotation did not wait for the revoke's row lock"
            hold.set()
        assert isinstance(outcome[0], Conflict) and outcome[0].error == "source_revoked"
        assert await VaultRows(a).keys("user_mcp/ds_1/") == []
    finally:
        await a.aclose()
        await b.aclose()


async def test_revoke_after_a_rotation_deletes_the_new_secret(db_url: str) -> None:
    db = await open_database(db_url)
    try:
        await add_sandbox(db)
        async with db.transaction() as cx:
            await SourceRows(db).insert(cx, source_row("ds_1", "sb_1", "acme"))
            await VaultRows(db).put(cx, "user_mcp/ds_1/auth", b"n" * 12, b"c1")
            await VaultRows(db).put(cx, "user_mcp/ds_1/webhook", b"n" * 12, b"c2")
            await VaultRows(db).put(cx, "concierge/secrets/x", b"n" * 12, b"c3")
        await _revoke(db, "ds_1")
        assert await VaultRows(db).keys("user_mcp/ds_1/") == []
        assert await VaultRows(db).keys("concierge/") == ["concierge/secrets/x"]  # other secrets stay
        with pytest.raises(Conflict):
            async with db.transaction() as cx:
                await VaultRows(db).put(cx, "user_mcp/ds_1/auth", b"n" * 12, b"again")
    finally:
        await db.aclose()
