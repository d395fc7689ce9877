"""The gateway under concurrent agents and faults: single flight, every session closed, no call
run twice, one broken secret contained, results capped. Real upstreams on loopback, the real
SQLite file, the mcp SDK's Client against the gateway's app."""

from __future__ import annotations

import sqlite3

import anyio
import pytest
from mcp import Client

from concierge.errors import ConnectorError
from concierge.gateway_server import build_gateway_app
from concierge.registry.catalog import MIN_NAMESPACE, NAME_RE, base_name
from tests.catalog_fixtures import Upstream, register, serve_here, serve_upstream
from tests.mcp_servers import Rich, rich_app, serve_in_thread, tools_app

pytestmark = pytest.mark.anyio

CANARY = "canary-VAULT-TOKEN-77a1"


async def test_twenty_clients_over_twenty_sources_after_the_cache_lapsed(backend) -> None:
    ups = [Upstream(tools=[(f"a{i}", "A."), (f"b{i}", "B.")], list_delay=0.2) for i in range(20)]
    with contextlib_exit_stack() as stack:
        servers = [stack.enter_context(serve_upstream(u)) for u in ups]
        ids = [await register(backend.registry, s.url(), f"src{i}") for i, s in enumerate(servers)]
        backend.registry.create_agent({"slug": "fleet"})
        assert (await backend.agent_tools("fleet")).count == 40  # warm: one pooled session per source
        handshakes = [u.handshakes for u in ups]
        listings = [u.listings for u in ups]
        backend.catalog.invalidate()  # the cache lapsed
        async with serve_here(build_gateway_app(backend, agent="fleet")) as base:
            counts: list[int] = []

            async def one_client() -> None:
                async with Client(f"{base}/mcp") as client:
                    counts.append(len((await client.list_tools()).tools))
                    out = await client.call_tool("src7_a7", {"text": "hi"})
                    assert out.content[0].text == "hi"

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(one_client)
        assert counts == [40] * 20
        # single flight: one listing per source for twenty clients, over the pooled sessions
        assert [u.listings - n for u, n in zip(ups, listings)] == [1] * 20
        assert [u.handshakes for u in ups] == handshakes
        assert backend.gateway.sessions_opened == {sid: 1 for sid in ids}

        # expired (not dropped): served stale at once while one refresh per source runs
        for entry in backend.catalog._cache.values():
            entry.at -= backend.catalog.ttl_seconds + 1
        stale = await backend.agent_tools("fleet")
        assert stale.count == 40 and sorted(stale.trace.stale_sources) == sorted(ids)
        with anyio.fail_after(5):
            while not all(backend.catalog.cached(sid) for sid in ids):
                await anyio.sleep(0.02)
        assert [u.listings - n for u, n in zip(ups, listings)] == [2] * 20


def contextlib_exit_stack():
    import contextlib

    return contextlib.ExitStack()


async def test_every_upstream_session_opened_is_closed_after_deadlines_and_cancels(backend) -> None:
    state = Rich(legacy_only=True, list_delay=0.6)  # initialize sessions: opened and DELETEd
    with serve_in_thread(factory=lambda: rich_app(state)) as up:
        sid = await register(backend.registry, up.url(), "rich", connect_timeout=3)
        backend.registry.create_agent({"slug": "bot"})
        for _ in range(3):  # listings cut off by the caller's deadline (the listing goes on)
            cut = await backend.catalog.resolve("bot", deadline=0.1)
            assert [s.reason for s in cut.trace.sources_skipped] == ["timeout"]
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp") as client:
            for _ in range(3):  # calls the client cancels
                with anyio.move_on_after(0.3):
                    await client.call_tool("rich_hang", {})
            assert (await client.call_tool("rich_count", {})).content[0].text == "execution 1"
        await backend.gateway.aclose()
        with anyio.fail_after(5):
            while state.deletes < state.sessions_opened:
                await anyio.sleep(0.02)
        # opened = closed; one pooled session (plus the registration probe's own) for it all
        assert state.sessions_opened == state.deletes == backend.gateway.sessions_opened[sid] + 1 == 2


@pytest.mark.parametrize("legacy_only", [False, True])
async def test_a_call_that_may_have_run_is_never_sent_twice(backend, legacy_only: bool) -> None:
    state = Rich(legacy_only=legacy_only, count_delay=2.0)  # longer than the server's graceful stop (1 s)
    with serve_in_thread(factory=lambda: rich_app(state)) as up:
        await register(backend.registry, up.url(), "rich")
        backend.registry.create_agent({"slug": "bot"})
        assert (await backend.call_tool("rich_count", {}, agent="bot")).text == "execution 1"

        async def drop_mid_call() -> None:
            with anyio.fail_after(5):
                while state.executions < 2:
                    await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(up.stop)  # the pooled connection drops mid-call

        failure: ConnectorError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(drop_mid_call)
            try:
                await backend.call_tool("rich_count", {}, agent="bot")
            except ConnectorError as exc:
                failure = exc
        assert failure is not None and failure.delivered, failure
        assert str(failure).count(failure.kind.value) == 1
        assert state.executions == 2  # ran once, and was not sent again
        await anyio.to_thread.run_sync(up.start)
        state.count_delay = 0.0
        assert (await backend.call_tool("rich_count", {}, agent="bot")).text == "execution 3"


