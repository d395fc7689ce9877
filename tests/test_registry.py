"""The lifecycle service against real MCP servers on loopback and a real SQLite file."""

from __future__ import annotations

import sqlite3
import logging
import os
import stat
import threading
from pathlib import Path

import anyio
import pytest

from concierge.errors import Conflict, NotFound, ValidationFailed
from concierge.registry import Registry
from concierge.registry.store import Store
from concierge.store.schema import ALL as SCHEMA
from concierge.registry.vault import VaultError
from tests.conftest import TEST_MASTER_KEY
from tests.mcp_servers import closed_port_url, serve_in_thread, tools_app
from tests.registry_fixtures import CANARY, HEADER_CANARY

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("engine")]


def body(url: str, **extra):
    return {"name": "Acme", "base_url": url, "auth_kind": "none", **extra}


async def test_register_no_auth_becomes_active(registry, open_server):
    out = await registry.register(body(open_server.url()))
    assert out.status == "active" and out.health_error is None and out.error is None
    assert out.data_source_id.startswith("ds_") and out.ingestion_mode == "live_tools_only"
    src = registry.get_source(out.data_source_id)
    assert src.tool_count == 4 and src.server_name == "concierge-demo"
    assert src.last_checked_at and src.last_latency_ms > 0
    assert src.app_namespace == out.data_source_id  # default derived from the source id
    assert registry.get_sandbox(src.sandbox_id).name == "default"


async def test_register_bearer_and_header(registry, bearer_server, header_server):
    out = await registry.register(body(bearer_server.url(), auth_kind="bearer", token=CANARY,
                                       app_namespace="acme"))
    assert out.status == "active", out.health_error
    out2 = await registry.register(body(header_server.url(), name="Hdr", auth_kind="header_token",
                                        token=HEADER_CANARY, auth_header="X-Api-Key",
                                        app_namespace="hdr"))
    assert out2.status == "active", out2.health_error
    view = registry.get_source(out2.data_source_id)
    assert view.has_token and view.token_last4 == HEADER_CANARY[-4:] and view.auth_header == "X-Api-Key"


async def test_wrong_token_is_kept_with_unauthorized_error(registry, bearer_server):
    out = await registry.register(body(bearer_server.url(), auth_kind="bearer", token="wrong-token-xyz"))
    assert out.status == "error"
    assert "unauthorized" in out.health_error
    assert registry.get_source(out.data_source_id).status == "error"  # kept, can be fixed


async def test_fix_token_by_update_rechecks(registry, bearer_server):
    out = await registry.register(body(bearer_server.url(), auth_kind="bearer", token="wrong-token-xyz"))
    fixed = await registry.update(out.data_source_id, {"token": CANARY})
    assert fixed.status == "active" and fixed.health_error is None
    audit = registry.audit(limit=5)
    assert any(e.action == "source.update" and e.after.get("token") == "rotated" for e in audit)


async def test_stopped_server_is_connection_refused(registry):
    out = await registry.register(body(closed_port_url(), connect_timeout=2))
    assert out.status == "error" and "connection_refused" in out.health_error


async def test_partial_update_keeps_omitted_fields(registry, open_server):
    out = await registry.register(body(open_server.url(), app_namespace="acme", rate_cap_per_minute=30,
                                       allowed_tools=["echo"]))
    upd = await registry.update(out.data_source_id, {"name": "Acme prod"})
    assert upd.detail == "updated" and upd.name == "Acme prod"
    src = registry.get_source(out.data_source_id)
    assert (src.app_namespace, src.rate_cap_per_minute, src.allowed_tools) == ("acme", 30, ["echo"])
    await registry.update(out.data_source_id, {"allowed_tools": None, "rate_cap_per_minute": 120})
    src = registry.get_source(out.data_source_id)
    assert src.allowed_tools is None and src.rate_cap_per_minute == 120 and src.name == "Acme prod"


async def test_update_url_reruns_check(registry, open_server):
    out = await registry.register(body(open_server.url()))
    upd = await registry.update(out.data_source_id, {"base_url": closed_port_url(), "connect_timeout": 2})
    assert upd.status == "error" and "connection_refused" in upd.health_error


async def test_switch_to_none_deletes_secret(registry, bearer_server, open_server):
    out = await registry.register(body(bearer_server.url(), auth_kind="bearer", token=CANARY))
    await registry.update(out.data_source_id, {"auth_kind": "none", "base_url": open_server.url()})
    src = registry.get_source(out.data_source_id)
    assert not src.has_token and src.status == "active"
    assert registry.store.query("SELECT key FROM vault WHERE key LIKE '%/auth'") == []


async def test_update_auth_rules_against_stored_state(registry, open_server):
    out = await registry.register(body(open_server.url()))
    with pytest.raises(ValidationFailed, match="token is required when auth_kind is 'bearer'"):
        await registry.update(out.data_source_id, {"auth_kind": "bearer"})
    with pytest.raises(ValidationFailed, match="auth_header is required"):
        await registry.update(out.data_source_id, {"auth_kind": "header_token", "token": "abcdef"})
    with pytest.raises(ValidationFailed, match="nothing to update"):
        await registry.update(out.data_source_id, {})


