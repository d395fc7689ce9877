"""A test MCP server that uses every feature the gateway must pass through.

Not a test module. ``Rich`` is its live, mutable state; ``rich_app(state)`` builds a fresh app
(the SDK's low-level ``Server`` over streamable HTTP at ``/mcp``) around it.

Tools: ``lookup`` (title, annotations, outputSchema, icons, ``_meta``; answers structured
content plus text, image, resource link and embedded resource blocks), ``reset`` (destructive),
``slow_progress`` (reports progress), ``long_task`` (task support required), ``count`` (not
idempotent: counts its executions), ``blob`` (a text of ``size`` bytes), ``hang`` (until
cancelled), ``announce`` (tells clients its tool list changed).
Resources ``res://readme`` and template ``res://docs/{name}``; prompt ``greet``.

``json_response=True`` answers plain JSON instead of SSE. ``legacy_only=True`` refuses ``server/discover``, so clients fall back to ``initialize``
sessions; the state counts sessions opened (``initialize``) and closed (``DELETE``).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged

from tests.mcp_servers import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LOOKUP_DEFINITION", "Rich", "rich_app"]

LOOKUP_DEFINITION: dict[str, Any] = {
    "name": "lookup",
    "title": "Look something up",
    "description": "Look up an answer.",
    "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    "outputSchema": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    "annotations": {"title": "Lookup", "readOnlyHint": True, "openWorldHint": False},
    "icons": [{"src": "https://icons.example.invalid/lookup.png", "mimeType": "image/png"}],
    "_meta": {"vendor.example/tier": "gold"},
}
PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


@dataclass
class Rich:
    legacy_only: bool = False
    list_delay: float = 0.0
    executions: int = 0
    count_delay: float = 0.0
    cancelled: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    deletes: int = 0
    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def sessions_opened(self) -> int:
        return self.methods["initialize"]


def _tools() -> list[types.Tool]:
    text_schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    return [
        types.Tool.model_validate(LOOKUP_DEFINITION),
        types.Tool(name="reset", description="Throw everything away.", input_schema=text_schema,
                   annotations=types.ToolAnnotations(destructive_hint=True, idempotent_hint=False)),
        types.Tool(name="slow_progress", description="Work in steps, reporting progress.",
                   input_schema={"type": "object", "properties": {"steps": {"type": "integer"},
                                                                  "delay": {"type": "number"}}}),
        types.Tool(name="long_task", description="Needs a task.", input_schema=text_schema,
                   execution=types.ToolExecution(task_support="required")),
        types.Tool(name="count", description="Count one execution (not idempotent).", input_schema=text_schema),
        types.Tool(name="blob", description="A text of `size` bytes.",
                   input_schema={"type": "object", "properties": {"size": {"type": "integer"}}}),
        types.Tool(name="hang", description="Never answers.", input_schema=text_schema),
        types.Tool(name="announce", description="Say the tool list changed.", input_schema=text_schema),
    ]


def rich_app(state: Rich, *, name: str = "rich", json_response: bool = False) -> ASGIApp:
    tools = _tools()

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        await anyio.sleep(state.list_delay)
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = dict(params.arguments or {})
        if params.name == "lookup":
            return types.CallToolResult(
                content=[
                    types.TextContent(type="text", text=json.dumps({"answer": "42"})),
                    types.ImageContent(type="image", data=PNG_1PX, mime_type="image/png"),
                    types.ResourceLink(type="resource_link", uri="res://linked/report", name="report",
                                       mime_type="text/plain"),
                    types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
                        uri="res://readme", mime_type="text/plain", text="Read me.")),
                ],
                structured_content={"answer": "42"}, _meta={"vendor.example/cost": 3})
        if params.name == "slow_progress":
            steps, delay = int(args.get("steps", 3)), float(args.get("delay", 0.05))
            for i in range(steps):
                await anyio.sleep(delay)
                await ctx.session.report_progress(i + 1, steps, f"step {i + 1}")
            return types.CallToolResult(content=[types.TextContent(type="text", text=f"done after {steps}")])
        if params.name == "count":
            with state._lock:
                state.executions += 1
                n = state.executions
            await anyio.sleep(state.count_delay)
            return types.CallToolResult(content=[types.TextContent(type="text", text=f"execution {n}")])
        if params.name == "blob":
            return types.CallToolResult(content=[types.TextContent(type="text", text="x" * int(args["size"]))])
        if params.name == "hang":
            try:
                await anyio.sleep(60)
            except anyio.get_cancelled_exc_class():
                with state._lock:
                    state.cancelled += 1
                raise
        if params.name == "announce":
            await state.bus.publish(ToolsListChanged())
            await ctx.session.send_tool_list_changed()
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"{params.name} ok")])

    async def on_list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[types.Resource(
            uri="res://readme", name="readme", title="Read me", mime_type="text/plain")])

    async def on_list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            uri_template="res://docs/{name}", name="doc", mime_type="text/plain")])

    async def on_read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        text = {"res://readme": "Read me."}.get(uri, f"contents of {uri}")
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type="text/plain",
                                                                               text=text)])

    async def on_list_prompts(ctx: Any, params: Any) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[types.Prompt(
            name="greet", description="Greet someone.",
            arguments=[types.PromptArgument(name="who", required=True)])])

    async def on_get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        who = (params.arguments or {}).get("who", "you")
        return types.GetPromptResult(messages=[types.PromptMessage(
            role="user", content=types.TextContent(type="text", text=f"Hello, {who}!"))])

    server = Server(name, version="2.0", instructions="Rich server instructions: ask lookup first.",
                    on_list_tools=on_list_tools, on_call_tool=on_call_tool, on_list_resources=on_list_resources,
                    on_list_resource_templates=on_list_templates, on_read_resource=on_read_resource,
                    on_list_prompts=on_list_prompts, on_get_prompt=on_get_prompt,
                    on_subscriptions_listen=ListenHandler(state.bus))
    app = server.streamable_http_app(streamable_http_path="/mcp", json_response=json_response)
    return _Counting(app, state)


class _Counting:
    """Pure ASGI: counts JSON-RPC methods and DELETEs; refuses server/discover if legacy_only."""

    def __init__(self, app: ASGIApp, state: Rich) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "DELETE":
            with self.state._lock:
                self.state.deletes += 1
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False) and message["type"] == "http.request"
        body = b"".join(chunks)
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        method = data.get("method") if isinstance(data, dict) else None
        if isinstance(method, str):
            with self.state._lock:
                self.state.methods[method] += 1
        if method == "server/discover" and self.state.legacy_only:
            answer = json.dumps({"jsonrpc": "2.0", "id": data.get("id"),
                                 "error": {"code": -32601, "message": "Method not found"}}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(answer)).encode())]})
            await send({"type": "http.response.body", "body": answer})
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
