"""The pass-through lane of an agent's MCP face: ``tools/call`` forwarded as one HTTP POST.

A reverse proxy for the hot path, and nothing more: it reads only the JSON-RPC envelope. The
mcp SDK remains the only code that establishes sessions, discovers, lists and handles every
other message (`concierge.gateway_server`); the lane takes a request only when all of this holds,
and hands anything else, untouched, to the SDK's handler:

    the request   a POST in the stateless 2026-07-28 era (``MCP-Protocol-Version`` a modern
                  version, no ``Mcp-Session-Id``, no ``Mcp-Param-*``, ``Mcp-Method: tools/call``),
                  one JSON-RPC request (no batch) that the SDK's own checks accept (transport
                  security, Accept, Content-Type, body limit, the routing-header ladder)
    the policy    every check of the SDK path passes (`Gateway.admit`: agent active, its
                  tool_sources and tool_allowlist, the source active, allowed_tools, held tools;
                  then the source's concurrency slot and rate cap); a refusal is answered by the
                  SDK path, so the client sees the very same error result
    the upstream  the source's pooled session is open, stateless streamable HTTP at the
                  client's protocol version, without an OAuth flow (`McpSession.lane_http`)

The request is then POSTed to the upstream on the session's `LaneWire` (its own kept-alive
connections, dialled by the session's pinned backend under its URL policy, with its client's
headers and size cap; through its httpx2 client when the server set cookies) with only
``params.name`` rewritten to the server's own tool name; the ``id`` and ``_meta`` (progress token included) are the client's.
The answer streams back as it comes (JSON, or SSE: progress and other notifications pass
through untouched and push the call's deadline back); the result's ``_meta`` serverInfo stamp
is the gateway's, as on the SDK path. A client that disconnects closes the upstream request
(the 2026-07-28 way to cancel). A failure after the request left is the SDK path's error result.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
import httpx2
import mcp_types as types
from mcp_types import SERVER_INFO_META_KEY, ErrorData, JSONRPCResponse
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request, encode_header_value
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from concierge.errors import ConciergeError, RateLimited
from concierge.mcp_client.lane_wire import LaneWire, WireResponse

if TYPE_CHECKING:
    from concierge.mcp_client.session import McpSession
    from concierge.registry.catalog_models import CatalogTool
    from concierge.registry.gateway import Gateway
    from concierge.registry.models import SourceView

__all__ = ["FastLane"]

log = logging.getLogger("concierge.gateway_lane")

ASGIHandler = Callable[[Scope, Receive, Send], Awaitable[None]]
_SSE_HEADERS: Final = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache, no-transform"),
                       (b"connection", b"keep-alive"), (b"x-accel-buffering", b"no")]
_ENVELOPE_KEYS: Final = frozenset({"jsonrpc", "id", "method", "params"})
_PARAM_KEYS: Final = frozenset({"name", "arguments", "_meta"})
_MODERN: Final = frozenset(v.encode() for v in MODERN_PROTOCOL_VERSIONS)
_LADDER_HEADERS: Final = (b"mcp-protocol-version", b"mcp-method", b"mcp-name")
"""What the SDK's routing-header ladder (`classify_inbound_request`) reads."""
_UNIQUE_HEADERS: Final = frozenset({b"mcp-protocol-version", b"mcp-method"})
_READ_HEADERS: Final = frozenset({*_LADDER_HEADERS, b"accept", b"content-type", b"host", b"origin",
                                  b"content-length"})
_UPSTREAM_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                            "mcp-method": "tools/call"}


class _Refer(Exception):
    """The request is the SDK path's to answer."""


@dataclass
class _Call:
    request_id: int | str
    version: str
    name: str
    envelope: dict[str, Any]