async def test_test_pause_resume_revoke(registry, open_server):
    out = await registry.register(body(open_server.url()))
    sid = out.data_source_id
    assert (await registry.test(sid)).status == "active"
    assert registry.pause(sid).status == "paused"
    assert registry.pause(sid).detail == "already paused"
    assert (await registry.test(sid)).status == "paused"  # checked, still paused
    assert (await registry.resume(sid)).status == "active"
    revoked = registry.revoke(sid)
    assert revoked.status == "disconnected"
    assert registry.revoke(sid).detail == "already revoked"  # idempotent
    with pytest.raises(Conflict, match="revoked"):
        await registry.update(sid, {"name": "again"})
    with pytest.raises(Conflict, match="revoked"):
        await registry.test(sid)
    with pytest.raises(Conflict, match="revoked"):
        await registry.resume(sid)
    actions = [e.action for e in registry.audit(limit=50)]
    for action in ("source.register", "source.test", "source.pause", "source.resume", "source.revoke"):
        assert action in actions


async def test_revoke_deletes_secret_and_frees_namespace(registry, bearer_server):
    out = await registry.register(body(bearer_server.url(), auth_kind="bearer", token=CANARY,
                                       app_namespace="acme"))
    registry.revoke(out.data_source_id)
    assert registry.store.query("SELECT key FROM vault") == []
    assert not registry.get_source(out.data_source_id).has_token
    again = await registry.register(body(bearer_server.url(), auth_kind="bearer", token=CANARY,
                                         app_namespace="acme"))
    assert again.status == "active"


async def test_namespace_taken_is_explained(registry, open_server):
    await registry.register(body(open_server.url(), app_namespace="acme"))
    with pytest.raises(Conflict) as info:
        await registry.register(body(open_server.url(), name="Other", app_namespace="ACME"))
    assert info.value.error == "namespace_taken"
    assert "app_namespace 'ACME' is already used by 'Acme'" in info.value.detail
    # another sandbox may use it
    registry.create_sandbox("staging")
    assert (await registry.register(body(open_server.url(), app_namespace="acme"),
                                    sandbox="staging")).status == "active"


def test_concurrent_registrations_race_for_a_namespace(tmp_path):
    """Two registries on one file (two connections), released at once: exactly one wins."""
    home = tmp_path / "race"
    regs = [Registry.open(home), Registry.open(home)]
    regs[0].default_sandbox()
    barrier = threading.Barrier(2)
    results: list[object] = []

    async def slow_probe(endpoint):
        from concierge.mcp_client import ProbeResult
        return ProbeResult(ok=False, tools=(), tool_count=0, server_name=None, server_version=None,
                           protocol_version=None, latency_ms=0.0, error_kind=None,
                           error="not probed in this test", http_status=None)

    def run(reg: Registry) -> None:
        reg._probe = slow_probe
        # both pass the friendly pre-check before either inserts
        reg._check_namespace_free = lambda *a, **k: None  # type: ignore[method-assign]
        barrier.wait()
        try:
            results.append(anyio.run(reg.register, body("https://mcp.acme.example", app_namespace="race")))
        except Conflict as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in regs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(isinstance(r, Conflict) for r in results) == 1, results
    assert len(regs[0].list_sources()) == 1
    for r in regs:
        r.close()


async def test_unknown_ids_and_sandbox_scoping(registry, open_server):
    with pytest.raises(NotFound, match="no source 'ds_nope'"):
        registry.get_source("ds_nope")
    with pytest.raises(NotFound, match="no sandbox 'nope'"):
        registry.get_sandbox("nope")
    out = await registry.register(body(open_server.url()))
    registry.create_sandbox("other")
    with pytest.raises(NotFound):
        registry.get_source(out.data_source_id, sandbox="other")


async def test_list_filters(registry, open_server):
    a = await registry.register(body(open_server.url(), app_namespace="a"))
    await registry.register(body(closed_port_url(), app_namespace="b", connect_timeout=2))
    assert {s.status for s in registry.list_sources()} == {"active", "error"}
    assert [s.id for s in registry.list_sources(status="active")] == [a.data_source_id]
    with pytest.raises(ValidationFailed, match="status must be one of"):
        registry.list_sources(status="nope")


async def test_permanent_delete(registry, bearer_server):
    out = await registry.register(body(bearer_server.url(), auth_kind="bearer", token=CANARY))
    registry.delete_source(out.data_source_id)
    with pytest.raises(NotFound):
        registry.get_source(out.data_source_id)
    assert registry.store.query("SELECT key FROM vault") == []
    assert registry.audit(limit=1)[0].action == "source.delete"


def test_default_sandbox_cannot_be_deleted(registry):
    with pytest.raises(Conflict, match="default sandbox cannot be deleted"):
        registry.delete_sandbox("default")
    registry.create_sandbox("tmp")
    registry.delete_sandbox("tmp")
    assert [s.name for s in registry.list_sandboxes()] == ["default"]
    with pytest.raises(Conflict, match="already exists"):
        registry.create_sandbox("default")


