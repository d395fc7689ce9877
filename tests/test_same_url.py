"""The chat's "another source already points at this URL" check: indexed reads by base_url,
never the whole sandbox (10,000 sources took 270 ms to read for one note)."""

from __future__ import annotations

from typing import Any

import pytest

from concierge.agent.secrets import InMemorySecretStore
from concierge.agent.toolkit import ToolContext
from concierge.agent.toolkit._sources import prepare_register, summary_register
from concierge.agent.toolkit.args import RegisterArgs
from concierge.backend import LocalBackend
from concierge.registry.catalog_rows import at_url_query, idle_sources, sources_at_url
from concierge.registry.store import Store, numbered
from tests.test_pages import add_sources

pytestmark = pytest.mark.anyio


def _at(backend: LocalBackend, sids: list[str], url: str) -> None:
    with backend.registry.store.transaction() as cx:
        for sid in sids:
            Store.update(cx, "sources", sid, {"base_url": url})


async def test_every_spelling_of_one_endpoint_is_found_and_nothing_else(backend: LocalBackend) -> None:
    reg = backend.registry
    spellings = ["http://127.0.0.1:8000/mcp", "http://localhost:8000/mcp", "http://127.0.0.1:8000/mcp?team=a"]
    same = add_sources(reg, len(spellings))
    for sid, url in zip(same, spellings, strict=True):
        _at(backend, [sid], url)
    others = add_sources(reg, 4)
    for sid, url in zip(others, ["http://127.0.0.1:8000/mcp2", "http://127.0.0.1:8000/mcp/sub",
                                 "http://127.0.0.1:8001/mcp", "https://127.0.0.1:8000/mcp"], strict=True):
        _at(backend, [sid], url)
    gone = add_sources(reg, 1, status="disconnected")
    _at(backend, gone, spellings[0])
    reg.create_sandbox("elsewhere")
    _at(backend, add_sources(reg, 1, sandbox="elsewhere"), spellings[0])

    sb = reg.get_sandbox(None).id
    for asked in ("http://LOCALHOST:8000/mcp/", "http://127.0.0.1:8000/mcp", "127.0.0.1:8000/mcp"):
        found = sources_at_url(reg.store, sb, asked)
        assert sorted(sid for _, sid in found.names) == sorted(same) and found.total == 3, asked
    https = add_sources(reg, 2)
    _at(backend, https[:1], "https://mcp.example.com/mcp")
    _at(backend, https[1:], "https://mcp.example.com:443/mcp")
    found = sources_at_url(reg.store, sb, "https://MCP.example.com/mcp/")
    assert sorted(sid for _, sid in found.names) == sorted(https)


async def test_the_check_searches_the_base_url_index_only(backend: LocalBackend) -> None:
    store = backend.registry.store
    firsts, first_params, count, count_params = at_url_query(backend.registry.get_sandbox(None).id,
                                                             "http://localhost/mcp")
    for sql, params in ((firsts, first_params), (count, count_params)):
        plan = [str(row["detail"]) for row in store.query("EXPLAIN QUERY PLAN " + sql, params)]
        searches = [d for d in plan if d.startswith("SEARCH") or d.startswith("SCAN sources")]
        assert len(searches) == 4 * 2, plan  # 127.0.0.1 / localhost, with or without :80; exact / ?query
        assert all("INDEX sources_by_url (sandbox_id=? AND base_url" in d for d in searches), plan


async def test_the_note_before_the_yes_counts_many_and_reads_no_other_source(backend: LocalBackend) -> None:
    reg = backend.registry
    url = "http://127.0.0.1:8000/mcp"
    same = add_sources(reg, 7)
    _at(backend, same, url)
    add_sources(reg, 50)  # at another URL: never read
    views = 0
    inner = reg._view

    def counted(row: dict[str, Any], signed_in: Any = None) -> Any:
        nonlocal views
        views += 1
        return inner(row, signed_in)

    args = RegisterArgs(name="Second", url=url + "/", auth_kind="none")
    reg._view = counted  # type: ignore[method-assign]
    try:
        prep = await prepare_register(ToolContext(backend, InMemorySecretStore()), args)
    finally:
        del reg._view
    assert views == 0  # the old check read (and built) every source of the sandbox
    oldest = [s for s in reg.list_sources() if s.id in same][:5]
    named = " and ".join(f'"{s.name}" ({s.id})' for s in oldest)
    assert f"Note: {named} and 2 more already point at this URL" in summary_register(args, prep)
    alone = RegisterArgs(name="Third", url="http://127.0.0.1:8000/other", auth_kind="none")
    assert "already point" not in summary_register(alone, await prepare_register(
        ToolContext(backend, InMemorySecretStore()), alone))


async def test_both_engines_read_the_same_light_rows(db_url: str) -> None:
    from tests.pg_fixtures import source_row

    store = Store(db_url)
    try:
        with store.transaction() as cx:
            Store.insert(cx, "sandboxes", {"id": "sb_1", "name": "default", "created_at": "2026-01-01T00:00:00Z"})
            for i, url in enumerate(["https://mcp.example.com/mcp", "https://mcp.example.com:443/mcp?team=a",
                                     "https://mcp.example.com/mcp-2", "https://mcp.example.com/mcp/x",
                                     "https://mcp.example.com/mcp@b"]):
                Store.insert(cx, "sources", source_row(f"ds_{i}", "sb_1", f"ns{i}", base_url=url,
                                                       created_at=f"2026-01-01T00:00:0{i}Z"))
            for i in range(4):  # and the catalog's idle rows: counted, the first two of each read
                Store.insert(cx, "sources", source_row(f"ds_idle{i}", "sb_1", f"idle{i}",
                                                       status="error" if i == 3 else "paused",
                                                       health_error="connection_refused: no" if i == 3 else None,
                                                       base_url="https://idle.example.com/mcp",
                                                       created_at=f"2026-01-02T00:00:0{i}Z"))
        idle = idle_sources(store, "sb_1", per_group=2)
        assert idle.counts == {("user_mcp", "paused"): 3, ("user_mcp", "error"): 1} and idle.total == 4
        assert [(r.id, r.status.value) for r in idle.rows] == [
            ("ds_idle0", "paused"), ("ds_idle1", "paused"), ("ds_idle3", "error")]
        found = sources_at_url(store, "sb_1", "https://MCP.example.com/mcp/")
        assert found.names == [("source ds_0", "ds_0"), ("source ds_1", "ds_1")] and found.total == 2
        if store.dialect == "postgresql":
            sql, params, _, _ = at_url_query("sb_1", "https://mcp.example.com/mcp", dialect="postgresql")

            async def explain(cx: Any) -> list[dict[str, Any]]:
                await cx.execute("SET LOCAL enable_seqscan = off")  # 5 rows: make it show its index
                return list(await cx.fetch("EXPLAIN " + numbered(sql), *params))

            with store.transaction() as tx:
                plan = " ".join(str(r["QUERY PLAN"]) for r in tx.run(explain))
            # the exact spellings at least (on 9 rows the planner may filter the ranges in date
            # order instead): a byte-wise comparison can use the byte-wise index
            assert plan.count("Index Scan using sources_by_url") >= 2, plan
    finally:
        store.close()
