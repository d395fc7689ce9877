"""The kind of a failed health check is stored with the source (migration 5), and what the
concierge says about it is looked up by that kind, not guessed from the message."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from concierge.agent.models.offline.replies import plain_error
from concierge.agent.toolkit import health_hint
from concierge.mcp_client.kinds import ErrorKind
from concierge.registry import Registry
from concierge.registry.store import Store
from concierge.store.schema import REGISTRY
from tests.legacy_store import MIGRATIONS, Store as LegacyStore
from tests.mcp_servers import closed_port_url

pytestmark = pytest.mark.anyio


async def test_a_failed_check_stores_its_kind_and_a_passing_one_clears_it(registry: Registry, open_server):
    out = await registry.register({"name": "Down", "base_url": closed_port_url(), "auth_kind": "none"})
    down = registry.get_source(out.data_source_id)
    assert down.status == "error" and down.health_error_kind is ErrorKind.CONNECTION_REFUSED
    assert down.health_error.startswith("connection_refused: ")
    await registry.update(down.id, {"base_url": open_server.url()})
    up = registry.get_source(down.id)
    assert up.status == "active" and up.health_error is None and up.health_error_kind is None


def test_migration_5_gives_old_rows_the_kind_their_message_starts_with(tmp_path: Path):
    path = tmp_path / "old.db"
    old = LegacyStore(path, migrations=MIGRATIONS[:4])  # a home the old store left at user_version 4
    with old.transaction() as cx:
        cx.execute("INSERT INTO sandboxes VALUES ('sb_1', 'default', 'now')")
        for sid, error in (("ds_1", "unauthorized: x answered HTTP 401 — check the token"),
                           ("ds_2", "health check did not complete"),
                           ("ds_3", "weird: not a kind we know"),
                           ("ds_4", None)):
            cx.execute("INSERT INTO sources (id, sandbox_id, name, base_url, auth_kind, app_namespace,"
                       " rate_cap_per_minute, webhook_rate_cap_per_minute, connect_timeout, call_timeout,"
                       " status, health_error, created_at, updated_at) VALUES"
                       " (?, 'sb_1', ?, 'https://x.example', 'none', ?, 60, 600, 10, 60, 'error', ?, 'now', 'now')",
                       (sid, sid, sid, error))
    old.close()
    store = Store(path)
    try:
        assert store.schema_version["registry"] == REGISTRY.latest >= 4
        kinds = {r["id"]: r["health_error_kind"] for r in store.query("SELECT id, health_error_kind FROM sources")}
        assert kinds == {"ds_1": "unauthorized", "ds_2": None, "ds_3": None, "ds_4": None}
    finally:
        store.close()
    with sqlite3.connect(path) as cx:  # the column is real, not a view
        assert "health_error_kind" in [c[1] for c in cx.execute("PRAGMA table_info(sources)")]


def test_what_is_said_about_a_failure_comes_from_its_kind():
    # A message that merely looks like another kind ("forbidden" in the text) keeps its own advice.
    message = "connection_refused: nothing is listening at http://forbidden.example:40301/mcp"
    assert health_hint(ErrorKind.CONNECTION_REFUSED) == health_hint("connection_refused")
    assert "running" in health_hint(ErrorKind.CONNECTION_REFUSED)
    assert plain_error(message, "connection_refused") == \
        "nothing is listening at http://forbidden.example:40301/mcp."
    # Only the stored kind is taken off: a message without it is said whole.
    assert plain_error("note: the server said no", "timeout") == "note: the server said no."
    assert plain_error(None) == "the health check failed."
