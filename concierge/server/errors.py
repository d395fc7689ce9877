"""Errors on the wire, the Starlette half: error responses, the 500 answer and request ids.

The codec itself (status and body of each `ConciergeError`, and back) is `concierge.wire`,
which the HTTP client shares. A 401 also carries ``WWW-Authenticate``, a 429 ``Retry-After``;
anything that is not a `ConciergeError` is a bug: 500 ``internal_error``, the message stays
in the server log.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concierge.errors import ConciergeError, RateLimited
from concierge.wire import error_body, status_for

__all__ = [
    "REQUEST_ID_HEADER",
    "RequestIdMiddleware",
    "current_request_id",
    "error_response",
    "internal_error",
]

log = logging.getLogger("concierge.server")

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("concierge_request_id", default="")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def current_request_id() -> str:
    return _REQUEST_ID.get()


def error_response(exc: ConciergeError) -> JSONResponse:
    status = status_for(exc)
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="concierge"'
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


def internal_error(request: Request, exc: BaseException) -> JSONResponse:
    """A bug: logged with the request id; the client learns only the id."""
    rid = current_request_id()
    log.error("unhandled error on %s %s (request %s)", request.method, request.url.path, rid,
              exc_info=exc)
    return JSONResponse({"error": "internal_error",
                         "detail": f"internal error; quote request id {rid} when reporting it"},
                        status_code=500)


class RequestIdMiddleware:
    """Give every request an id (the caller's ``X-Request-Id`` when it is sane) and put it on
    every response, including errors, static files and the mounted MCP gateway."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _SAFE_ID.match(incoming) else "req_" + secrets.token_hex(8)
        token = _REQUEST_ID.set(rid)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _REQUEST_ID.reset(token)
