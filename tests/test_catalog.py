"""The resolved tool catalog: real MCP servers on loopback, a real registry on a tmp SQLite file."""

from __future__ import annotations

import json
import time

import anyio
import pytest

from concierge.cli import main
from concierge.errors import NotFound
from concierge.registry import Registry
from concierge.registry.catalog import MAX_DESCRIPTION, NAME_RE, Catalog, base_name, matches_any
from tests.catalog_fixtures import Upstream, register, serve_upstream
from tests.mcp_servers import HOSTILE_INJECTION, closed_port_url, demo_app, hostile_app, serve_in_thread

CANARY = "canary-CATALOG-TOKEN-4d2f81"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def names(result) -> set[str]:
    return {t.name for t in result.tools}


# -- several servers at once: slow, refused, paused, broken, revoked ------------------------------


@pytest.mark.anyio
async def test_several_servers_slow_and_refused(reg: Registry) -> None:
    acme = Upstream(tools=[("search", "Search the docs."), ("read", "Read one doc.")])
    beta = Upstream(tools=[("echo", "Echo.")])
    slow = Upstream(tools=[("slow_echo", "Slowly.")])
    locked = Upstream(tools=[("vault_read", "Read the vault.")], token=CANARY)
    with serve_upstream(acme) as a, serve_upstream(beta) as b, serve_upstream(slow) as s, \
            serve_upstream(locked) as lk, serve_in_thread(demo_app()) as demo:
        acme_id = await register(reg, a.url(), "acme")
        beta_id = await register(reg, b.url(), "beta")
        slow_id = await register(reg, s.url(), "slowpoke", connect_timeout=1)
        locked_id = await register(reg, lk.url(), "locked", auth_kind="bearer", token=CANARY)
        paused_id = await register(reg, demo.url(), "paused")
        reg.pause(paused_id)
        revoked_id = await register(reg, demo.url(), "gone")
        reg.revoke(revoked_id)
        broken = await reg.register({"name": "Broken", "base_url": closed_port_url(), "auth_kind": "none",
                                     "app_namespace": "broken", "connect_timeout": 1})
        assert broken.status == "error"
        reg.create_agent({"slug": "support"})

        # After registration the servers change: two answer in 0.6 s, one takes 5 s (its
        # deadline is 1 s), one no longer accepts our token.
        acme.list_delay = beta.list_delay = 0.6
        slow.list_delay = 5.0
        locked.token = "rotated-on-the-server"
        listings_before = slow.listings

        catalog = Catalog(reg)
        started = time.perf_counter()
        result = await catalog.resolve("support")
        elapsed = time.perf_counter() - started

        # concurrent: 0.6 + 0.6 + 1.0 = 2.2 s one after another; here only the slow source's
        # deadline (the bound leaves room for a loaded machine and still fails a sequential run)
        assert 0.95 <= elapsed < 2.1, elapsed
        assert slow.listings == listings_before + 1  # it was asked, and abandoned at its deadline
        assert names(result) == {"acme_search", "acme_read", "beta_echo"}
        assert {t.name: (t.app, t.source_id, t.original_name) for t in result.tools}["acme_read"] == (
            "acme", acme_id, "read")
        assert result.trace.sources_resolved == [acme_id, beta_id]
        skipped = {s.source_id: s.reason for s in result.trace.sources_skipped}
        assert skipped == {slow_id: "timeout", locked_id: "unauthorized", paused_id: "paused",
                           revoked_id: "disconnected", broken.data_source_id: "error"}
        details = {s.source_id: s.detail or "" for s in result.trace.sources_skipped}
        assert "1 s" in details[slow_id] and "401" in details[locked_id]
        assert details[broken.data_source_id]  # the stored health error is shown
        assert sorted(result.trace.tool_names_advertised) == sorted(names(result))
        assert result.trace.duration_ms >= 950
        assert CANARY not in result.model_dump_json()


