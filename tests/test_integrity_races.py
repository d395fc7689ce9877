"""Integrity under races between processes: revoke vs token rotation, and a stale health
check vs a newer configuration. Real processes (multiprocessing, spawn) on one real SQLite
file; real MCP servers on loopback."""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from concierge.errors import Conflict, NotFound
from concierge.registry import Registry
from concierge.registry.vault import auth_key, webhook_key
from tests.mcp_servers import closed_port_url, demo_app, serve_in_thread, status_app
from tests.registry_fixtures import HoldGate

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("engine")]

TRIALS = int(os.environ.get("CONCIERGE_RACE_TRIALS", "60"))
BARRIER_TIMEOUT = 20.0


def _rotator(home: str, source_ids: list[str], barrier: Any, seed: int) -> None:
    """Rotate each source's token right after the barrier (a revoke races it)."""
    rng = random.Random(seed)
    reg = Registry.open(home)

    async def run() -> None:
        for n, source_id in enumerate(source_ids):
            barrier.wait(BARRIER_TIMEOUT)
            time.sleep(rng.random() * 0.0005)  # spread the two writers over each other's windows
            try:
                await reg.update(source_id, {"token": f"test-token-rotated-{n:04d}"})
            except Conflict:
                pass  # the revoke won: refused, nothing written

    try:
        anyio.run(run)
    finally:
        reg.close()


def _revoker(home: str, source_ids: list[str], barrier: Any, seed: int) -> None:
    rng = random.Random(seed)
    reg = Registry.open(home)
    try:
        for source_id in source_ids:
            barrier.wait(BARRIER_TIMEOUT)
            time.sleep(rng.random() * 0.0005)
            reg.revoke(source_id)
    finally:
        reg.close()


def _secrets_of(reg: Registry, source_id: str) -> list[str]:
    prefix = f"user_mcp/{source_id}/"
    return [r["key"] for r in reg.store.query(
        "SELECT key FROM vault WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff"))]


async def test_revoke_racing_a_rotation_in_another_process_never_leaves_a_secret(tmp_path: Path):
    home = tmp_path / "home"
    reg = Registry.open(home)
    url = closed_port_url()  # each rotation's re-check is refused at once
    ids = []
    for n in range(TRIALS):
        out = await reg.register({"name": f"s{n}", "base_url": url, "auth_kind": "bearer",
                                  "token": f"test-token-initial-{n:04d}"})
        ids.append(out.data_source_id)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_rotator, args=(str(home), ids, barrier, 1)),
               ctx.Process(target=_revoker, args=(str(home), ids, barrier, 2))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    leaked = {sid: _secrets_of(reg, sid) for sid in ids if _secrets_of(reg, sid)}
    sources = [reg.get_source(sid) for sid in ids]
    print(f"\nrevoke vs rotation: {len(leaked)} of {TRIALS} trials left a secret")
    assert not leaked, f"{len(leaked)} of {TRIALS} revoked sources kept a secret: {leaked}"
    assert all(s.status == "disconnected" and not s.has_token and s.token_last4 is None for s in sources)
    reg.close()


async def test_a_second_revoke_deletes_a_secret_left_behind(registry: Registry):
    out = await registry.register({"name": "x", "base_url": closed_port_url(), "auth_kind": "bearer",
                                   "token": "test-token-123456"})
    sid = out.data_source_id
    registry.revoke(sid)
    # What the old race left: a secret written after the revoke (put straight into the table).
    with registry.store.transaction() as cx:
        cx.execute("INSERT INTO vault (key, nonce, ciphertext, created_at, updated_at) "
                   "VALUES (?, ?, ?, '', '')", (auth_key(sid), b"\0", b"\0"))
    again = registry.revoke(sid)
    assert _secrets_of(registry, sid) == []
    assert again.status == "disconnected" and "1 leftover secret" in (again.detail or "")
    assert registry.audit(limit=1)[0].action == "source.revoke"
    assert registry.revoke(sid).detail == "already revoked"