class _Answered:
    """Whether the client's response has started (then only an SSE event can follow)."""

    def __init__(self) -> None:
        self.started = False


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _CallGuard:
    """A forwarded call's deadline and its client's going away, on one timer per call.

    The task serving the call is cancelled when the deadline passes (``expired``: then it
    answers the SDK path's timeout) or when the client disconnects (``gone``: then it ends
    quietly, and closing the upstream request is the 2026-07-28 cancellation). A call that
    answers within `WATCH_AFTER` seconds (nearly all of them) costs one timer, set and
    cancelled; only a longer one starts a task that watches ``receive`` and the deadline.
    ``reset()`` (progress from the server) pushes the deadline back.
    """

    WATCH_AFTER: Final = 0.1

    def __init__(self, seconds: float, receive: Receive) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._seconds, self._receive = seconds, receive
        self._expires = self._loop.time() + seconds
        self._watch: asyncio.Task[None] | None = None
        self._closed = False
        self.reason: str | None = None
        self._timer = self._loop.call_at(min(self._expires, self._loop.time() + self.WATCH_AFTER), self._start)

    def reset(self) -> None:
        self._expires = self._loop.time() + self._seconds

    @property
    def expired(self) -> bool:
        return self.reason == "expired"

    def caught(self) -> bool:
        """In an ``except CancelledError``: whether the cancellation is this guard's own (and
        nothing else asked for one), which the caller then handles instead of re-raising."""
        return self.reason is not None and self._task is not None and self._task.uncancel() == 0

    def _start(self) -> None:
        self._watch = self._loop.create_task(self._watching())

    async def _watching(self) -> None:
        gone = self._loop.create_task(_disconnected(self._receive))
        try:
            while True:
                left = self._expires - self._loop.time()
                if left <= 0:
                    return self._fire("expired")
                done, _ = await asyncio.wait((gone,), timeout=left)
                if done:
                    return self._fire("gone")
        finally:
            gone.cancel()

    def _fire(self, reason: str) -> None:
        if self.reason is None and not self._closed and self._task is not None:
            self.reason = reason
            self._task.cancel()

    def close(self) -> None:
        """The call is over (answered, or about to answer its failure): nothing fires after this."""
        self._closed = True
        self._timer.cancel()
        if self._watch is not None:
            self._watch.cancel()


def _sse_event(data: str) -> bytes:
    return f"event: message\r\ndata: {data}\r\n\r\n".encode()


def _declares_headers(tool: CatalogTool) -> bool:
    """Whether the tool's input schema maps arguments to ``Mcp-Param-*`` headers (the SDK
    validates and writes those; the lane leaves such tools to it)."""
    return "x-mcp-header" in json.dumps(tool.input_schema)


def _head_of(http: httpx2.AsyncClient, url: httpx2.URL) -> tuple[bytes, bool]:
    """The request line and the headers every lane POST through ``http`` starts with (those
    ``build_request`` merges: the client's, its credentials among them, and the MCP ones; not
    ``accept-encoding``: the answer is relayed as sent), and whether they can be written as they are."""
    merged = httpx2.Headers(http.headers)
    merged.update(_UPSTREAM_HEADERS)
    pairs = [(b"host", httpx2.Request("POST", url).headers["host"].encode("latin-1"))]
    pairs += [(k, v) for k, v in merged.raw if k.lower() not in (b"host", b"content-length", b"accept-encoding")]
    head = b"POST %s HTTP/1.1\r\n" % url.raw_path + b"".join(b"%s: %s\r\n" % pair for pair in pairs)
    return head, LaneWire.headers_ok(pairs)


