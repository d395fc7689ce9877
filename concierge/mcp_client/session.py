"""`McpSession`: one long-lived, negotiated connection to a server, shared by many tasks.

The SDK client lives in a dedicated worker task (it must be entered and exited in one task),
so requests may be awaited from any task, concurrently. A request that fails because the
server answered (an MCP error, a message over the size cap, a time-out) leaves the session
open; a broken transport closes it, and a pool must open a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from concierge.errors import ConnectorError
from concierge.mcp_client._errors import Observed, current_observed, hosted_unreachable, map_errors, translate
from concierge.mcp_client._sanitize import sanitize
from concierge.mcp_client._transport import HttpRoute, open_client
from concierge.mcp_client.endpoint import Endpoint
from concierge.mcp_client.kinds import ErrorKind
from concierge.mcp_client.lane_wire import LaneWire
from concierge.mcp_client.results import (
    MAX_INSTRUCTIONS_CHARS,
    MAX_TITLE_CHARS,
    ToolCallResult,
    ToolInfo,
    call_result,
    tool_info,
)
from concierge.mcp_client.stdio import kill_group

__all__ = ["Deadline", "ListChanged", "McpSession", "Progress", "collect_pages", "collect_tools"]

log = logging.getLogger("concierge.mcp_client")

_CLOSE_GRACE = 2.0
_STDIO_CLOSE_GRACE = 6.0
"""A program gets longer: closing stdin, a grace, SIGTERM, a grace and SIGKILL (`_stdio`)."""
_NO_SDK_TIMEOUT = 24 * 3600.0
ListChanged = Callable[[str], None]
"""Called with ``"tools"``, ``"resources"`` or ``"prompts"`` when the server says that list changed."""
Progress = Callable[[float, float | None, str | None], Awaitable[None]]
T = TypeVar("T")

_CHANGE_NOTIFICATIONS: dict[type[Any], str] = {
    types.ToolListChangedNotification: "tools",
    types.ResourceListChangedNotification: "resources",
    types.PromptListChangedNotification: "prompts",
}
_KEEPS_SESSION = frozenset({ErrorKind.PROTOCOL, ErrorKind.TOO_LARGE, ErrorKind.TIMEOUT,
                            ErrorKind.TOO_MANY_TOOLS})
"""Failures that are the server's answer to one request; the transport is fine."""


class Deadline:
    """A cancel scope with a movable deadline; raises ``TimeoutError`` when it fires.

    One scope can cover connecting and then a call with different budgets, and progress
    from the server can push it back (a long tool that reports progress is not cut off).
    """

    def __init__(self, seconds: float) -> None:
        self._scope = anyio.CancelScope(deadline=anyio.current_time() + seconds)
        self.seconds = seconds

    def reset(self, seconds: float | None = None) -> None:
        if seconds is not None:
            self.seconds = seconds
        self._scope.deadline = anyio.current_time() + self.seconds

    def cancel(self) -> None:
        """End the block now, quietly (no ``TimeoutError``): e.g. the caller went away."""
        self._scope.cancel()

    def __enter__(self) -> Deadline:
        self._scope.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> bool | None:
        swallowed = self._scope.__exit__(*exc_info)
        if self._scope.cancelled_caught and anyio.current_time() >= self._scope.deadline:
            raise TimeoutError
        return swallowed


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


async def collect_pages(fetch: Callable[[str | None], Awaitable[Any]], field: str, *, max_pages: int,
                        max_items: int, what: str) -> list[Any]:
    """Every item of a paginated listing, bounded in pages and items."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(max(1, max_pages)):
        page = await fetch(cursor)
        items.extend(getattr(page, field))
        if len(items) > max_items:
            raise ConnectorError(ErrorKind.TOO_MANY_TOOLS, f"the server lists more than {max_items} {what} — "
                                 f"only servers with up to {max_items} are supported")
        cursor = page.next_cursor
        if not cursor:
            return items
    raise ConnectorError(ErrorKind.TOO_MANY_TOOLS, f"the server kept paginating past {max_pages} pages of "
                         f"{what} ({len(items)} {what} so far) — stopped there")


async def collect_tools(client: Client, *, max_pages: int, max_tools: int) -> list[ToolInfo]:
    tools = await collect_pages(lambda c: client.list_tools(cursor=c, cache_mode="bypass"), "tools",
                                max_pages=max_pages, max_items=max_tools, what="tools")
    return [tool_info(t) for t in tools]


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a worker's exception as seen (it was recorded already), so asyncio does not log it."""
    if not task.cancelled():
        task.exception()