async def test_the_vault_refuses_a_secret_for_a_revoked_source(registry: Registry):
    out = await registry.register({"name": "x", "base_url": closed_port_url(), "auth_kind": "none"})
    sid = out.data_source_id
    registry.revoke(sid)
    for key in (auth_key(sid), webhook_key(sid)):  # a token rotation, a webhook secret rotation
        with pytest.raises(Conflict, match="revoked"):
            with registry.store.transaction() as cx:
                registry.vault.put(cx, key, "test-token-late-1")
    assert _secrets_of(registry, sid) == []
    with pytest.raises(Conflict, match="revoked"):
        await registry.update(sid, {"token": "test-token-late-2"})


async def test_the_vault_refuses_a_secret_for_a_deleted_source(registry: Registry):
    """A rotation (token or webhook secret) that read the source before a delete committed."""
    out = await registry.register({"name": "x", "base_url": closed_port_url(), "auth_kind": "none"})
    sid = out.data_source_id
    registry.delete_source(sid)
    with pytest.raises(NotFound):
        with registry.store.transaction() as cx:
            registry.vault.put(cx, webhook_key(sid), "test-token-late-3")
    assert _secrets_of(registry, sid) == []


async def test_a_stale_health_check_does_not_overwrite_a_newer_configuration(registry, open_server):
    gate = HoldGate(status_app(503))  # a server that hangs, then fails
    with serve_in_thread(gate) as hanging:
        out = await registry.register({"name": "moving", "base_url": open_server.url(),
                                       "auth_kind": "none"})
        sid = out.data_source_id
        assert out.status == "active"
        # Point it at the hanging URL without a check, as an older configuration would be.
        with registry.store.transaction() as cx:
            cx.execute("UPDATE sources SET base_url = ? WHERE id = ?", (hanging.url("/mcp"), sid))
        results: dict[str, Any] = {}

        async def stale_test() -> None:
            results["stale"] = await registry.test(sid)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stale_test)
            await anyio.to_thread.run_sync(gate.arrived.wait, 10.0)
            moved = await registry.update(sid, {"base_url": open_server.url()})  # a PATCH
            assert moved.status == "active"
            gate.release()  # the old check now fails (503), after the PATCH's check succeeded
    src = registry.get_source(sid)
    assert src.status == "active" and src.health_error is None and src.base_url == open_server.url()
    assert results["stale"].status == "active"
    assert "not recorded" in results["stale"].detail


async def test_a_stale_check_from_another_registry_connection_is_discarded(tmp_path, open_server):
    """The same race across two connections to one database file (as two processes have)."""
    home = tmp_path / "home"
    a, b = Registry.open(home), Registry.open(home)
    gate = HoldGate(status_app(503))
    with serve_in_thread(gate) as hanging:
        out = await a.register({"name": "m", "base_url": open_server.url(), "auth_kind": "bearer",
                                "token": "test-token-aaaa-1111"})
        sid = out.data_source_id
        with a.store.transaction() as cx:
            cx.execute("UPDATE sources SET base_url = ? WHERE id = ?", (hanging.url("/mcp"), sid))
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.test, sid)
            await anyio.to_thread.run_sync(gate.arrived.wait, 10.0)
            await b.update(sid, {"base_url": open_server.url()})
            gate.release()
    assert b.get_source(sid).status == "active" and b.get_source(sid).base_url == open_server.url()
    a.close()
    b.close()


async def test_a_check_with_the_old_token_does_not_overwrite_a_rotation(registry):
    """Same URL, new secret: a check still sending the old token is stale too."""
    old_token, new_token = "test-token-old-11112222", "test-token-new-33334444"
    gate = HoldGate(demo_app(token=new_token), held=False, only_first=True)
    with serve_in_thread(gate) as srv:
        out = await registry.register({"name": "r", "base_url": srv.url("/mcp"), "auth_kind": "bearer",
                                       "token": old_token})
        sid = out.data_source_id
        assert out.status == "error"  # the server wants the new token already
        gate.hold()
        results: dict[str, Any] = {}

        async def stale_test() -> None:
            results["stale"] = await registry.test(sid)  # still sends the old token: 401

        async with anyio.create_task_group() as tg:
            tg.start_soon(stale_test)
            await anyio.to_thread.run_sync(gate.arrived.wait, 10.0)
            rotated = await registry.update(sid, {"token": new_token})
            assert rotated.status == "active"
            gate.release()
    src = registry.get_source(sid)
    assert src.status == "active" and src.health_error is None
    assert "not recorded" in results["stale"].detail
