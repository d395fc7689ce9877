"""Where the browser lands after a sign-in: the authorization server's redirect, with ``code``
and ``state`` (or ``error``) in its query.

    CallbackInbox      matches a redirect to the sign-in waiting for it, by ``state``; the HTTP
                       service's callback route hands its query to ``deliver()``
    LoopbackCallback   a listener on 127.0.0.1 (any free port, or the one of a registered
                       redirect URI) that delivers into an inbox: for the CLI, whose person's
                       browser runs on the same machine
    callback_page      the small page the browser shows afterwards (both of the above use it)
"""

from __future__ import annotations

import asyncio
import html
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio

from concierge.mcp_client._sanitize import one_line

__all__ = ["CallbackInbox", "Delivery", "LoopbackCallback", "callback_page"]

Delivery = Literal["signed_in", "refused", "unknown_state"]
"""What became of a redirect: a code for a waiting sign-in, a refusal (``error=``) for one, or
no sign-in waits for its state (expired, finished, or never started here)."""

_LOOPBACK = "127.0.0.1"


@dataclass
class _Waiting:
    done: anyio.Event = field(default_factory=anyio.Event)
    params: dict[str, str] = field(default_factory=dict)


class CallbackInbox:
    """Redirects, matched to waiting sign-ins by their ``state`` (one delivery each).

    Used from the event loop the sign-ins run in."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Waiting] = {}

    def __repr__(self) -> str:
        return f"CallbackInbox(waiting={len(self._waiting)})"

    def expect(self, state: str) -> _Waiting:
        waiting = self._waiting[state] = _Waiting()
        return waiting

    def forget(self, state: str) -> None:
        self._waiting.pop(state, None)

    def deliver(self, params: Mapping[str, str]) -> Delivery:
        """Hand a redirect's query parameters to the sign-in waiting for their ``state``."""
        state = str(params.get("state") or "")
        waiting = self._waiting.pop(state, None) if state else None
        if waiting is None:
            return "unknown_state"
        waiting.params = {str(k): str(v) for k, v in params.items()}
        waiting.done.set()
        return "refused" if "error" in waiting.params else "signed_in"


def callback_page(delivery: Delivery, params: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(HTTP status, HTML) for the browser after a redirect."""
    if delivery == "signed_in":
        title, text, status = "Signed in", "You can close this tab and go back to Concierge.", 200
    elif delivery == "refused":
        error = one_line(str((params or {}).get("error", "")), 80)
        title, text, status = "Not signed in", f"The sign-in was refused ({error}). Nothing was connected.", 200
    else:
        title, text, status = ("Unknown sign-in", "No sign-in is waiting for this link any more: it finished, "
                               "expired, or was started elsewhere. Start a new one from Concierge.", 400)
    body = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>")
    return status, body


class LoopbackCallback:
    """Listens on ``127.0.0.1:port`` (0: any free port) at ``path`` for the redirect of a
    sign-in and delivers it into ``inbox``; an async context manager."""

    def __init__(self, inbox: CallbackInbox | None = None, *, port: int = 0, path: str = "/callback") -> None:
        self.inbox = inbox or CallbackInbox()
        self.port, self.path = port, path
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @classmethod
    def for_redirect_uri(cls, redirect_uri: str, inbox: CallbackInbox | None = None) -> LoopbackCallback:
        """A listener for a fixed loopback redirect URI (a pre-registered client's)."""
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or parts.hostname not in (_LOOPBACK, "localhost"):
            raise ValueError(f"redirect_uri {redirect_uri!r} is not a loopback http URL: a sign-in cannot "
                             "listen for it here (use the HTTP service's callback route)")
        return cls(inbox, port=parts.port or 80, path=parts.path or "/")

    @property
    def redirect_uri(self) -> str:
        return f"http://{_LOOPBACK}:{self.port}{self.path}"

    def __repr__(self) -> str:
        return f"LoopbackCallback({self.redirect_uri!r})"

    async def __aenter__(self) -> LoopbackCallback:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse
        from starlette.routing import Route

        async def land(request: Request) -> HTMLResponse:
            params = dict(request.query_params)
            status, body = callback_page(self.inbox.deliver(params), params)
            return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((_LOOPBACK, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {_LOOPBACK}:{self.port} for the sign-in's redirect ({exc.strerror})") \
                from None
        sock.listen(16)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(Starlette(routes=[Route(self.path, land, methods=["GET"])]), log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=1)
        server = self._server = uvicorn.Server(config)
        self._sock = sock
        # A task of its own (not a task group): the listener outlives the scopes its user opens
        self._task = asyncio.get_running_loop().create_task(server.serve([sock]), name=repr(self))
        try:
            with anyio.fail_after(5):
                while not server.started:
                    if self._task.done():
                        self._task.result()  # raises why it stopped
                        raise OSError("the callback listener stopped at once")
                    await anyio.sleep(0.01)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        server, task, sock = self._server, self._task, self._sock
        if server is not None:
            server.should_exit = True
        if task is not None:
            with anyio.CancelScope(shield=True):
                await asyncio.wait({task}, timeout=3)
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=1)
            if task.done() and not task.cancelled():
                task.exception()  # (seen)
        if sock is not None:
            sock.close()
        self._server = self._task = self._sock = None
