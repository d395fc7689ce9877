"""The tool gateway and `concierge gateway`: real upstream MCP servers, a real registry, and the
mcp SDK's own `Client` talking to the gateway over streamable HTTP on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import anyio
import pytest
from mcp import Client

from concierge.cli import main
from concierge.errors import Conflict, ConnectorError, NotFound, PermissionDenied, RateLimited
from concierge.gateway_server import build_gateway_app
from concierge.registry import Registry
from concierge.registry.catalog import Catalog
from concierge.registry.gateway import Gateway
from tests.catalog_fixtures import Upstream, register, serve_here, serve_upstream
from tests.mcp_servers import demo_app, demo_sse_app, free_port, serve_in_thread

CANARY = "canary-GATEWAY-TOKEN-8e41c0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- routing, pooling, tool errors ---------------------------------------------------------------


@pytest.mark.anyio
async def test_calls_route_to_the_source_and_reuse_one_pooled_session(backend) -> None:
    reg = backend.registry
    acme, beta = Upstream(tools=[("echo", "E."), ("shout", "S.")]), Upstream(tools=[("echo", "E.")],
                                                                           token=CANARY)
    with serve_upstream(acme) as a, serve_upstream(beta) as b:
        acme_id = await register(reg, a.url(), "acme")
        beta_id = await register(reg, b.url(), "beta", auth_kind="bearer", token=CANARY)
        reg.create_agent({"slug": "bot"})

        first = await backend.call_tool("acme_echo", {"text": "hello"}, agent="bot")
        assert (first.name, first.source_id, first.original_name, first.is_error, first.text) == (
            "acme_echo", acme_id, "echo", False, "hello")
        assert first.content == [{"type": "text", "text": "hello"}] and first.latency_ms > 0
        wire = first.model_dump_json()  # each text is sent once: the block points into .text
        assert wire.count("hello") == 1 and '"textRef":[0,5]' in wire
        assert type(first).model_validate_json(wire) == first
        handshakes = acme.handshakes
        for i in range(5):
            out = await backend.call_tool("acme_echo", {"text": f"again {i}"}, agent="bot")
            assert out.text == f"again {i}"
        assert acme.handshakes == handshakes  # no new connection: the pooled session was reused
        assert acme.calls[-1] == ("echo", {"text": "again 4"})
        assert backend.gateway.sessions_opened == {acme_id: 1, beta_id: 1}  # listings share the pool

        out = await backend.call_tool("beta_echo", {"text": "through the token"}, agent="bot")
        assert out.text == "through the token" and out.source_id == beta_id
        assert backend.gateway.pool_size == 2
        assert CANARY not in out.model_dump_json()


@pytest.mark.anyio
async def test_tool_errors_come_back_as_tool_errors(backend) -> None:
    reg = backend.registry
    up = Upstream(tools=[("fail", "Always fails.")], errors={"fail"})
    with serve_upstream(up) as u, serve_in_thread(demo_app()) as demo:
        await register(reg, u.url(), "flaky")
        demo_id = await register(reg, demo.url(), "demo")
        reg.create_agent({"slug": "bot"})
        out = await backend.call_tool("flaky_fail", {}, agent="bot")
        assert out.is_error and out.text == "fail failed"
        bad = await backend.call_tool("demo_get_ticket", {"ticket_id": "T-404"}, agent="bot")
        assert bad.is_error and "No ticket with id" in bad.text
        invalid = await backend.call_tool("demo_search_docs", {"limit": "many"}, agent="bot")
        assert invalid.is_error  # argument validation failed on the server
        unknown = await backend.gateway.call_source(demo_id, "no_such_tool", {})
        assert unknown.is_error and "no_such_tool" in unknown.text
        ok = await backend.call_tool("demo_echo", {"text": "still fine"}, agent="bot")
        assert not ok.is_error and ok.text == "still fine"  # errors did not break the session
        assert backend.gateway.sessions_opened[demo_id] == 1


# -- policy -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_active_and_both_allowlists_are_enforced(backend) -> None:
    reg = backend.registry
    up = Upstream(tools=[("echo", "E."), ("shout", "S."), ("drop_all", "Dangerous.")])
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "acme", allowed_tools=["echo", "shout"])
        reg.create_agent({"slug": "bot", "tool_allowlist": ["acme_echo", "acme_sh*"]})
        gw = backend.gateway

        assert (await gw.call("acme_echo", {"text": "x"}, agent="bot")).text == "x"
        assert (await gw.call("acme_shout", {}, agent="bot")).text == "shout"
        with pytest.raises(PermissionDenied, match="allowed_tools") as info:
            await gw.call("acme_drop_all", {}, agent="bot")
        assert info.value.error == "not_allowed"
        with pytest.raises(NotFound, match="did you mean acme_echo"):
            await gw.call("acme_ecko", {}, agent="bot")
        with pytest.raises(PermissionDenied):  # the server-side name is not an advertised name
            await gw.call_source(sid, "drop_all", {})

        reg.update_agent("bot", {"tool_allowlist": ["acme_echo"]})  # the route is memoized; still refused
        with pytest.raises(PermissionDenied, match="tool_allowlist"):
            await gw.call("acme_shout", {}, agent="bot")
        await reg.update(sid, {"allowed_tools": ["shout"]})
        with pytest.raises(PermissionDenied, match="allowed_tools"):
            await gw.call("acme_echo", {}, agent="bot")

        await reg.update(sid, {"allowed_tools": None})
        reg.pause(sid)
        with pytest.raises(Conflict, match="paused") as paused:
            await gw.call("acme_echo", {}, agent="bot")
        assert paused.value.error == "source_inactive"
        with pytest.raises(Conflict, match="paused"):
            await gw.call_source(sid, "echo", {})
        await reg.resume(sid)
        assert (await gw.call("acme_echo", {"text": "back"}, agent="bot")).text == "back"

        reg.update_agent("bot", {"status": "paused"})
        with pytest.raises(PermissionDenied, match="paused"):
            await gw.call("acme_echo", {}, agent="bot")
        reg.create_agent({"slug": "no-sources", "tool_sources": []})
        with pytest.raises(PermissionDenied, match="tool_sources"):
            await gw.call("acme_echo", {}, agent="no-sources")
        assert len(up.calls) == 3  # nothing refused ever reached the server


@pytest.mark.anyio
async def test_rate_cap_is_enforced_per_source_and_evicted_on_change(reg: Registry) -> None:
    up = Upstream()
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "acme", rate_cap_per_minute=3)
        other = await register(reg, u.url(), "other", rate_cap_per_minute=3)
        reg.create_agent({"slug": "bot"})
        clock = FakeClock()
        gw = Gateway(reg, Catalog(reg, clock=clock), clock=clock)
        try:
            for i in range(3):
                await gw.call("acme_echo", {"text": str(i)}, agent="bot")
            with pytest.raises(RateLimited) as info:
                await gw.call("acme_echo", {"text": "too many"}, agent="bot")
            assert info.value.retry_after == pytest.approx(20.0)
            assert info.value.detail == (f"rate cap reached for source Acme ({sid}): 3 calls per minute; "
                                         "retry in 20 s")
            assert [c[1]["text"] for c in up.calls] == ["0", "1", "2"]  # the refused call never left
            await gw.call("other_echo", {"text": "own bucket"}, agent="bot")

            clock.advance(19.99)
            with pytest.raises(RateLimited):
                await gw.call("acme_echo", {}, agent="bot")
            clock.advance(0.01)
            await gw.call("acme_echo", {"text": "after the wait"}, agent="bot")

            await reg.update(sid, {"rate_cap_per_minute": 5})  # update evicts: a fresh, bigger bucket
            assert sid not in gw.limiter
            for _ in range(5):
                await gw.call("acme_echo", {}, agent="bot")
            with pytest.raises(RateLimited):
                await gw.call("acme_echo", {}, agent="bot")

            reg.revoke(sid)  # revoke evicts the bucket (and the session)
            assert sid not in gw.limiter and other in gw.limiter
            assert gw.pooled(sid) is None
            with pytest.raises(Conflict, match="disconnected"):
                await gw.call("acme_echo", {}, agent="bot")
        finally:
            await gw.aclose()


# -- timeouts, eviction, restarts ----------------------------------------------------------------


@pytest.mark.anyio
async def test_call_timeout_applies_and_the_pooled_session_stays(backend) -> None:
    reg = backend.registry
    up = Upstream()
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "acme", call_timeout=0.5)
        reg.create_agent({"slug": "bot"})
        up.call_delay = 5.0
        started = time.perf_counter()
        with pytest.raises(ConnectorError) as info:
            await backend.call_tool("acme_echo", {}, agent="bot")
        assert info.value.kind == "timeout" and time.perf_counter() - started < 1.5
        assert str(info.value).count("timeout") == 1
        assert backend.gateway.pooled(sid) is not None  # a slow answer is not a broken transport
        up.call_delay = 0.0
        assert (await backend.call_tool("acme_echo", {"text": "ok"}, agent="bot")).text == "ok"
        assert backend.gateway.sessions_opened[sid] == 1 and len(up.calls) == 2


@pytest.mark.anyio
async def test_pause_update_revoke_evict_the_pooled_session(backend) -> None:
    reg = backend.registry
    up = Upstream()
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "acme")
        reg.create_agent({"slug": "bot"})
        gw = backend.gateway
        await gw.call("acme_echo", {}, agent="bot")
        first = gw.pooled(sid)
        assert first is not None

        reg.pause(sid)
        assert gw.pooled(sid) is None
        await reg.resume(sid)
        await gw.call("acme_echo", {}, agent="bot")
        assert first.closed and gw.sessions_opened[sid] == 2  # the old one was closed, not leaked

        second = gw.pooled(sid)
        await reg.update(sid, {"call_timeout": 30})
        await gw.call("acme_echo", {}, agent="bot")
        assert second is not None and second.closed and gw.sessions_opened[sid] == 3
        assert gw.pooled(sid) is not None and gw.pooled(sid).endpoint.call_timeout == 30

        third = gw.pooled(sid)
        reg.revoke(sid)
        with pytest.raises(Conflict):
            await gw.call("acme_echo", {}, agent="bot")
        assert third is not None and third.closed and gw.pool_size == 0


@pytest.mark.anyio
async def test_upstream_restart_and_outage_recover(backend) -> None:
    reg = backend.registry
    up = Upstream()
    with serve_upstream(up) as u:
        sid = await register(reg, u.url(), "acme", connect_timeout=2)
        reg.create_agent({"slug": "bot"})
        gw = backend.gateway
        assert (await gw.call("acme_echo", {"text": "1"}, agent="bot")).text == "1"

        await anyio.to_thread.run_sync(u.restart)
        assert (await gw.call("acme_echo", {"text": "2"}, agent="bot")).text == "2"

        await anyio.to_thread.run_sync(u.stop)
        with pytest.raises(ConnectorError) as down:
            await gw.call("acme_echo", {}, agent="bot")
        assert down.value.kind == "connection_refused" and gw.pooled(sid) is None
        await anyio.to_thread.run_sync(u.start)
        opened = gw.sessions_opened[sid]
        assert (await gw.call("acme_echo", {"text": "3"}, agent="bot")).text == "3"
        assert gw.sessions_opened[sid] == opened + 1


@pytest.mark.anyio
async def test_a_session_the_restarted_server_cut_is_replaced(backend) -> None:
    """The restart cuts the SSE stream; once the session has seen that, the next call opens a
    new one and goes through. (A call whose POST was on its way while the stream was cut is
    not re-sent: whether the old server ran it cannot be known. Waiting for the session to
    close keeps this test off that race, which it hit about once in fifteen runs.)"""
    reg = backend.registry
    with serve_in_thread(factory=demo_sse_app) as srv:  # SSE: the session dies with the server
        sid = await register(reg, srv.url("/sse"), "demo")
        reg.create_agent({"slug": "bot"})
        gw = backend.gateway
        assert (await gw.call("demo_echo", {"text": "before"}, agent="bot")).text == "before"
        old = gw.pooled(sid)
        assert old is not None
        await anyio.to_thread.run_sync(srv.restart)
        with anyio.fail_after(10):
            while not old.closed:
                await anyio.sleep(0.01)
        out = await gw.call("demo_echo", {"text": "after"}, agent="bot")
        assert out.text == "after" and not out.is_error  # one call, no error seen by the caller
        assert gw.sessions_opened[sid] == 2 and old is not None and old.closed


# -- the MCP face: the SDK's Client against `concierge gateway`'s app ---------------------------


@pytest.mark.anyio
async def test_mcp_client_lists_and_calls_through_the_gateway_app(backend) -> None:
    reg = backend.registry
    acme = Upstream(tools=[("echo", "Echo the text."), ("secret", "Not for this agent.")])
    with serve_upstream(acme) as a, serve_in_thread(demo_app(token=CANARY)) as demo:
        acme_id = await register(reg, a.url(), "acme")
        await register(reg, demo.url(), "demo", auth_kind="bearer", token=CANARY)
        reg.create_agent({"slug": "support", "tool_allowlist": ["acme_echo", "demo_*"]})
        catalog = await backend.agent_tools("support")

        async with serve_here(build_gateway_app(backend, agent="support")) as base:
            async with Client(f"{base}/mcp") as client:
                listed = await client.list_tools()
                assert sorted(t.name for t in listed.tools) == sorted(t.name for t in catalog.tools)
                assert "acme_secret" not in {t.name for t in listed.tools}
                by_name = {t.name: t for t in listed.tools}
                assert by_name["acme_echo"].description == "Echo the text."
                assert by_name["demo_search_docs"].input_schema["properties"]["query"]["type"] == "string"

                result = await client.call_tool("acme_echo", {"text": "via the gateway"})
                assert not result.is_error and result.content[0].text == "via the gateway"
                handshakes = acme.handshakes
                again = await client.call_tool("acme_echo", {"text": "second"})
                assert again.content[0].text == "second"
                assert acme.handshakes == handshakes  # the upstream session was reused
                assert backend.gateway.sessions_opened[acme_id] == 1

                ticket = await client.call_tool("demo_create_ticket", {"title": "Help", "body": "Please."})
                assert not ticket.is_error and ticket.structured_content["id"].startswith("T-")

                refused = await client.call_tool("acme_secret", {})
                assert refused.is_error and "not_allowed" in refused.content[0].text

                await anyio.to_thread.run_sync(a.restart)  # the upstream server restarts
                after = await client.call_tool("acme_echo", {"text": "after restart"})
                assert not after.is_error and after.content[0].text == "after restart"

                await anyio.to_thread.run_sync(a.stop)  # and goes away: a tool error, not a crash
                gone = await client.call_tool("acme_echo", {"text": "anyone?"})
                assert gone.is_error and "connection_refused" in gone.content[0].text
                assert (await client.call_tool("demo_echo", {"text": "others fine"})).content[0].text == \
                    "others fine"
                await anyio.to_thread.run_sync(a.start)
                back = await client.call_tool("acme_echo", {"text": "back"})
                assert back.content[0].text == "back"
                assert CANARY not in json.dumps([t.model_dump() for t in listed.tools])


def _wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read() if proc.stderr else "gateway exited") from None
            time.sleep(0.05)
    raise RuntimeError("the gateway did not start")


@pytest.mark.anyio
async def test_concierge_gateway_command_serves_the_agent(reg: Registry) -> None:
    up = Upstream(tools=[("echo", "Echo."), ("shout", "Shout.")], token=CANARY)
    with serve_upstream(up) as u:
        # the command uses CONCIERGE_HOME (set per test by conftest): put the registry there
        home_reg = Registry.open()
        try:
            await register(home_reg, u.url(), "acme", auth_kind="bearer", token=CANARY)
            home_reg.create_agent({"slug": "support", "tool_allowlist": ["acme_echo"]})
        finally:
            home_reg.close()
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "concierge", "gateway", "--agent", "support",
                                 "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=dict(os.environ))
        try:
            await anyio.to_thread.run_sync(_wait_for_port, port, proc)
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["acme_echo"]
                for text in ("one", "two"):
                    result = await client.call_tool("acme_echo", {"text": text})
                    assert result.content[0].text == text
                handshakes = up.handshakes
                assert (await client.call_tool("acme_echo", {"text": "three"})).content[0].text == "three"
                assert up.handshakes == handshakes  # pooled upstream session in the command too
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=15)
        assert "Gateway for agent support: 1 tools at http://127.0.0.1:" in err
        assert CANARY not in out + err


# -- CLI: tool call ------------------------------------------------------------------------------


def test_cli_tool_call(capsys: pytest.CaptureFixture[str]) -> None:
    up = Upstream(tools=[("echo", "E."), ("fail", "F.")], errors={"fail"}, token=CANARY)
    with serve_upstream(up) as u:
        reg = Registry.open()
        try:
            anyio.run(lambda: register(reg, u.url(), "acme", auth_kind="bearer", token=CANARY))
            reg.create_agent({"slug": "support", "tool_allowlist": ["acme_echo", "acme_fail"]})
        finally:
            reg.close()

        assert main(["tool", "call", "acme_echo", "--agent", "support", "--args", '{"text": "hi"}']) == 0
        assert capsys.readouterr().out.strip() == "hi"
        assert main(["tool", "call", "acme_echo", "--agent", "support", "--args", '{"text": "j"}', "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["text"] == "j" and data["is_error"] is False and data["original_name"] == "echo"

        assert main(["tool", "call", "acme_fail", "--agent", "support"]) == 1
        assert "tool error from fail: fail failed" in capsys.readouterr().out
        assert main(["tool", "call", "acme_nope", "--agent", "support", "--json"]) == 1
        assert json.loads(capsys.readouterr().out)["error"] == "not_found"
        assert main(["tool", "call", "acme_echo", "--agent", "support", "--args", "[1]", "--json"]) == 1
        err = json.loads(capsys.readouterr().out)
        assert err["error"] == "validation_error" and "JSON object" in err["detail"]
        captured = capsys.readouterr()
        assert CANARY not in captured.out + captured.err
