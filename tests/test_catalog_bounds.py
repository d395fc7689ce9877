"""The catalog's bounds at scale: pooled sessions kept open, listings in flight at once, and
the sandbox's inactive rows read while the active sources are listed."""

from __future__ import annotations

import pytest

from concierge.agent.models import OfflinePlanner
from concierge.agent.session import ConciergeSession
from concierge.backend import LocalBackend
from concierge.cli.catalog_cmds import render_catalog
from concierge.registry.catalog import DEFAULT_MAX_CONCURRENCY, MAX_SKIPPED_ITEMS, Catalog
from tests.agent_fixtures import collect, text_of
from tests.mcp_servers import RunningServer
from tests.test_pages import add_sources

pytestmark = pytest.mark.anyio


async def register(backend: LocalBackend, server: RunningServer, n: int) -> list[str]:
    ids = []
    for i in range(n):
        out = await backend.register_source({"name": f"Demo {i}", "base_url": server.url(),
                                             "auth_kind": "none", "app_namespace": f"demo{i}"})
        assert out.status == "active", out.health_error
        ids.append(out.data_source_id)
    return ids


async def test_the_catalog_keeps_at_most_max_sessions_open_and_still_lists_every_source(
        backend: LocalBackend, open_server: RunningServer) -> None:
    ids = await register(backend, open_server, 5)
    async with Catalog(backend.registry, max_sessions=2) as catalog:
        result = await catalog.resolve(None)
        assert sorted(result.trace.sources_resolved) == sorted(ids) and not result.trace.sources_skipped
        assert catalog.pool.size <= 2
        catalog.invalidate()
        again = await catalog.resolve(None)  # closed sessions are opened again when needed
        assert sorted(again.trace.sources_resolved) == sorted(ids) and catalog.pool.size <= 2
    async with Catalog(backend.registry, max_sessions=None) as unbounded:
        await unbounded.resolve(None)
        assert unbounded.pool.size == 5


async def test_listings_run_a_bounded_number_at_once(backend: LocalBackend, open_server: RunningServer) -> None:
    assert DEFAULT_MAX_CONCURRENCY == 32
    await register(backend, open_server, 3)
    catalog = Catalog(backend.registry, max_concurrency=1)
    peak, live = 0, 0
    inner = catalog._list_source

    async def counted(source):  # type: ignore[no-untyped-def]
        nonlocal peak, live
        live += 1
        peak = max(peak, live)
        try:
            return await inner(source)
        finally:
            live -= 1

    catalog._list_source = counted  # type: ignore[method-assign]
    async with catalog:
        assert (await catalog.resolve(None)).count == 12
    assert peak == 1


async def test_inactive_rows_still_appear_in_the_trace_in_sandbox_order(
        backend: LocalBackend, open_server: RunningServer) -> None:
    reg = backend.registry
    paused = add_sources(reg, 3, status="paused")
    ids = await register(backend, open_server, 2)
    errored = add_sources(reg, 2, status="error")
    async with Catalog(reg) as catalog:
        result = await catalog.resolve(None)
        assert result.trace.sources_resolved == ids
        in_order = [s.id for s in reg.list_sources() if s.status.value != "active"]  # (created_at, id)
        assert sorted(in_order) == sorted(paused + errored)
        assert [s.source_id for s in result.trace.sources_skipped] == in_order
        assert sorted(s.reason for s in result.trace.sources_skipped) == ["error"] * 2 + ["paused"] * 3
        by_app = await catalog.resolve(None, app="demo1")
        assert {t.app for t in by_app.tools} == {"demo1"}


async def test_idle_sources_are_counted_and_only_the_first_of_each_reason_itemized(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """9,900 paused sources made a trace entry and a full source view each, and the catalog
    missed its deadline; now they are counted per reason, the first few itemized."""
    reg = backend.registry
    paused = add_sources(reg, MAX_SKIPPED_ITEMS + 5, status="paused")
    errored = add_sources(reg, 2, status="error")
    ids = await register(backend, open_server, 1)
    views = 0
    inner = reg._view

    def counted(row, signed_in=None):  # type: ignore[no-untyped-def]
        nonlocal views
        views += 1
        return inner(row, signed_in)

    reg._view = counted  # type: ignore[method-assign]
    try:
        async with Catalog(reg) as catalog:
            result = await catalog.resolve(None)
    finally:
        del reg._view
    assert views == 1  # the active source; the idle rows are read a few columns at a time
    trace = result.trace
    assert trace.sources_resolved == ids and result.count == 4
    assert trace.sources_skipped_by_reason == {"error": 2, "paused": MAX_SKIPPED_ITEMS + 5}
    assert trace.sources_skipped_omitted == 5
    oldest = [s.id for s in reg.list_sources(status="paused")][:MAX_SKIPPED_ITEMS]
    assert set(oldest) <= set(paused)
    assert [s.source_id for s in trace.sources_skipped if s.reason == "paused"] == oldest
    assert sorted(s.source_id for s in trace.sources_skipped if s.reason == "error") == sorted(errored)
    assert f"5 more paused sources skipped, not itemized ({MAX_SKIPPED_ITEMS + 5} paused in all)" in trace.notes

    # what the surfaces say of them: the CLI (the trace's notes) and the chat (counted)
    shown = render_catalog(result)
    assert f"note: 5 more paused sources skipped, not itemized ({MAX_SKIPPED_ITEMS + 5} paused in all)" in shown
    assert shown.count("\nskipped ") == MAX_SKIPPED_ITEMS + 2
    session = ConciergeSession(backend, OfflinePlanner())
    reply = text_of(await collect(session.send("What tools does my support agent have right now?")))
    assert "…and 5 more skipped sources (5 paused)." in reply, reply
    assert reply.count("Skipped ") == MAX_SKIPPED_ITEMS + 2


async def test_a_call_to_a_tool_of_a_paused_source_the_trace_only_counted_says_it_is_paused(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Found at the merge: with more paused sources than the trace itemizes, a call to a tool of
    one it only counted was "no tool" (the source was not among the itemized ones)."""
    from concierge.errors import SourceInactive
    from concierge.registry.gateway import Gateway

    reg = backend.registry
    await register(backend, open_server, 1)
    reg.create_agent({"slug": "support"})
    add_sources(reg, MAX_SKIPPED_ITEMS + 3, status="paused")
    last = add_sources(reg, 1, status="paused")[0]  # the newest: never itemized
    namespace = reg.get_source(last).app_namespace
    async with Catalog(reg) as catalog:
        gateway = Gateway(reg, catalog)
        result = await catalog.resolve("support")
        assert last not in {s.source_id for s in result.trace.sources_skipped}
        with pytest.raises(SourceInactive, match=rf"belongs to source .*\({last}\), which is paused"):
            await gateway.call(f"{namespace}_echo", {"text": "hi"}, agent="support")
        await gateway.aclose()