@pytest.mark.anyio
async def test_resolve_deadline_caps_every_source(reg: Registry) -> None:
    slow = Upstream()
    with serve_upstream(slow) as s:
        slow_id = await register(reg, s.url(), "slowpoke", connect_timeout=10)
        slow.list_delay = 5.0
        started = time.perf_counter()
        result = await Catalog(reg).resolve(None, deadline=0.4)
        assert time.perf_counter() - started < 0.9
        assert [(x.source_id, x.reason) for x in result.trace.sources_skipped] == [(slow_id, "timeout")]
        assert result.count == 0


# -- the cache ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_ttl_and_invalidation_on_every_change(reg: Registry) -> None:
    up = Upstream(tools=[("echo", "Echo.")])
    with serve_upstream(up) as srv:
        sid = await register(reg, srv.url(), "acme", pin_tools=False)  # its tools change by design
        clock = FakeClock()
        catalog = Catalog(reg, ttl_seconds=30, clock=clock)

        n = up.listings
        first = await catalog.resolve(None)
        assert up.listings == n + 1 and first.trace.cached_sources == []
        up.tools.append(("shout", "Shout."))
        again = await catalog.resolve(None)
        assert up.listings == n + 1 and again.trace.cached_sources == [sid]
        assert names(again) == {"acme_echo"}  # served from cache within the TTL
        clock.advance(29.9)
        assert (await catalog.resolve(None)).trace.cached_sources == [sid]
        clock.advance(0.2)
        expired = await catalog.resolve(None)  # stale-while-revalidate: the old listing, a refresh starts
        assert expired.trace.stale_sources == [sid] and names(expired) == {"acme_echo"}
        with anyio.fail_after(5):
            while up.listings == n + 1 or not catalog.cached(sid):
                await anyio.sleep(0.01)
        refreshed = await catalog.resolve(None)
        assert refreshed.trace.stale_sources == [] and names(refreshed) == {"acme_echo", "acme_shout"}

        await reg.update(sid, {"name": "Acme renamed"})  # update: dropped at once
        assert (await catalog.resolve(None)).trace.cached_sources == []
        assert (await catalog.resolve(None)).trace.cached_sources == [sid]

        reg.pause(sid)  # pause: skipped at once, even though the listing was cached
        paused = await catalog.resolve(None)
        assert paused.count == 0 and paused.trace.sources_skipped[0].reason == "paused"

        await reg.resume(sid)  # resume: listed fresh
        listings = up.listings
        resumed = await catalog.resolve(None)
        assert resumed.trace.cached_sources == [] and up.listings == listings + 1 and resumed.count == 2

        reg.revoke(sid)  # revoke: gone at once
        revoked = await catalog.resolve(None)
        assert revoked.count == 0 and revoked.trace.sources_skipped[0].reason == "disconnected"
        assert not catalog.cached(sid)


@pytest.mark.anyio
async def test_quick_failures_are_not_remembered(reg: Registry) -> None:
    up = Upstream()
    with serve_upstream(up) as srv:
        await register(reg, srv.url(), "acme", connect_timeout=1)
        catalog = Catalog(reg, clock=FakeClock())
        up.token = "now-locked"
        assert (await catalog.resolve(None)).trace.sources_skipped[0].reason == "unauthorized"
        up.token = None  # fixed on the server side: the next resolve sees it at once
        assert names(await catalog.resolve(None)) == {"acme_echo"}