async def test_a_source_whose_secret_cannot_be_decrypted_does_not_break_its_sandbox(backend) -> None:
    locked, plain = Upstream(tools=[("secret_echo", "E.")], token=CANARY), Upstream(tools=[("echo", "E.")])
    with serve_upstream(locked) as lk, serve_upstream(plain) as pl:
        broken = await register(backend.registry, lk.url(), "locked", auth_kind="bearer", token=CANARY)
        healthy = await register(backend.registry, pl.url(), "plain")
        backend.registry.create_agent({"slug": "bot"})
        with sqlite3.connect(backend.registry.store.path) as cx:  # the real file, as another process (or bit rot) would leave it
            changed = cx.execute("UPDATE vault SET ciphertext = randomblob(48) WHERE key = ?",
                                 (f"user_mcp/{broken}/auth",)).rowcount
        assert changed == 1

        result = await backend.agent_tools("bot")
        assert [t.name for t in result.tools] == ["plain_echo"]
        skipped = {s.source_id: s for s in result.trace.sources_skipped}
        assert skipped[broken].reason == "vault_error" and "cannot be decrypted" in skipped[broken].detail
        assert result.trace.sources_resolved == [healthy]
        assert (await backend.call_tool("plain_echo", {"text": "fine"}, agent="bot")).text == "fine"
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp") as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["plain_echo"]
            assert (await client.call_tool("plain_echo", {"text": "ok"})).content[0].text == "ok"
            refused = await client.call_tool("locked_secret_echo", {})
            assert refused.is_error and "vault_error" in refused.content[0].text
            assert CANARY not in refused.content[0].text


@pytest.mark.parametrize("json_response", [False, True])
async def test_results_over_the_size_cap_are_a_clear_tool_error(backend, json_response: bool) -> None:
    state = Rich()
    with serve_in_thread(factory=lambda: rich_app(state, json_response=json_response)) as up:
        await register(backend.registry, up.url(), "rich")
        backend.registry.create_agent({"slug": "bot"})
        backend.gateway.max_result_bytes = 200_000  # before any session is opened
        fits = await backend.call_tool("rich_blob", {"size": 150_000}, agent="bot")
        assert not fits.is_error and len(fits.text) == 150_000
        assert fits.model_dump_json().count("x" * 1000) == 150  # the text is sent once
        big = await backend.call_tool("rich_blob", {"size": 400_000}, agent="bot")
        assert big.is_error and big.text.startswith("too_large: ")
        assert "over the 200,000 byte limit" in big.text
        after = await backend.call_tool("rich_count", {}, agent="bot")  # the session is still fine
        assert after.text == "execution 1" and backend.gateway.sessions_opened == {after.source_id: 1}


async def test_a_listing_over_the_size_cap_skips_its_source(backend) -> None:
    huge = [(f"t{i:03d}", "d" * 20_000) for i in range(60)]  # ~1.2 MB in one tools/list page
    grows, ok = Upstream(tools=[("echo", "E.")]), Upstream()
    with serve_in_thread(tools_app(huge)) as srv, serve_upstream(grows) as g, serve_upstream(ok) as o:
        checked = await backend.registry.register({"name": "Huge", "base_url": srv.url(), "auth_kind": "none",
                                                   "app_namespace": "huge"})
        assert checked.status == "error" and checked.health_error.startswith("too_large: ")
        sid = await register(backend.registry, g.url(), "grows")
        await register(backend.registry, o.url(), "fine")
        grows.tools[:] = huge  # the server's listing grows past the cap after registration
        result = await backend.agent_tools(None)
        skipped = {s.source_id: s for s in result.trace.sources_skipped}
        assert skipped[sid].reason == "too_large" and "1,000,000 byte limit" in skipped[sid].detail
        assert [t.name for t in result.tools] == ["fine_echo"]


async def test_a_down_source_reads_as_one_sentence_through_the_mcp_face(backend) -> None:
    up = Upstream()
    with serve_upstream(up) as u:
        await register(backend.registry, u.url(), "acme")
        backend.registry.create_agent({"slug": "bot"})
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp") as client:
            assert (await client.call_tool("acme_echo", {"text": "up"})).content[0].text == "up"
            await anyio.to_thread.run_sync(u.stop)
            backend.catalog.invalidate()  # the next listing fails too: the name is explained from it
            gone = await client.call_tool("acme_echo", {"text": "anyone?"})
        text = gone.content[0].text
        assert gone.is_error and text.count("connection_refused") == 1, text
        assert text.startswith("connection_refused: ") and "is the server running?" in text


def test_a_long_namespace_keeps_the_tool_name_readable() -> None:
    name = base_name("n" * 60, "search_documents")
    assert NAME_RE.fullmatch(name) and len(name) == 64
    assert name.startswith("n" * MIN_NAMESPACE) and "_search_documents_" in name
    assert base_name("n" * 60, "search_documents") == name != base_name("n" * 61, "search_documents")
    long_tool = base_name("acme", "t" * 80)
    assert long_tool.startswith("acme_ttt") and len(long_tool) == 64
