"""concierge.mcp_client against real MCP servers (and broken ones) on loopback."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

import concierge.mcp_client as mcp_client
from concierge.errors import ConnectorError
from concierge.mcp_client import (
    MAX_DESCRIPTION_CHARS,
    Endpoint,
    ErrorKind,
    McpSession,
    ProbeResult,
    call_tool,
    list_tools,
    probe,
)
from tests.mcp_servers import (
    HOSTILE_HUGE_SIZE,
    HOSTILE_INJECTION,
    HOSTILE_ODD_NAME,
    Gate,
    closed_port_url,
    demo_app,
    demo_sse_app,
    free_port,
    hang_app,
    hostile_app,
    html_app,
    leaky_app,
    serve_in_thread,
    slow_app,
    status_app,
    time_server_app,
    tools_app,
)

pytestmark = pytest.mark.anyio

CANARY = "canary-TOKEN-5f3a9"
DEMO_TOOLS = {"search_docs", "get_ticket", "create_ticket", "echo"}


def assert_failed(result: ProbeResult, kind: ErrorKind, status: int | None = None) -> None:
    assert not result.ok, result
    assert result.error_kind is kind, result.error
    assert result.error is not None and result.error.startswith(f"{kind.value}: ")
    assert "\n" not in result.error and len(result.error) < 400
    assert result.tools == () and result.tool_count == 0
    assert result.http_status == status


# --- the public surface -------------------------------------------------------------------


def test_public_api_is_exact_and_sorted() -> None:
    assert mcp_client.__all__ == sorted(mcp_client.__all__)
    assert set(mcp_client.__all__) == {
        "DEFAULT_INPUT_SCHEMA",
        "DEFAULT_MAX_MESSAGE_BYTES",
        "Endpoint",
        "ErrorKind",
        "MAX_DESCRIPTION_CHARS",
        "McpSession",
        "ProbeResult",
        "SessionPool",
        "ToolCallResult",
        "ToolInfo",
        "call_tool",
        "list_tools",
        "probe",
    }


def test_endpoint_repr_masks_header_values_and_url_secrets() -> None:
    ep = Endpoint(
        f"http://user:{CANARY}@127.0.0.1:9/mcp?key={CANARY}",
        headers={"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY},
    )
    for text in (repr(ep), str(ep), f"{ep}", repr(McpSession(ep))):
        assert CANARY not in text
    assert "'Authorization': '***'" in repr(ep) and "'X-Api-Key': '***'" in repr(ep)


def test_transport_auto_resolution() -> None:
    assert Endpoint("http://h/mcp").resolved_transport == "streamable-http"
    assert Endpoint("http://h/sse").resolved_transport == "sse"
    assert Endpoint("http://h/api/sse/").resolved_transport == "sse"
    assert Endpoint("http://h/sse", transport="streamable-http").resolved_transport == "streamable-http"


# --- probe: success with every auth style ------------------------------------------------------


async def test_probe_without_auth() -> None:
    with serve_in_thread(demo_app()) as srv:
        result = await probe(Endpoint(srv.url()))
    assert result.ok and result.error is None and result.error_kind is None and result.http_status is None
    assert result.tool_count == 4 and {t.name for t in result.tools} == DEMO_TOOLS
    assert (result.server_name, result.server_version) == ("concierge-demo", "1.0.0")
    assert result.protocol_version
    assert 0 < result.latency_ms < 5000
    search = next(t for t in result.tools if t.name == "search_docs")
    assert search.description.startswith("Search the product documentation")
    assert search.input_schema["type"] == "object"
    assert set(search.input_schema["properties"]) == {"query", "limit"}
    assert search.input_schema["required"] == ["query"]


@pytest.mark.parametrize(
    ("header", "headers"),
    [
        (None, {"Authorization": f"Bearer {CANARY}"}),
        ("X-Api-Key", {"X-Api-Key": CANARY}),
    ],
    ids=["bearer", "header"],
)
async def test_probe_with_auth(header: str | None, headers: dict[str, str]) -> None:
    with serve_in_thread(demo_app(token=CANARY, header=header)) as srv:
        ok = await probe(Endpoint(srv.url(), headers=headers))
        missing = await probe(Endpoint(srv.url()))
        wrong = await probe(Endpoint(srv.url(), headers={k: "wrong-token-xyz" for k in headers}))
    assert ok.ok and ok.tool_count == 4 and ok.server_name == "concierge-demo"
    assert CANARY not in repr(ok)
    for result in (missing, wrong):
        assert_failed(result, ErrorKind.UNAUTHORIZED, 401)
        assert "401" in (result.error or "") and "token" in (result.error or "")
    assert "wrong-token-xyz" not in (wrong.error or "")


# --- probe: classified failures ------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "kind", "status"),
    [
        (status_app(403), ErrorKind.FORBIDDEN, 403),
        (status_app(404), ErrorKind.NOT_FOUND, 404),
        (status_app(500), ErrorKind.SERVER_ERROR, 500),
        (status_app(503, body="busy", content_type="text/plain"), ErrorKind.SERVER_ERROR, 503),
        (status_app(405, body="", content_type="text/plain"), ErrorKind.NOT_MCP, 405),
        (html_app(), ErrorKind.NOT_MCP, None),
        (status_app(200, body='{"hello": "world"}'), ErrorKind.NOT_MCP, None),
    ],
    ids=["403", "404", "500", "503", "405", "html", "json-not-rpc"],
)
async def test_probe_classifies_http_answers(app, kind: ErrorKind, status: int | None) -> None:
    with serve_in_thread(app) as srv:
        result = await probe(Endpoint(srv.url(), connect_timeout=3))
    assert_failed(result, kind, status)


async def test_probe_html_page_says_what_it_got() -> None:
    with serve_in_thread(html_app()) as srv:
        result = await probe(Endpoint(srv.url()))
    assert_failed(result, ErrorKind.NOT_MCP)
    assert "text/html" in (result.error or "")


async def test_probe_wrong_path_is_not_found() -> None:
    with serve_in_thread(demo_app()) as srv:
        result = await probe(Endpoint(srv.url("/wrong")))
    assert_failed(result, ErrorKind.NOT_FOUND, 404)
    assert "/mcp" in (result.error or "")


async def test_probe_stopped_server_is_connection_refused() -> None:
    with serve_in_thread(demo_app()) as srv:
        url = srv.url()
    result = await probe(Endpoint(url, connect_timeout=3))
    assert_failed(result, ErrorKind.CONNECTION_REFUSED)
    assert result.error == f"connection_refused: nothing is listening at {url} — is the server running?"
    assert_failed(await probe(Endpoint(closed_port_url())), ErrorKind.CONNECTION_REFUSED)


async def test_probe_hanging_server_times_out_within_deadline() -> None:
    with serve_in_thread(hang_app()) as srv:
        start = time.monotonic()
        result = await probe(Endpoint(srv.url(), connect_timeout=1.0))
        elapsed = time.monotonic() - start
    assert_failed(result, ErrorKind.TIMEOUT)
    assert 0.9 <= elapsed < 2.0
    assert "within 1 s" in (result.error or "")


async def test_probe_slow_tool_listing_hits_the_same_deadline() -> None:
    with serve_in_thread(slow_app(1.5)) as srv:
        start = time.monotonic()
        result = await probe(Endpoint(srv.url(), connect_timeout=0.5))
        elapsed = time.monotonic() - start
    assert_failed(result, ErrorKind.TIMEOUT)
    assert elapsed < 1.5
    assert result.server_name == "slow-server"  # negotiation finished; only the listing was late


async def test_probe_dns_failure_is_fast_and_classified() -> None:
    start = time.monotonic()
    result = await probe(Endpoint("http://no-such-host.invalid/mcp", connect_timeout=3))
    assert_failed(result, ErrorKind.DNS)
    assert time.monotonic() - start < 4
    assert "no-such-host.invalid" in (result.error or "")


async def test_probe_https_to_plain_http_port_is_tls() -> None:
    with serve_in_thread(demo_app()) as srv:
        result = await probe(Endpoint(srv.url().replace("http://", "https://"), connect_timeout=3))
    assert_failed(result, ErrorKind.TLS)


# --- probe: tool listings --------------------------------------------------------------------


async def test_probe_collects_every_page() -> None:
    with serve_in_thread(tools_app(count=250, paginate_by=50)) as srv:
        result = await probe(Endpoint(srv.url()))
    assert result.ok and result.tool_count == 250
    assert [t.name for t in result.tools] == [f"tool_{i:04d}" for i in range(250)]


async def test_probe_page_cap_gives_too_many_tools() -> None:
    with serve_in_thread(tools_app(count=100, paginate_by=1)) as srv:
        capped = await probe(Endpoint(srv.url()), max_pages=5)
        enough = await probe(Endpoint(srv.url()), max_pages=100)
    assert_failed(capped, ErrorKind.TOO_MANY_TOOLS)
    assert "5 pages" in (capped.error or "")
    assert capped.server_name == "tools-server"
    assert enough.ok and enough.tool_count == 100


async def test_probe_endless_cursor_is_bounded() -> None:
    with serve_in_thread(tools_app(count=10, paginate_by=3, endless=True)) as srv:
        start = time.monotonic()
        result = await probe(Endpoint(srv.url()))
    assert_failed(result, ErrorKind.TOO_MANY_TOOLS)
    assert time.monotonic() - start < 5


async def test_probe_tool_cap_gives_too_many_tools() -> None:
    with serve_in_thread(tools_app(count=30)) as srv:
        result = await probe(Endpoint(srv.url()), max_tools=20)
    assert_failed(result, ErrorKind.TOO_MANY_TOOLS)
    assert "20 tools" in (result.error or "")


async def test_probe_a_thousand_tools() -> None:
    with serve_in_thread(tools_app(count=1000)) as srv:
        result = await probe(Endpoint(srv.url()))
    assert result.ok and result.tool_count == 1000 and len({t.name for t in result.tools}) == 1000


async def test_hostile_metadata_is_sanitized_and_capped() -> None:
    with serve_in_thread(hostile_app()) as srv:
        result = await probe(Endpoint(srv.url()))
    assert result.ok and result.tool_count == 4
    tools = {t.name: t for t in result.tools}
    huge = tools["huge_description"]
    assert len(huge.description) <= MAX_DESCRIPTION_CHARS < HOSTILE_HUGE_SIZE
    assert huge.description.endswith("…")
    for tool in result.tools:
        assert not any(ch < " " and ch not in "\n\t" for ch in tool.description), tool.name
        assert "\x7f" not in tool.description and "\u200b" not in tool.description
        assert tool.input_schema["type"] == "object"
    control = tools["control_chars"].description
    assert "[31m" not in control and "RED" in control
    assert HOSTILE_INJECTION in control  # kept as data; callers must treat descriptions as untrusted
    assert tools[HOSTILE_ODD_NAME].description == "Odd name."  # the OSC title escape is gone
    assert tools["no_description"].description == ""
    assert result.server_name == "hostile-server"  # the screen-clearing escape is gone


async def test_list_tools_returns_or_raises() -> None:
    with serve_in_thread(demo_app()) as srv:
        tools = await list_tools(Endpoint(srv.url()))
    assert {t.name for t in tools} == DEMO_TOOLS
    with pytest.raises(ConnectorError) as info:
        await list_tools(Endpoint(closed_port_url()))
    assert info.value.kind == ErrorKind.CONNECTION_REFUSED


# --- transports ------------------------------------------------------------------------------


async def test_sse_transport_probe_and_call() -> None:
    with serve_in_thread(demo_sse_app()) as srv:
        ep = Endpoint(srv.url("/sse"))
        result = await probe(ep)
        called = await call_tool(ep, "echo", {"text": "over sse"})
        async with McpSession(ep) as session:
            again = await session.call_tool("echo", {"text": "pooled sse"})
    assert result.ok and result.tool_count == 4 and result.server_name == "concierge-demo"
    assert called.text == "over sse" and again.text == "pooled sse"


async def test_sse_wrong_token_is_unauthorized() -> None:
    with serve_in_thread(demo_app(token=CANARY)) as srv:
        result = await probe(Endpoint(srv.url("/sse"), headers={"Authorization": "Bearer nope-nope"}))
    assert_failed(result, ErrorKind.UNAUTHORIZED, 401)


# --- call_tool (one-shot) -----------------------------------------------------------------------


async def test_call_tool_success_with_structured_content() -> None:
    with serve_in_thread(demo_app(token=CANARY)) as srv:
        ep = Endpoint(srv.url(), headers={"Authorization": f"Bearer {CANARY}"})
        created = await call_tool(ep, "create_ticket", {"title": "Printer on fire", "body": "Help", "priority": "high"})
        search = await call_tool(ep, "search_docs", {"query": "token", "limit": 2})
    assert not created.is_error
    assert created.structured_content is not None
    assert created.structured_content["priority"] == "high" and created.structured_content["id"].startswith("T-")
    assert created.content[0]["type"] == "text" and "Printer on fire" in created.text
    assert search.structured_content is not None and len(search.structured_content["hits"]) <= 2
    assert 0 < search.latency_ms < 5000


async def test_call_tool_error_is_a_result_not_an_exception() -> None:
    with serve_in_thread(demo_app()) as srv:
        missing = await call_tool(Endpoint(srv.url()), "get_ticket", {"ticket_id": "T-0"})
        unknown = await call_tool(Endpoint(srv.url()), "no_such_tool", {})
    assert missing.is_error and "No ticket" in missing.text and missing.structured_content is None
    assert unknown.is_error and "no_such_tool" in unknown.text


async def test_call_tool_times_out_at_call_timeout() -> None:
    with serve_in_thread(slow_app(0, call_delay_s=1.2)) as srv:
        start = time.monotonic()
        with pytest.raises(ConnectorError) as info:
            await call_tool(Endpoint(srv.url(), call_timeout=0.5), "slow_echo", {"text": "x"})
        elapsed = time.monotonic() - start
    assert info.value.kind == ErrorKind.TIMEOUT and "within 0.5 s" in str(info.value)
    assert elapsed < 1.2


async def test_call_tool_transport_failure_raises() -> None:
    with pytest.raises(ConnectorError) as info:
        await call_tool(Endpoint(closed_port_url()), "echo", {"text": "x"})
    assert info.value.kind == ErrorKind.CONNECTION_REFUSED
    with serve_in_thread(demo_app(token=CANARY)) as srv:
        with pytest.raises(ConnectorError) as info:
            await call_tool(Endpoint(srv.url(), headers={"Authorization": "Bearer bad-bad"}), "echo", {"text": "x"})
    assert info.value.kind == ErrorKind.UNAUTHORIZED and info.value.http_status == 401


# --- McpSession ------------------------------------------------------------------------------


async def test_session_is_reused_from_many_tasks() -> None:
    with serve_in_thread(demo_app(token=CANARY)) as srv:
        session = McpSession(Endpoint(srv.url(), headers={"Authorization": f"Bearer {CANARY}"}))
        results: dict[int, str] = {}

        async def opener() -> None:  # opened in one task ...
            await session.open()

        async def caller(i: int) -> None:  # ... used from others, concurrently
            results[i] = (await session.call_tool("echo", {"text": f"call {i}"})).text

        async with anyio.create_task_group() as tg:
            tg.start_soon(opener)
        assert not session.closed and session.server_name == "concierge-demo"
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(caller, i)
        tools = await session.list_tools()
        tool_error = await session.call_tool("get_ticket", {"ticket_id": "T-404"})
        assert not session.closed  # a tool error is an answer, not a broken session

        async with anyio.create_task_group() as tg:  # ... and closed from yet another
            tg.start_soon(session.aclose)
        await session.aclose()  # idempotent
    assert results == {i: f"call {i}" for i in range(12)}
    assert {t.name for t in tools} == DEMO_TOOLS
    assert tool_error.is_error
    assert session.closed
    with pytest.raises(ConnectorError):
        await session.call_tool("echo", {"text": "after close"})


async def test_session_closes_when_the_server_starts_failing() -> None:
    gate = Gate(demo_app())
    with serve_in_thread(gate) as srv:
        async with McpSession(Endpoint(srv.url())) as session:
            assert (await session.call_tool("echo", {"text": "a"})).text == "a"
            gate.status = 503
            with pytest.raises(ConnectorError) as info:
                await session.call_tool("echo", {"text": "b"})
            assert info.value.kind == ErrorKind.SERVER_ERROR and info.value.http_status == 503
            assert session.closed
            gate.status = None
            with pytest.raises(ConnectorError) as info:
                await session.call_tool("echo", {"text": "c"})
            assert "closed" in str(info.value)


async def test_session_after_server_restart_on_same_port() -> None:
    with serve_in_thread(factory=demo_app) as srv:
        ep = Endpoint(srv.url(), connect_timeout=3)
        async with McpSession(ep) as session:
            assert (await session.call_tool("echo", {"text": "before"})).text == "before"
            # The 2026-07-28 protocol is sessionless over streamable HTTP: a quick restart is invisible.
            srv.restart()
            assert (await session.call_tool("echo", {"text": "restarted"})).text == "restarted"
            # While the server is down the session breaks and says so ...
            srv.stop()
            with pytest.raises(ConnectorError) as info:
                await session.call_tool("echo", {"text": "down"})
            assert info.value.kind == ErrorKind.CONNECTION_REFUSED
            assert session.closed
            srv.start()
            # ... and stays closed (a pool must reconnect) ...
            with pytest.raises(ConnectorError):
                await session.call_tool("echo", {"text": "still closed"})
        # ... while a new session to the same port works.
        async with McpSession(ep) as fresh:
            assert (await fresh.call_tool("echo", {"text": "fresh"})).text == "fresh"
        assert srv.port == int(ep.url.rsplit(":", 1)[1].split("/")[0])


async def test_session_open_failures() -> None:
    with pytest.raises(ConnectorError) as info:
        await McpSession(Endpoint(closed_port_url())).open()
    assert info.value.kind == ErrorKind.CONNECTION_REFUSED

    with serve_in_thread(demo_app(token=CANARY)) as srv:
        session = McpSession(Endpoint(srv.url(), headers={"Authorization": "Bearer not-it-123"}))
        with pytest.raises(ConnectorError) as info:
            await session.open()
        assert info.value.kind == ErrorKind.UNAUTHORIZED and info.value.http_status == 401
        assert session.closed
        await session.aclose()

    with serve_in_thread(hang_app()) as srv:
        start = time.monotonic()
        with pytest.raises(ConnectorError) as info:
            async with McpSession(Endpoint(srv.url(), connect_timeout=1.0)):
                pass  # pragma: no cover
        assert info.value.kind == ErrorKind.TIMEOUT
        assert time.monotonic() - start < 2.0


async def test_session_call_timeout_keeps_the_session() -> None:
    with serve_in_thread(slow_app(0, call_delay_s=1.2)) as srv:
        async with McpSession(Endpoint(srv.url(), call_timeout=0.5)) as session:
            start = time.monotonic()
            with pytest.raises(ConnectorError) as info:
                await session.call_tool("slow_echo", {"text": "x"})
            assert time.monotonic() - start < 1.2
            assert info.value.kind == ErrorKind.TIMEOUT and info.value.delivered
            assert str(info.value).count("timeout") == 1
            # A slow answer is not a broken transport: the pooled session stays usable.
            assert not session.closed
            assert (await session.list_tools())[0].name == "slow_echo"


# --- a third-party server ---------------------------------------------------------------------


async def test_mcp_server_time_package() -> None:
    with serve_in_thread(time_server_app()) as srv:
        ep = Endpoint(srv.url())
        result = await probe(ep)
        now = await call_tool(ep, "get_current_time", {"timezone": "Europe/Paris"})
        bad = await call_tool(ep, "get_current_time", {"timezone": "Mars/Olympus_Mons"})
    assert result.ok and result.server_name == "mcp-time"
    assert {t.name for t in result.tools} == {"get_current_time", "convert_time"}
    assert not now.is_error and now.structured_content is not None
    assert now.structured_content["timezone"] == "Europe/Paris" and "T" in now.structured_content["datetime"]
    assert bad.is_error and "Invalid timezone" in bad.text


# --- secrets ---------------------------------------------------------------------------------


async def test_header_values_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bearer = {"Authorization": f"Bearer {CANARY}"}
    texts: list[str] = []
    with serve_in_thread(leaky_app()) as srv:  # a server that echoes our headers in its errors
        leaky = await probe(Endpoint(srv.url(), headers={"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY}))
        assert_failed(leaky, ErrorKind.PROTOCOL, 400)
        assert "authorization=***" in (leaky.error or "")
        texts.append(repr(leaky))
        with pytest.raises(ConnectorError) as info:
            await call_tool(Endpoint(srv.url(), headers=bearer), "echo", {"text": "x"})
        texts += [str(info.value), repr(info.value), info.value.detail]
    with serve_in_thread(demo_app(token="the-real-token")) as srv:
        texts.append(repr(await probe(Endpoint(srv.url(), headers=bearer))))
        texts.append(repr(await probe(Endpoint(srv.url("/sse"), headers=bearer))))
    for ep in (
        Endpoint(closed_port_url(), headers=bearer),
        Endpoint("http://no-such-host.invalid/mcp", headers={"X-Api-Key": CANARY}),
    ):
        texts.append(repr(await probe(ep)))
        with pytest.raises(ConnectorError) as info:
            await McpSession(ep).open()
        texts.append(str(info.value))
    texts.append(caplog.text)
    for text in texts:
        assert CANARY not in text


# --- the demo server as the CLI runs it ------------------------------------------------------


async def test_run_demo_server_in_a_subprocess() -> None:
    port = free_port()
    code = (
        "from concierge.demo_server import run_demo_server; "
        f"run_demo_server(port={port}, token={CANARY!r}, header='X-Api-Key')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    try:
        assert proc.stdout is not None
        line = await anyio.to_thread.run_sync(proc.stdout.readline)
        assert line.strip() == f"Demo MCP server on http://127.0.0.1:{port}/mcp (auth: header X-Api-Key)"
        ep = Endpoint(f"http://127.0.0.1:{port}/mcp", headers={"X-Api-Key": CANARY}, connect_timeout=2)
        result = await probe(ep)
        for _ in range(50):  # uvicorn may bind a moment after the banner is printed
            if result.ok:
                break
            await anyio.sleep(0.1)
            result = await probe(ep)
        assert result.ok and result.tool_count == 4
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