@pytest.mark.anyio
async def test_a_hung_server_is_waited_on_once_and_found_again_in_the_background(reg: Registry) -> None:
    up = Upstream()
    with serve_upstream(up) as srv:
        sid = await register(reg, srv.url(), "acme", connect_timeout=1)
        clock = FakeClock()
        catalog = Catalog(reg, clock=clock)
        up.list_delay = 3  # it hangs past its 1 s deadline
        first = await catalog.resolve(None)
        assert first.trace.sources_skipped[0].reason == "timeout"
        await anyio.sleep(0.2)  # (the listing's own deadline ends with the waiter's)
        assert catalog.listings_started == 1
        again = await catalog.resolve(None)  # answered at once from what the last attempt found
        skipped = again.trace.sources_skipped[0]
        assert skipped.reason == "timeout" and "tried just now; trying again in the background" in skipped.detail
        assert catalog.listings_started == 1  # no second attempt within a second
        up.list_delay = 0  # the server recovers
        clock.advance(2)
        still = await catalog.resolve(None)
        assert still.trace.sources_skipped[0].reason == "timeout" and catalog.listings_started == 2
        with anyio.fail_after(5):
            while not catalog.cached(sid):  # the background attempt fills the cache
                await anyio.sleep(0.02)
        assert names(await catalog.resolve(None)) == {"acme_echo"}
        up.list_delay = 3
        clock.advance(31)  # the listing expired: stale-while-revalidate, then the failure is remembered
        assert names(await catalog.resolve(None)) == {"acme_echo"}
        await reg.update(sid, {"name": "Acme Two"})  # a change forgets everything: the next resolve waits again
        final = await catalog.resolve(None)
        assert final.trace.sources_skipped[0].detail.startswith("no tools/list answer within")


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_name_collisions_are_resolved_deterministically_and_reported(backend) -> None:
    reg = backend.registry
    older = Upstream(tools=[("c", "From namespace a_b.")], replies={"c": "older says hi"})
    newer = Upstream(tools=[("b_c", "From namespace a."), ("x_y", "Plain."), ("x y", "Spaced.")],
                     replies={"b_c": "newer says hi", "x y": "spaced says hi"})
    with serve_upstream(older) as o, serve_upstream(newer) as n:
        older_id = await register(reg, o.url(), "a_b")
        newer_id = await register(reg, n.url(), "a")
        reg.create_agent({"slug": "bot"})
        result = await backend.agent_tools("bot")

        by_origin = {(t.source_id, t.original_name): t.name for t in result.tools}
        assert len(by_origin) == 4 and result.count == 4  # nothing dropped
        assert all(NAME_RE.fullmatch(t.name) for t in result.tools)
        assert len(names(result)) == 4  # unique
        assert by_origin[(older_id, "c")] == "a_b_c"  # the older source keeps the name
        assert by_origin[(newer_id, "x_y")] == "a_x_y"  # an unaltered name beats a sanitized one
        renamed_bc = by_origin[(newer_id, "b_c")]
        renamed_xy = by_origin[(newer_id, "x y")]
        assert renamed_bc.startswith("a_b_c_") and renamed_xy.startswith("a_x_y_")

        collisions = {(c["name"], c["source_id"], c["original_name"], c["renamed_to"], c["kept_source_id"])
                      for c in result.trace.collisions}
        assert collisions == {("a_b_c", newer_id, "b_c", renamed_bc, older_id),
                              ("a_x_y", newer_id, "x y", renamed_xy, newer_id)}
        assert {(r["original_name"], r["reason"]) for r in result.trace.renamed} == {
            ("b_c", "collision"), ("x y", "collision")}

        # deterministic: a fresh resolver (no cache) gives the same names
        fresh = await Catalog(reg).resolve("bot")
        assert {(t.source_id, t.original_name): t.name for t in fresh.tools} == by_origin

        # and the gateway routes each name to its own tool
        assert (await backend.call_tool("a_b_c", {}, agent="bot")).text == "older says hi"
        assert (await backend.call_tool(renamed_bc, {}, agent="bot")).text == "newer says hi"
        assert (await backend.call_tool(renamed_xy, {}, agent="bot")).text == "spaced says hi"


@pytest.mark.anyio
async def test_long_names_are_shortened_deterministically(backend) -> None:
    reg = backend.registry
    namespace = "n" * 60
    long_a, long_b = "t" * 40 + "_alpha", "t" * 40 + "_beta"
    up = Upstream(tools=[(long_a, "A."), (long_b, "B."), ("ok", "Short.")])
    with serve_upstream(up) as srv:
        sid = await register(reg, srv.url(), namespace)
        reg.create_agent({"slug": "bot"})
        result = await backend.agent_tools("bot")
        by_original = {t.original_name: t.name for t in result.tools}
        assert by_original["ok"] == f"{namespace}_ok"
        for original in (long_a, long_b):
            name = by_original[original]
            assert len(name) == 64 and NAME_RE.fullmatch(name)
            assert name == base_name(namespace, original)  # same input, same name
        assert by_original[long_a] != by_original[long_b]  # a shared 64-char prefix stays apart
        assert {(r["original_name"], r["reason"]) for r in result.trace.renamed} == {
            (long_a, "shortened"), (long_b, "shortened")}
        out = await backend.call_tool(by_original[long_b], {}, agent="bot")
        assert out.original_name == long_b and out.text == long_b and out.source_id == sid


