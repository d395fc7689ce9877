"""The gateway as a faithful MCP proxy: a real upstream that uses every feature (``rich_app``),
`concierge gateway`'s app in this event loop, and the mcp SDK's own Client in both protocol eras."""

from __future__ import annotations

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from concierge.gateway_server import build_gateway_app
from tests.catalog_fixtures import register, serve_here, serve_upstream, Upstream
from tests.mcp_servers import LOOKUP_DEFINITION, Rich, rich_app, serve_in_thread

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]  # the 2026-07-28 stateless protocol, and initialize sessions


def _served(state: Rich):
    return serve_in_thread(factory=lambda: rich_app(state))


@pytest.mark.parametrize("mode", MODES)
async def test_tool_definitions_and_results_pass_through(backend, mode: str) -> None:
    state = Rich(legacy_only=mode == "legacy")  # the upstream speaks the same era as the client
    with _served(state) as up:
        sid = await register(backend.registry, up.url(), "rich")
        backend.registry.create_agent({"slug": "bot"})
        async with Client(up.url(), mode=mode) as direct:
            upstream = {t.name: t for t in (await direct.list_tools()).tools}
            direct_result = await direct.call_tool("lookup", {"q": "x"})
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp", mode=mode) as client:
            assert (client.protocol_version in MODERN_PROTOCOL_VERSIONS) == (mode == "auto")
            listed = {t.name: t for t in (await client.list_tools()).tools}
            # every field of the definition, under the namespaced name
            for field in ("title", "annotations", "output_schema", "icons", "meta", "input_schema", "description"):
                assert getattr(listed["rich_lookup"], field) == getattr(upstream["lookup"], field), field
            assert listed["rich_lookup"].annotations.read_only_hint is True
            assert listed["rich_reset"].annotations.destructive_hint is True
            trace = (await backend.agent_tools("bot")).trace
            if mode == "legacy":  # 2025-11-25: a tool that needs a task is left out, the reason in the trace
                assert "rich_long_task" not in listed and state.sessions_opened >= 1
                assert {"name": "rich_long_task", "source_id": sid, "original_name": "long_task",
                        "reason": "task_required"} in trace.tools_left_out
            else:  # 2026-07-28 has no tasks: the server lists it as a plain tool, and it works
                assert (await client.call_tool("rich_long_task", {})).content[0].text == "long_task ok"

            result = await client.call_tool("rich_lookup", {"q": "x"})
            assert result.structured_content == {"answer": "42"} == direct_result.structured_content
            assert [type(c) for c in result.content] == [type(c) for c in direct_result.content] == [
                types.TextContent, types.ImageContent, types.ResourceLink, types.EmbeddedResource]
            assert result.content == direct_result.content
            assert result.meta.get("vendor.example/cost") == 3  # the result's own _meta passes through
            if mode == "auto":  # stamped by the gateway, not copied from the upstream
                assert result.meta["io.modelcontextprotocol/serverInfo"]["name"] == "concierge-gateway"
            assert "Rich server instructions" in (client.instructions or "")
            assert LOOKUP_DEFINITION["_meta"] == listed["rich_lookup"].meta


@pytest.mark.parametrize("mode", MODES)
async def test_progress_reaches_the_client_and_keeps_a_long_call_alive(backend, mode: str) -> None:
    state = Rich()
    with _served(state) as up:
        await register(backend.registry, up.url(), "rich", call_timeout=0.6)
        backend.registry.create_agent({"slug": "bot"})
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            seen.append((value, total, message))

        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp", mode=mode) as client:
            # 6 steps x 0.25 s = 1.5 s, well past the 0.6 s call_timeout: progress pushes it back
            result = await client.call_tool("rich_slow_progress", {"steps": 6, "delay": 0.25},
                                            progress_callback=on_progress)
        assert not result.is_error and result.content[0].text == "done after 6"
        assert seen == [(i, 6, f"step {i}") for i in range(1, 7)]


async def test_cancellation_reaches_the_upstream(backend) -> None:
    state = Rich()
    with _served(state) as up:
        await register(backend.registry, up.url(), "rich")
        backend.registry.create_agent({"slug": "bot"})
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp") as client:
            with anyio.move_on_after(0.5):
                await client.call_tool("rich_hang", {})
            with anyio.fail_after(5):
                while state.cancelled == 0:
                    await anyio.sleep(0.02)
            assert (await client.call_tool("rich_count", {})).content[0].text == "execution 1"  # still fine
        assert state.cancelled == 1