class McpSession:
    """A long-lived open session to one server, for pooling (a gateway reuses it for many calls).

    ``on_list_changed`` hears the server's list-changed notifications (legacy sessions get
    them on the standing GET stream, 2026-07-28 ones on a ``subscriptions/listen`` stream).
    """

    def __init__(self, endpoint: Endpoint, *, on_list_changed: ListChanged | None = None) -> None:
        self.endpoint = endpoint
        self.server_name: str | None = None
        self.server_version: str | None = None
        self.protocol_version: str | None = None
        self.transport: str | None = None
        self.instructions: str | None = None
        self.capabilities: types.ServerCapabilities | None = None
        self._on_list_changed = on_list_changed
        self._client: Client | None = None
        self._box = Observed()
        self._task: asyncio.Task[None] | None = None
        self._stop: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._failure: BaseException | None = None
        self._error: ConnectorError | None = None
        self._closed = False
        self._opening = False
        self._http: list[HttpRoute] = []
        self._wire: LaneWire | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self._client is not None else "new")
        return f"McpSession({self.endpoint.where!r}, {state})"

    @property
    def closed(self) -> bool:
        """True after ``aclose()`` or once a transport failure made the session unusable."""
        return self._closed

    async def __aenter__(self) -> McpSession:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and negotiate under ``connect_timeout``; raises ``ConnectorError``
        (with ``delivered=False``: nothing was sent that could run a tool)."""
        if self._closed:
            raise self._closed_error()
        if self._task is not None or self._opening:
            raise RuntimeError("McpSession.open() was already called")
        self._opening = True
        ready, self._stop, self._done = anyio.Event(), anyio.Event(), anyio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(ready), name=f"mcp-session {self!r}")
        self._task.add_done_callback(_retrieve)
        try:
            with anyio.fail_after(self.endpoint.connect_timeout):
                async with anyio.create_task_group() as tg:

                    async def wait(event: anyio.Event) -> None:
                        await event.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(wait, ready)
                    tg.start_soon(wait, self._done)
        except TimeoutError as exc:
            await self._abandon()
            if self._box.content_type is not None or self._box.cause is not None:
                self._error = translate(exc, self.endpoint, self._box, phase="connect",
                                        deadline=self.endpoint.connect_timeout)
                raise self._error from None
            self._error = hosted_unreachable(ConnectorError(
                ErrorKind.TIMEOUT, f"no answer from {self._at} "
                f"within {self.endpoint.connect_timeout:g} s", delivered=False), self.endpoint, phase="connect")
            raise self._error from None
        except BaseException:
            await self._abandon()
            raise
        finally:
            self._opening = False
        if self._client is None:  # the worker ended before it was ready
            self._closed = True
            failure = self._failure or RuntimeError("the session ended while connecting")
            self._error = translate(failure, self.endpoint, self._box, phase="connect",
                                    deadline=self.endpoint.connect_timeout)
            raise self._error

    def _handle_message(self, message: Any) -> None:
        what = _CHANGE_NOTIFICATIONS.get(type(message))
        if what is not None and self._on_list_changed is not None:
            try:
                self._on_list_changed(what)
            except Exception:  # a listener must not break the session
                log.exception("list_changed listener failed")

    async def _message_handler(self, message: Any) -> None:
        if isinstance(message, Exception):
            # The transport's reader died (e.g. the SSE stream of a restarted server ended):
            # the session cannot hear answers any more. Close it now, so the next request
            # goes to a new session instead of failing half-sent.
            self._failure = self._failure or message
            self._closed = True
            if self._stop is not None:
                self._stop.set()
            return
        self._handle_message(message)

    async def _listen(self, client: Client) -> None:
        """2026-07-28: list-changed events come on a listen stream, if the server offers one."""
        caps = client.server_capabilities
        tools = bool(caps.tools and caps.tools.list_changed)
        prompts = bool(caps.prompts and caps.prompts.list_changed)
        resources = bool(caps.resources and caps.resources.list_changed)
        if self._on_list_changed is None or not (tools or prompts or resources):
            return
        names = {"ToolsListChanged": "tools", "PromptsListChanged": "prompts", "ResourcesListChanged": "resources"}
        try:
            async with client.listen(tools_list_changed=tools, prompts_list_changed=prompts,
                                     resources_list_changed=resources) as sub:
                async for event in sub:
                    what = names.get(type(event).__name__)
                    if what is not None:
                        self._on_list_changed(what)
        except Exception as exc:  # no events then; the session itself is fine
            log.debug("listen stream to %s ended: %s", self.endpoint.where, type(exc).__name__)

    async def _run(self, ready: anyio.Event) -> None:
        assert self._stop is not None and self._done is not None
        try:
            async with open_client(self.endpoint, self._box, read_timeout=self.endpoint.connect_timeout,
                                   http_timeout=self.endpoint.call_timeout, message_handler=self._message_handler,
                                   http_sink=self._http) as (client, transport):
                info = client.server_info
                if info is not None:
                    self.server_name = sanitize(info.name, MAX_TITLE_CHARS, single_line=True) or None
                    self.server_version = sanitize(info.version or "", MAX_TITLE_CHARS, single_line=True) or None
                self.protocol_version = client.protocol_version
                self.transport = transport
                self.instructions = sanitize(client.instructions or "", MAX_INSTRUCTIONS_CHARS) or None
                self.capabilities = client.server_capabilities
                self._client = client
                ready.set()
                async with anyio.create_task_group() as tg:
                    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                        tg.start_soon(self._listen, client)
                    await self._stop.wait()
                    tg.cancel_scope.cancel()
        except Exception as exc:  # the transport died (or never came up): remember why
            self._failure = exc
        finally:
            self._client = None
            self._closed = True
            if self._wire is not None:
                self._wire.close()
            self._done.set()

    @property
    def _at(self) -> str:
        return self.endpoint.where if self.endpoint.command is not None else f"the server at {self.endpoint.where}"

    @property
    def _grace(self) -> float:
        return _STDIO_CLOSE_GRACE if self.endpoint.command is not None else _CLOSE_GRACE

    @property
    def lane_http(self) -> httpx2.AsyncClient | None:
        """The httpx2 client of an open stateless (2026-07-28) streamable-HTTP session without an
        OAuth flow: what the gateway's pass-through lane may POST a ``tools/call`` through (its
        pool, static headers, URL policy and size cap are this session's). None otherwise."""
        if self._closed or self._client is None or not self._http or self.transport != "streamable-http" \
                or self.protocol_version not in MODERN_PROTOCOL_VERSIONS or self.endpoint.auth is not None:
            return None
        return self._http[-1].client

    @property
    def lane_wire(self) -> LaneWire | None:
        """The lane's own HTTP/1.1 connections to this server (`LaneWire`), when `lane_http` is
        there: dialled by the same backend (pinned addresses, URL policy), held to the same size
        cap, recording on the same boxes; closed with the session."""
        if self.lane_http is None:
            return None
        if self._wire is None:
            route = self._http[-1]
            self._wire = LaneWire(route.backend, route.ssl_context, limit=self.endpoint.max_message_bytes,
                                  connect_timeout=min(self.endpoint.connect_timeout, 5.0), boxes=[self._box])
        return self._wire

    @contextlib.contextmanager
    def observe(self) -> Iterator[Observed]:
        """Within: what the session's HTTP client sees of a request (status, content type, a
        refused size) is recorded on the box yielded, for `request_failed`."""
        box = Observed()
        token = current_observed.set(box)
        try:
            yield box
        finally:
            current_observed.reset(token)

    async def request_failed(self, exc: BaseException, call_box: Observed) -> ConnectorError:
        """A ``tools/call`` made outside the SDK client (the gateway's lane) failed with ``exc``:
        the same `ConnectorError` as one made here, and as here a broken transport closes us."""
        err = translate(exc, self.endpoint, call_box, phase="call", deadline=self.endpoint.call_timeout,
                        in_session=True)
        await self._after_failure(err, call_box)
        return err

    @property
    def pid(self) -> int | None:
        """The pid of the stdio program this session runs (None for a URL, or once it ended)."""
        return self._box.pid

    def _reap(self) -> None:
        """A stdio program still running after the worker gave up on it is killed here."""
        pid = self._box.pid
        task = self._task
        if pid is not None and (task is None or task.done()) and kill_group(pid):
            log.warning("killed the process group of stdio server %d after its shutdown did not finish", pid)

    async def _abandon(self) -> None:
        """Stop the worker without waiting on a polite shutdown (used when open() fails)."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._grace):
                await asyncio.wait({task})
        self._reap()

    async def aclose(self) -> None:
        """Close the session; idempotent, never raises."""
        self._closed = True
        task = self._task
        if task is None or task.done():
            return
        try:
            if self._stop is not None:
                self._stop.set()
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self._grace):
                    await asyncio.wait({task})
                if not task.done():
                    task.cancel()
                    with anyio.move_on_after(self._grace):
                        await asyncio.wait({task})
        except Exception:  # never raise from close
            pass
        self._reap()

    # -- requests -----------------------------------------------------------------------------

    def _closed_error(self) -> ConnectorError:
        if self._error is None and self._failure is not None:
            self._error = translate(self._failure, self.endpoint, self._box, phase="call",
                                    deadline=self.endpoint.call_timeout, in_session=True)
        kind = self._error.kind if self._error is not None else ErrorKind.UNKNOWN
        return ConnectorError(kind, f"the session to {self.endpoint.where} is closed — open a new one",
                              http_status=self._error.http_status if self._error is not None else None,
                              delivered=False)

    def _require_client(self) -> Client:
        client = self._client
        if self._closed or client is None:
            if self._task is None and not self._closed:
                raise RuntimeError("call McpSession.open() first")
            raise self._closed_error()
        return client

    async def _request(self, run: Callable[[Client, Deadline], Awaitable[T]], *, timeout: float,
                       phase: str) -> T:
        """Run one request under ``timeout``, mapping failures; a broken transport closes us."""
        client = self._require_client()
        call_box = Observed()
        token = current_observed.set(call_box)
        try:
            with map_errors(self.endpoint, call_box, phase=phase, deadline=timeout, in_session=True):
                with Deadline(timeout) as deadline:
                    return await run(client, deadline)
        except ConnectorError as err:
            await self._after_failure(err, call_box)
            if self._closed and self._failure is not None and err.kind is ErrorKind.CONNECTION_REFUSED:
                # the worker saw why the transport died (e.g. connection refused on the POST)
                better = translate(self._failure, self.endpoint, self._box, phase=phase, deadline=timeout,
                                   in_session=True)
                if better.kind is not ErrorKind.UNKNOWN:
                    err = ConnectorError(better.kind, better.sentence, http_status=better.http_status,
                                         delivered=err.delivered and better.delivered)
            raise err from None
        finally:
            current_observed.reset(token)

    async def _after_failure(self, err: ConnectorError, call_box: Observed) -> None:
        server_answered = err.kind in _KEEPS_SESSION and call_box.status is None
        if err.kind is ErrorKind.CONNECTION_REFUSED and self._done is not None and not self._done.is_set():
            # The transport may be dying under us and have woken us first: give the worker a
            # moment to record why.
            with anyio.move_on_after(0.25):
                await self._done.wait()
        if not server_answered or self._done is None or self._done.is_set():
            self._error = self._error or err
            self._closed = True
            if self._stop is not None:
                self._stop.set()

    async def list_tools(self, *, max_pages: int = 50, max_tools: int = 5000) -> list[ToolInfo]:
        """Every tool, fetched fresh, under ``connect_timeout``; raises ``ConnectorError``."""
        return await self._request(lambda c, _: collect_tools(c, max_pages=max_pages, max_tools=max_tools),
                                   timeout=self.endpoint.connect_timeout, phase="list")

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, *,
                        progress: Progress | None = None, meta: dict[str, Any] | None = None) -> ToolCallResult:
        """One tools/call under ``call_timeout``. With ``progress``, the server is asked for
        progress, each report goes to ``progress`` and pushes the deadline back. A tool-level
        error is ``is_error=True``; transport failures raise ``ConnectorError``."""
        start = time.perf_counter()

        async def run(client: Client, deadline: Deadline) -> types.CallToolResult:
            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                deadline.reset()
                assert progress is not None
                await progress(value, total, message)

            # The SDK's own request timeout cannot be pushed back by progress: ours (the Deadline) rules.
            return await client.call_tool(name, arguments, read_timeout_seconds=_NO_SDK_TIMEOUT,
                                          progress_callback=on_progress if progress is not None else None,  # type: ignore[arg-type]
                                          meta=meta)  # type: ignore[arg-type]

        result = await self._request(run, timeout=self.endpoint.call_timeout, phase="call")
        return call_result(result, _ms(start))

    async def list_resources(self, *, max_pages: int = 50, max_items: int = 5000) -> list[types.Resource]:
        return await self._request(lambda c, _: collect_pages(
            lambda cur: c.list_resources(cursor=cur, cache_mode="bypass"), "resources", max_pages=max_pages,
            max_items=max_items, what="resources"), timeout=self.endpoint.connect_timeout, phase="list")

    async def list_resource_templates(self, *, max_pages: int = 50,
                                      max_items: int = 5000) -> list[types.ResourceTemplate]:
        return await self._request(lambda c, _: collect_pages(
            lambda cur: c.list_resource_templates(cursor=cur, cache_mode="bypass"), "resource_templates",
            max_pages=max_pages, max_items=max_items, what="resource templates"),
            timeout=self.endpoint.connect_timeout, phase="list")

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        return await self._request(lambda c, _: c.read_resource(uri, cache_mode="bypass"),
                                   timeout=self.endpoint.call_timeout, phase="call")

    async def list_prompts(self, *, max_pages: int = 50, max_items: int = 5000) -> list[types.Prompt]:
        return await self._request(lambda c, _: collect_pages(
            lambda cur: c.list_prompts(cursor=cur, cache_mode="bypass"), "prompts", max_pages=max_pages,
            max_items=max_items, what="prompts"), timeout=self.endpoint.connect_timeout, phase="list")

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None) -> types.GetPromptResult:
        return await self._request(lambda c, _: c.get_prompt(name, arguments),
                                   timeout=self.endpoint.call_timeout, phase="call")