def test_base_name_rules() -> None:
    assert base_name("acme", "search") == "acme_search"
    assert base_name("acme", "odd name/with:chars") == "acme_odd_name_with_chars"
    assert base_name("acme", "") == "acme_"
    long = base_name("x" * 64, "y" * 64)
    assert len(long) == 64 and long == base_name("x" * 64, "y" * 64)
    assert long != base_name("x" * 64, "y" * 63 + "z")
    assert NAME_RE.fullmatch(base_name("ns", "ünïcode tööl")) is not None


# -- allowlists ----------------------------------------------------------------------------------


def test_matches_any_exact_and_globs() -> None:
    assert matches_any(["acme_search"], "acme_search")
    assert not matches_any(["acme_search"], "acme_search2")
    assert matches_any(["acme_*"], "acme_anything") and not matches_any(["acme_*"], "beta_x")
    assert matches_any(["*_read"], "acme_read") and matches_any(["tool_?"], "tool_7")
    assert matches_any(["tool_[ab]"], "tool_a") and not matches_any(["tool_[ab]"], "tool_c")
    assert not matches_any(["ACME_*"], "acme_x")  # case-sensitive, like the names
    assert not matches_any([], "anything")


@pytest.mark.anyio
async def test_source_and_agent_allowlists_with_globs(reg: Registry) -> None:
    acme = Upstream(tools=[("search_doc", "S."), ("read_doc", "R."), ("delete_doc", "D."),
                           ("admin_reset", "Dangerous.")])
    beta = Upstream(tools=[("echo", "E."), ("shout", "S.")])
    with serve_upstream(acme) as a, serve_upstream(beta) as b:
        acme_id = await register(reg, a.url(), "acme",
                                 allowed_tools=["search_doc", "read_doc", "delete_doc", "ghost_tool"])
        await register(reg, b.url(), "beta")
        reg.create_agent({"slug": "bot", "tool_allowlist": [
            "acme_*_doc", "beta_echo", "acme_search_doc", "nothing_*", "beta_typo"]})
        result = await Catalog(reg).resolve("bot")

        assert names(result) == {"acme_search_doc", "acme_read_doc", "acme_delete_doc", "beta_echo"}
        trace = result.trace
        assert trace.allowlist_filtered_out == {"source": ["acme_admin_reset"], "agent": ["beta_shout"]}
        assert trace.allowlist_missing_entries == ["nothing_*", "beta_typo"]
        assert trace.source_allowlist_missing_entries == {acme_id: ["ghost_tool"]}

        # the virtual agent (no slug) sees every tool the sources allow
        everything = await Catalog(reg).resolve(None)
        assert names(everything) == {"acme_search_doc", "acme_read_doc", "acme_delete_doc",
                                     "beta_echo", "beta_shout"}
        assert everything.agent is None and everything.trace.allowlist_filtered_out["agent"] == []


@pytest.mark.anyio
async def test_allowlist_entries_that_match_nothing_are_reported(reg: Registry) -> None:
    up = Upstream(tools=[("search_docs", "S."), ("echo", "E.")])
    with serve_upstream(up) as srv:
        await register(reg, srv.url(), "acme")
        reg.create_agent({"slug": "typo-bot", "tool_allowlist": ["acme_serch_docs", "acme_ehco*"]})
        result = await Catalog(reg).resolve("typo-bot")
        # the reference product silently runs such an agent with no tools; we say so
        assert result.count == 0
        assert result.trace.allowlist_missing_entries == ["acme_serch_docs", "acme_ehco*"]
        assert sorted(result.trace.allowlist_filtered_out["agent"]) == ["acme_echo", "acme_search_docs"]