@pytest.mark.parametrize("mode", MODES)
async def test_resources_and_prompts_are_federated_under_the_allowlists(backend, mode: str) -> None:
    state, other = Rich(), Upstream(tools=[("echo", "Echo.")])
    with _served(state) as up, serve_upstream(other) as o:
        sid = await register(backend.registry, up.url(), "rich")
        await register(backend.registry, o.url(), "plain")
        backend.registry.create_agent({"slug": "bot"})
        backend.registry.create_agent({"slug": "narrow", "tool_allowlist": ["rich_lookup", "rich_greet"]})
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp", mode=mode) as client:
            resources = (await client.list_resources()).resources
            assert [(r.name, str(r.uri), r.title) for r in resources] == [("rich_readme", "res://readme", "Read me")]
            templates = (await client.list_resource_templates()).resource_templates
            assert [(t.name, t.uri_template) for t in templates] == [("rich_doc", "res://docs/{name}")]
            read = await client.read_resource("res://readme")
            assert read.contents[0].text == "Read me."
            by_template = await client.read_resource("res://docs/intro")
            assert by_template.contents[0].text == "contents of res://docs/intro"
            linked = await client.call_tool("rich_lookup", {"q": "x"})
            link = next(c for c in linked.content if isinstance(c, types.ResourceLink))
            followed = await client.read_resource(str(link.uri))  # a link from a result can be followed
            assert followed.contents[0].text == "contents of res://linked/report"
            prompts = (await client.list_prompts()).prompts
            assert [p.name for p in prompts] == ["rich_greet"]
            got = await client.get_prompt("rich_greet", {"who": "Ada"})
            assert got.messages[0].content.text == "Hello, Ada!"
        async with serve_here(build_gateway_app(backend, agent="narrow")) as base, \
                Client(f"{base}/mcp", mode=mode) as client:
            assert [p.name for p in (await client.list_prompts()).prompts] == ["rich_greet"]
            assert (await client.list_resources()).resources == []  # rich_readme is not in the allowlist
            with pytest.raises(Exception, match="no resource"):
                await client.read_resource("res://readme")
        await backend.registry.update(sid, {"allowed_tools": ["lookup"]})  # the source's allowlist applies too
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp", mode=mode) as client:
            assert (await client.list_prompts()).prompts == []
            assert (await client.list_resources()).resources == []


async def test_list_changed_reaches_connected_clients_of_both_eras(backend) -> None:
    state = Rich()
    legacy_heard: list[str] = []

    async def on_message(message) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            legacy_heard.append("tools")

    with _served(state) as up:
        sid = await register(backend.registry, up.url(), "rich")
        backend.registry.create_agent({"slug": "bot"})
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp", mode="legacy", message_handler=on_message) as legacy, \
                Client(f"{base}/mcp") as modern:
            assert legacy.server_capabilities.tools.list_changed is True
            assert modern.server_capabilities.tools.list_changed is True
            assert len((await legacy.list_tools()).tools) == 8
            async with modern.listen(tools_list_changed=True) as sub:
                backend.registry.pause(sid)  # `concierge source pause`
                with anyio.fail_after(5):
                    event = await sub.__anext__()
                assert type(event).__name__ == "ToolsListChanged"
                with anyio.fail_after(5):
                    while not legacy_heard:
                        await anyio.sleep(0.02)
                assert (await legacy.list_tools()).tools == []  # the refetch shows the change
                await backend.registry.resume(sid)
                with anyio.fail_after(5):
                    await sub.__anext__()
                legacy_heard.clear()
                # an upstream that announces a change: its listing is dropped and clients told
                await modern.call_tool("rich_announce", {})
                with anyio.fail_after(5):
                    await sub.__anext__()
                    while not legacy_heard:
                        await anyio.sleep(0.02)


async def test_a_change_made_by_another_process_reaches_connected_clients(backend, monkeypatch) -> None:
    import concierge.gateway_server as gateway_server
    from concierge.registry import Registry

    monkeypatch.setattr(gateway_server, "WATCH_INTERVAL", 0.1)
    state = Rich()
    with _served(state) as up:
        sid = await register(backend.registry, up.url(), "rich")
        backend.registry.create_agent({"slug": "bot"})
        heard: list[object] = []

        async def on_message(message) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                heard.append(message)

        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp", mode="legacy", message_handler=on_message) as client:
            assert len((await client.list_tools()).tools) == 8
            await anyio.sleep(0.3)  # the watcher has taken its first look
            other = Registry.open(backend.registry.store.path.parent)  # as `concierge source pause` would
            try:
                other.pause(sid)
            finally:
                other.close()
            with anyio.fail_after(5):
                while not heard:
                    await anyio.sleep(0.02)
            assert (await client.list_tools()).tools == []
            assert backend.gateway.pooled(sid) is None  # its session was dropped too


async def test_a_third_party_server_passes_through_unchanged(backend) -> None:
    from tests.mcp_servers import time_server_app

    with serve_in_thread(factory=time_server_app) as up:  # PyPI mcp-server-time, an MCPServer
        await register(backend.registry, up.url(), "time")
        backend.registry.create_agent({"slug": "bot"})
        async with Client(up.url()) as direct:
            upstream = {t.name: t for t in (await direct.list_tools()).tools}
        async with serve_here(build_gateway_app(backend, agent="bot")) as base, \
                Client(f"{base}/mcp", mode="legacy") as client:
            listed = {t.name.removeprefix("time_"): t for t in (await client.list_tools()).tools}
            assert listed.keys() == upstream.keys()
            for name, tool in upstream.items():
                assert listed[name].model_dump(exclude={"name"}) == tool.model_dump(exclude={"name"}), name
            result = await client.call_tool("time_get_current_time", {"timezone": "UTC"})
            assert not result.is_error and result.structured_content["timezone"] == "UTC"