async def test_paginated_and_thousand_tool_servers(registry):
    with serve_in_thread(tools_app(1000, paginate_by=100)) as srv:
        out = await registry.register(body(srv.url()))
    assert out.status == "active"
    assert registry.get_source(out.data_source_id).tool_count == 1000


@pytest.mark.sqlite_only  # reads the SQLite file itself
async def test_canary_never_leaks(registry, bearer_server, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    out = await registry.register(body(bearer_server.url(), auth_kind="bearer", token=CANARY,
                                       app_namespace="acme"))
    await registry.test(out.data_source_id)
    await registry.update(out.data_source_id, {"token": CANARY, "name": "Renamed"})
    seen = [out.model_dump_json(), registry.get_source(out.data_source_id).model_dump_json(),
            *(s.model_dump_json() for s in registry.list_sources()),
            *(e.model_dump_json() for e in registry.audit(limit=100)), caplog.text,
            repr(registry.endpoint(out.data_source_id))]
    registry.revoke(out.data_source_id)
    seen.append(registry.get_source(out.data_source_id).model_dump_json())
    for text in seen:
        assert CANARY not in text
    with sqlite3.connect(registry.store.path) as cx:  # fold the WAL into the file read below
        cx.execute("PRAGMA wal_checkpoint(FULL)")
    for f in registry.store.path.parent.iterdir():
        assert CANARY.encode() not in f.read_bytes(), f


async def test_secret_encrypted_and_bound_to_master_key(tmp_path, bearer_server, monkeypatch):
    home = tmp_path / "h"
    reg = Registry.open(home)
    out = await reg.register(body(bearer_server.url(), auth_kind="bearer", token=CANARY))
    assert reg.endpoint(out.data_source_id).headers["Authorization"] == f"Bearer {CANARY}"
    reg.close()
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", "11" * 32)
    with pytest.raises(VaultError, match="CONCIERGE_MASTER_KEY is not the key this registry's secrets"):
        Registry.open(home)
    # A ciphertext is bound to its vault key: moved under another key it does not decrypt.
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", TEST_MASTER_KEY)
    reg = Registry.open(home)
    with reg.store.transaction() as cx:
        cx.execute("UPDATE vault SET key = ? WHERE key = ?",
                   (f"user_mcp/{out.data_source_id}/moved", f"user_mcp/{out.data_source_id}/auth"))
    with pytest.raises(VaultError, match="cannot be decrypted with this master key"):
        reg.vault.get(f"user_mcp/{out.data_source_id}/moved")
    reg.close()


def test_key_file_created_0600_when_no_env(tmp_path, monkeypatch):
    monkeypatch.delenv("CONCIERGE_MASTER_KEY", raising=False)
    reg = Registry.open(tmp_path / "k")
    key = tmp_path / "k" / "master.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(bytes.fromhex(key.read_text().strip())) == 32
    reg.close()


def test_bad_master_key_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("CONCIERGE_MASTER_KEY", "not-a-key")
    with pytest.raises(VaultError, match="must be 32 bytes"):
        Registry.open(tmp_path)


@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_migrations_are_versioned_and_reopen_keeps_data(tmp_path: Path):
    from concierge.server.auth import KeyStore

    reg = Registry.open(tmp_path)
    reg.create_sandbox("keep")
    # the registry makes its tables and the store's; the HTTP layer its own, when it starts
    assert reg.store.schema_version == {s.component: s.latest for s in SCHEMA if s.component != "http"}
    assert "api_keys" not in reg.store.run(lambda db: db.tables())
    KeyStore(reg.store)
    assert reg.store.schema_version == {s.component: s.latest for s in SCHEMA}
    assert reg.store.query_one("PRAGMA journal_mode")["journal_mode"] == "wal"
    reg.close()
    store = Store(tmp_path / "concierge.db")
    assert store.schema_version == {s.component: s.latest for s in SCHEMA}
    assert store.query_one("SELECT name FROM sandboxes WHERE name='keep'")
    store.close()


def test_failed_write_leaves_nothing(registry):
    with pytest.raises(ZeroDivisionError):
        with registry.store.transaction() as cx:
            Store.insert(cx, "sandboxes", {"id": "sb_x", "name": "x", "created_at": "now"})
            1 / 0  # noqa: B018
    assert registry.store.query("SELECT * FROM sandboxes WHERE id='sb_x'") == []


def test_agents_crud(registry):
    registry.create_agent({"slug": "support", "name": "Support", "tool_allowlist": ["acme_*"]})
    with pytest.raises(Conflict, match="already exists"):
        registry.create_agent({"slug": "support"})
    upd = registry.update_agent("support", {"tool_allowlist": []})
    assert upd.tool_allowlist == [] and registry.get_agent("support").tool_allowlist == []
    assert [a.slug for a in registry.list_agents()] == ["support"]
    with pytest.raises(NotFound, match="no agent 'sales'.*agents: support"):
        registry.get_agent("sales")