@pytest.mark.anyio
async def test_tool_sources_app_filter_and_paused_agent(reg: Registry) -> None:
    acme, beta = Upstream(tools=[("a1", "A.")]), Upstream(tools=[("b1", "B.")])
    with serve_upstream(acme) as a, serve_upstream(beta) as b:
        acme_id = await register(reg, a.url(), "acme")
        beta_id = await register(reg, b.url(), "beta")
        reg.create_agent({"slug": "no-tools", "tool_sources": []})
        none = await Catalog(reg).resolve("no-tools")
        assert none.count == 0
        assert {(s.source_id, s.reason) for s in none.trace.sources_skipped} == {
            (acme_id, "not_in_tool_sources"), (beta_id, "not_in_tool_sources")}

        only_beta = await Catalog(reg).resolve(None, app="BETA")
        assert names(only_beta) == {"beta_b1"} and only_beta.by_app == {"beta": ["beta_b1"]}
        assert only_beta.trace.tool_names_advertised == ["acme_a1", "beta_b1"]
        with pytest.raises(NotFound, match="namespaces: acme, beta"):
            await Catalog(reg).resolve(None, app="gamma")

        reg.create_agent({"slug": "sleepy"})
        reg.update_agent("sleepy", {"status": "paused"})
        sleepy = await Catalog(reg).resolve("sleepy")
        assert any("paused" in n for n in sleepy.trace.notes)
        with pytest.raises(NotFound, match="no agent 'ghost'"):
            await Catalog(reg).resolve("ghost")


# -- hostile servers ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_hostile_metadata_is_capped_and_named_safely(reg: Registry) -> None:
    with serve_in_thread(hostile_app()) as srv:
        await register(reg, srv.url(), "hostile")
        result = await Catalog(reg).resolve(None)
        assert result.count == 4
        for tool in result.tools:
            assert NAME_RE.fullmatch(tool.name)
            assert len(tool.description) <= MAX_DESCRIPTION
            assert not any(ord(c) < 32 and c not in "\n\t" for c in tool.description)
            assert "\x1b" not in tool.description and "\x7f" not in tool.description
        by_original = {t.original_name: t for t in result.tools}
        assert by_original["odd name/with:chars;<x>"].name == "hostile_odd_name_with_chars__x_"
        assert HOSTILE_INJECTION in by_original["control_chars"].description  # inert text, shown as such
        assert ("odd name/with:chars;<x>", "sanitized") in {
            (r["original_name"], r["reason"]) for r in result.trace.renamed}


@pytest.mark.anyio
async def test_huge_tool_lists_and_schemas_are_capped(reg: Registry) -> None:
    flood, fat = Upstream(tools=[("one", "1.")]), Upstream(tools=[("fat", "Fat schema.")])
    with serve_upstream(flood) as f, serve_upstream(fat) as g:
        flood_id = await register(reg, f.url(), "flood")
        await register(reg, g.url(), "fat", pin_tools=False)  # its schema changes by design
        flood.tools = [(f"t{i}", "x") for i in range(5001)]  # over the connector's cap
        fat.schema = {"type": "object", "properties": {
            f"p{i}": {"type": "string", "description": "y" * 100} for i in range(1000)}}
        started = time.perf_counter()
        result = await Catalog(reg).resolve(None)
        assert time.perf_counter() - started < 5
        assert [(s.source_id, s.reason) for s in result.trace.sources_skipped] == [(flood_id, "too_many_tools")]
        (tool,) = result.tools
        assert tool.name == "fat_fat" and tool.input_schema == {"type": "object", "properties": {}}
        assert any("fat_fat" in n and "schema" in n for n in result.trace.notes)


# -- CLI -----------------------------------------------------------------------------------------


def _setup_cli_registry(url: str, slow_url: str, slow: Upstream) -> tuple[str, str]:
    reg = Registry.open()
    try:
        async def go() -> tuple[str, str]:
            a = await register(reg, url, "acme", token=CANARY, auth_kind="bearer")
            s = await register(reg, slow_url, "slowpoke", connect_timeout=0.5)
            reg.create_agent({"slug": "support", "tool_allowlist": ["acme_*", "missing_tool"]})
            return a, s
        ids = anyio.run(go)
    finally:
        reg.close()
    slow.list_delay = 3.0
    return ids