class FastLane:
    """The lane of one MCP face; ``handle(scope, receive, send, sdk)`` serves a request or gives
    it to ``sdk`` (the SDK's handler). ``enabled=False`` sends everything to the SDK."""

    def __init__(self, face: Any, gateway: Gateway, *, security: TransportSecuritySettings | None,
                 max_body: int, enabled: bool = True) -> None:
        self.face, self.gateway, self.max_body, self.enabled = face, gateway, max_body, enabled
        self._security = TransportSecurityMiddleware(security)
        self._declares: dict[int, tuple[CatalogTool, bool]] = {}
        self._verdicts: dict[tuple[bytes | None, ...], bool] = {}
        self._bases: dict[int, tuple[httpx2.AsyncClient, httpx2.URL, bytes, bool]] = {}
        self.served = 0
        """Requests the lane answered (for tests and the bench)."""

    @functools.cached_property
    def _stamp(self) -> dict[str, Any]:
        """The gateway's serverInfo stamp (fixed when its server is made; a copy of the SDK's,
        taken once: it is only ever serialized here, never changed)."""
        return self.face.server.server_info_stamp

    # -- taking the request -------------------------------------------------------------------

    def _wanted(self, scope: Scope) -> dict[bytes, bytes] | None:
        """The cheap look at the headers: a stateless-era ``tools/call`` POST without a session.
        Its headers that the checks read (the first of each name, as starlette reads them), or None."""
        if not self.enabled or scope["type"] != "http" or scope["method"] != "POST":
            return None
        seen: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            if key in _READ_HEADERS:
                if key in seen:
                    if key in _UNIQUE_HEADERS:
                        return None
                    continue
                seen[key] = value
            elif key == b"mcp-session-id" or key.startswith(b"mcp-param-"):
                return None
        if seen.get(b"mcp-method") != b"tools/call" or seen.get(b"mcp-protocol-version") not in _MODERN:
            return None
        return seen

    async def _sdk_accepts(self, scope: Scope, seen: dict[bytes, bytes]) -> bool:
        """Whether the SDK's own header checks pass (Accept; transport security: Content-Type,
        Host, Origin). They read only those headers, so a verdict is kept per combination."""
        key = (seen.get(b"accept"), seen.get(b"content-type"), seen.get(b"host"), seen.get(b"origin"))
        verdict = self._verdicts.get(key)
        if verdict is None:
            request = Request(scope)
            has_json, has_sse = check_accept_headers(request)
            verdict = has_json and has_sse and await self._security.validate_request(request, is_post=True) is None
            if len(self._verdicts) > 256:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    async def _body(self, seen: dict[bytes, bytes], receive: Receive) -> tuple[bytes | None, Receive]:
        """The whole body (None: over the limit or cut short) and a ``receive`` that replays it."""
        chunks: list[bytes] = []
        size, complete, trailing = 0, False, None
        declared = seen.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return None, receive
        while size <= self.max_body:
            message = await receive()
            if message["type"] != "http.request":
                trailing = message
                break
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                complete = True
                break
        body = b"".join(chunks)
        pending: list[Message] = [{"type": "http.request", "body": body, "more_body": not complete}]
        if trailing is not None:
            pending.append(trailing)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        return (body if complete and size <= self.max_body else None), replay

    @staticmethod
    def _parse(body: bytes, seen: dict[bytes, bytes]) -> _Call:
        try:
            envelope = json.loads(body)
        except (ValueError, RecursionError):
            raise _Refer from None
        if not isinstance(envelope, dict) or envelope.keys() - _ENVELOPE_KEYS or envelope.get("jsonrpc") != "2.0" \
                or envelope.get("method") != "tools/call":
            raise _Refer
        request_id, params = envelope.get("id"), envelope.get("params")
        if isinstance(request_id, bool) or not isinstance(request_id, int | str) or not isinstance(params, dict) \
                or params.keys() - _PARAM_KEYS or not isinstance(params.get("name"), str) \
                or not isinstance(params.get("arguments", {}), dict):
            raise _Refer
        headers = {k.decode("latin-1"): seen[k].decode("latin-1") for k in _LADDER_HEADERS if k in seen}
        verdict = classify_inbound_request(envelope, headers=headers)
        if isinstance(verdict, InboundLadderRejection):
            raise _Refer
        return _Call(request_id, verdict.protocol_version, params["name"], envelope)

    def _declaring(self, tool: CatalogTool) -> bool:
        held = self._declares.get(id(tool))
        if held is None or held[0] is not tool:
            if len(self._declares) > 4096:  # catalogs were replaced: forget the old entries
                self._declares.clear()
            held = self._declares[id(tool)] = (tool, _declares_headers(tool))
        return held[1]

    async def handle(self, scope: Scope, receive: Receive, send: Send, sdk: ASGIHandler) -> None:
        seen = self._wanted(scope)
        if seen is None or not await self._sdk_accepts(scope, seen):
            await sdk(scope, receive, send)  # not the lane's, or the SDK's own refusal
            return
        body, replay = await self._body(seen, receive)
        try:
            if body is None:
                raise _Refer
            call = self._parse(body, seen)
            # the body was read whole: what ``receive`` gives next is the disconnect the lane watches for
            await self._serve(call, receive, send)
        except _Refer:
            await sdk(scope, replay, send)

    # -- serving it ---------------------------------------------------------------------------

    async def _serve(self, call: _Call, receive: Receive, send: Send) -> None:
        face, gateway = self.face, self.gateway
        face.start_watch()
        try:
            agent, tool, source = await gateway.admit(call.name, agent=face.agent, sandbox=face.sandbox)
        except ConciergeError:
            raise _Refer from None  # the SDK path says why, in its words
        session = gateway.pool.pooled(source.id)
        if session is None or session.lane_wire is None or session.protocol_version != call.version \
                or self._declaring(tool):
            raise _Refer
        try:
            async with gateway.pool.slot(source.id, wait=source.call_timeout):
                try:
                    await gateway.acquire(source)
                except RateLimited:
                    raise _Refer from None  # nothing was spent: the SDK path refuses it the same way
                if session.lane_wire is None:  # it closed while we waited: the SDK path opens another
                    raise _Refer
                self.served += 1
                await self._forward(call, agent.id, tool, source, session, receive, send)
        except ConciergeError as exc:  # no slot came free (the request did not leave)
            await self._send_json(send, self._tool_error(call, face.error_text(exc)))

    async def _forward(self, call: _Call, agent_id: str, tool: CatalogTool, source: SourceView,
                       session: McpSession, receive: Receive, send: Send) -> None:
        http, wire = session.lane_http, session.lane_wire
        assert http is not None and wire is not None  # checked by the caller, with no await since
        params = dict(call.envelope["params"])
        params["name"] = tool.original_name
        payload = json.dumps({**call.envelope, "params": params}, separators=(",", ":")).encode()
        answered = _Answered()
        guard = _CallGuard(session.endpoint.call_timeout, receive)
        try:
            with session.observe() as box:
                failure: Exception | None = None
                try:
                    response = await self._send(http, wire, session.endpoint.url, payload, call.version,
                                                tool.original_name)
                    await self._exchange(response, call, agent_id, source, guard, answered, send)
                except BaseException as exc:
                    if guard.caught():  # the deadline (answered as the SDK path answers it), or the client left
                        failure = TimeoutError() if guard.expired else None
                    elif isinstance(exc, Exception):
                        failure = exc
                    else:
                        raise
                if failure is not None:
                    guard.close()
                    await self._failed(call, source, session, failure, box, answered, send)
        finally:
            guard.close()

    async def _send(self, http: httpx2.AsyncClient, wire: LaneWire, url: str, payload: bytes, version: str,
                    name: str) -> httpx2.Response | WireResponse:
        """The POST as the SDK client sends it, with the session client's headers (its auth):
        on the session's `LaneWire`, or through its httpx2 client when that one holds cookies
        the server set (httpx2 sends them as it would for the SDK)."""
        mcp_name = encode_header_value(name)
        base = self._bases.get(id(http))
        if base is None or base[0] is not http:  # what the request line and headers start with, once per client
            if len(self._bases) > 256:
                self._bases.clear()
            base = self._bases[id(http)] = (http, httpx2.URL(url), *_head_of(http, httpx2.URL(url)))
        _, target, head, writable = base
        if len(http.cookies.jar) or not writable:
            request = http.build_request("POST", url, content=payload, headers={
                **_UPSTREAM_HEADERS, "mcp-protocol-version": version, "mcp-name": mcp_name})
            return await http.send(request, stream=True)
        response = await wire.post(target, b"%smcp-protocol-version: %s\r\nmcp-name: %s\r\n" % (
            head, version.encode("latin-1"), mcp_name.encode("latin-1")), payload)
        if response.set_cookies:  # kept as httpx2 keeps them: later requests go through it and send them
            http.cookies.extract_cookies(httpx2.Response(
                response.status_code, headers=[("set-cookie", v) for v in response.set_cookies],
                request=httpx2.Request("POST", target)))
        return response

    async def _exchange(self, response: httpx2.Response | WireResponse, call: _Call, agent_id: str,
                        source: SourceView, guard: _CallGuard, answered: _Answered, send: Send) -> None:
        try:
            ctype = response.headers.get("content-type", "").lower()
            if response.status_code == 200 and ctype.startswith("application/json"):
                answer = self._answer(json.loads(await response.aread()), call, agent_id, source)
                await self._send_json(send, answer)
            elif response.status_code == 200 and ctype.startswith("text/event-stream"):
                await self._relay(response, call, agent_id, source, guard, answered, send)
            elif response.status_code >= 400 and ctype.startswith("application/json"):
                # A server may answer a JSON-RPC error at a 4xx status (as the SDK client reads it)
                try:
                    data = ErrorData.model_validate(json.loads(await response.aread())["error"])
                except (ValueError, KeyError, TypeError):
                    data = None
                if data is not None:
                    raise MCPError.from_error_data(data)
                response.raise_for_status()
            else:
                response.raise_for_status()
                raise httpx2.DecodingError(f"unexpected answer: {response.status_code} {ctype or 'no content type'}")
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):  # (also when cancelled)
                await response.aclose()
            raise
        await response.aclose()

    async def _relay(self, response: httpx2.Response | WireResponse, call: _Call, agent_id: str, source: SourceView,
                     guard: _CallGuard, answered: _Answered, send: Send) -> None:
        """Pass the upstream's SSE events on as they come; the final one is the answer."""
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        answered.started = True
        data: list[str] = []
        kind = "message"
        async for line in response.aiter_lines():
            if line.startswith(":"):  # a keep-alive comment
                await send({"type": "http.response.body", "body": f"{line}\r\n\r\n".encode(), "more_body": True})
            elif line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif not line and data:
                text, data, event, kind = "\n".join(data), [], kind, "message"
                if event != "message":
                    continue
                message = json.loads(text)
                if isinstance(message, dict) and "id" in message and ("result" in message or "error" in message):
                    answer = self._answer(message, call, agent_id, source)
                    await send({"type": "http.response.body", "body": _sse_event(answer), "more_body": False})
                    return
                if isinstance(message, dict) and message.get("method") == "notifications/progress":
                    guard.reset()  # a tool that reports progress is not cut off
                await send({"type": "http.response.body", "body": _sse_event(text), "more_body": True})
        raise httpx2.RemoteProtocolError("the server's event stream ended without an answer")

    def _answer(self, message: Any, call: _Call, agent_id: str, source: SourceView) -> str:
        """The upstream's answer for the client: its own result, with the gateway's stamp."""
        if not isinstance(message, dict) or message.get("id") != call.request_id:
            raise httpx2.DecodingError("the answer is not a JSON-RPC response to the request")
        if "error" in message:
            raise MCPError.from_error_data(ErrorData.model_validate(message["error"]))
        result = message.get("result")
        if not isinstance(result, dict):
            raise httpx2.DecodingError("the answer has no result object")
        meta = result.get("_meta")
        stamp = self._stamp
        if isinstance(meta, dict):
            result["_meta"] = {**{k: v for k, v in meta.items() if k != SERVER_INFO_META_KEY},
                               SERVER_INFO_META_KEY: stamp}
        elif meta is None:
            result["_meta"] = {SERVER_INFO_META_KEY: stamp}
        content = result.get("content")
        if isinstance(content, list):
            self.gateway.remember_links(agent_id, source.id, content)
        return json.dumps(message, separators=(",", ":"))

    async def _failed(self, call: _Call, source: SourceView, session: McpSession, exc: Exception, box: Any,
                      answered: _Answered, send: Send) -> None:
        """A failure after the request left: the SDK path's error result for it."""
        try:
            result = await self.gateway.call_failed(source, session, exc, box)
            text = result.text
        except ConciergeError as err:
            text = self.face.error_text(err)
        answer = self._tool_error(call, text)
        if answered.started:
            await send({"type": "http.response.body", "body": _sse_event(answer), "more_body": False})
        else:
            await self._send_json(send, answer)

    def _tool_error(self, call: _Call, text: str) -> str:
        """A tool error result, serialized as the SDK's server serializes the SDK path's."""
        result = types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)
        dumped = _methods.serialize_server_result(
            "tools/call", call.version, result.model_dump(by_alias=True, mode="json", exclude_none=True))
        if dumped.get("resultType") is None:
            dumped["resultType"] = "complete"
        dumped["_meta"] = {SERVER_INFO_META_KEY: self._stamp}
        body = JSONRPCResponse(jsonrpc="2.0", id=call.request_id, result=dumped)
        return json.dumps(body.model_dump(mode="json", by_alias=True, exclude_none=True), separators=(",", ":"))

    @staticmethod
    async def _send_json(send: Send, answer: str) -> None:
        body = answer.encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