def test_cli_agent_tools_json_human_and_trace(capsys: pytest.CaptureFixture[str]) -> None:
    acme = Upstream(tools=[("search", "Search the docs."), ("read", "Read one.")], token=CANARY)
    slow = Upstream()
    with serve_upstream(acme) as a, serve_upstream(slow) as s:
        acme_id, slow_id = _setup_cli_registry(a.url(), s.url(), slow)

        assert main(["agent", "tools", "support", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert set(data) == {"tools", "by_app", "count", "trace"}
        assert data["count"] == 2 and data["by_app"] == {"acme": ["acme_read", "acme_search"]}
        assert all(set(t) == {"name", "app", "description", "source_id", "input_schema"} for t in data["tools"])
        assert all(t["input_schema"]["type"] == "object" for t in data["tools"])
        assert {t["name"]: t["source_id"] for t in data["tools"]} == {"acme_search": acme_id, "acme_read": acme_id}
        assert data["trace"]["sources_skipped"][0]["source_id"] == slow_id
        assert data["trace"]["sources_skipped"][0]["reason"] == "timeout"
        assert data["trace"]["allowlist_missing_entries"] == ["missing_tool"]

        assert main(["agent", "tools", "support"]) == 0
        human = capsys.readouterr().out
        assert "acme_search" in human and "Search the docs." in human
        assert "skipped Slowpoke" in human and "timeout" in human
        assert "allowlist entries that match no tool: missing_tool" in human

        assert main(["agent", "tools", "--app", "acme", "--trace"]) == 0
        traced = capsys.readouterr().out
        assert "sources resolved:" in traced and "resolved in" in traced
        assert CANARY not in human + traced + json.dumps(data)

        assert main(["agent", "tools", "--app", "nope", "--json"]) == 1
        assert json.loads(capsys.readouterr().out)["error"] == "not_found"


@pytest.mark.anyio
async def test_an_agent_sees_only_its_own_sandbox(reg: Registry) -> None:
    mine, theirs = Upstream(tools=[("mine", "M.")]), Upstream(tools=[("theirs", "T.")])
    with serve_upstream(mine) as m, serve_upstream(theirs) as t:
        await register(reg, m.url(), "acme")
        reg.create_sandbox("other")
        other = await reg.register({"name": "Theirs", "base_url": t.url(), "auth_kind": "none",
                                    "app_namespace": "acme"}, sandbox="other")  # same namespace, other sandbox
        assert other.status == "active"
        reg.create_agent({"slug": "bot"})
        reg.create_agent({"slug": "bot"}, sandbox="other")
        catalog = Catalog(reg)
        assert names(await catalog.resolve("bot")) == {"acme_mine"}
        assert names(await catalog.resolve("bot", sandbox="other")) == {"acme_theirs"}
        assert (await catalog.resolve("bot", sandbox="other")).sandbox_id == reg.get_sandbox("other").id


@pytest.mark.anyio
async def test_a_listing_under_way_for_an_old_url_is_not_joined_after_an_update(reg: Registry) -> None:
    slow, fast = Upstream(tools=[("old_tool", "Old.")]), Upstream(tools=[("new_tool", "New.")])
    with serve_upstream(slow) as s, serve_upstream(fast) as f:
        sid = await register(reg, s.url(), "acme", connect_timeout=3)
        from concierge.mcp_client import list_tools

        async with Catalog(reg, lister=list_tools) as catalog:  # one-shot listings: nothing evicts them
            slow.list_delay = 1.5
            async with anyio.create_task_group() as tg:
                tg.start_soon(catalog.resolve, None)  # a listing of the old URL is under way
                await anyio.sleep(0.2)
                out = await reg.update(sid, {"base_url": f.url()})
                assert out.status == "active"
                started = time.perf_counter()
                fresh = await catalog.resolve(None)
                assert names(fresh) == {"acme_new_tool"} and time.perf_counter() - started < 1.0
