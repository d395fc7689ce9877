"""Errors on the wire: `ConciergeError` <-> HTTP status + ``{"error", "detail"}``, and request ids.

    ValidationFailed   400  (+ ``field`` when the rule names one)
    Unauthenticated    401  no key, or an unknown or revoked one
    PermissionDenied   403  the key's role or sandbox does not allow it
    NotFound           404
    Conflict           409
    RateLimited        429  (+ ``retry_after`` and a ``Retry-After`` header)
    ConnectorError     502  (+ ``kind``)   ModelError 502
    anything else      500  ``internal_error``; the message stays in the server log

An error class may pin its own status with a ``status_code`` attribute (a bad webhook
signature is 401, an oversized body 413). `error_from_response` is the inverse, used by
`concierge.remote.RemoteBackend` so a remote error prints exactly like a local one.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from concierge.errors import (
    Conflict,
    ConciergeError,
    ConnectorError,
    MaxTurnsExceeded,
    ModelError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)

__all__ = [
    "REQUEST_ID_HEADER",
    "RequestIdMiddleware",
    "Unauthenticated",
    "current_request_id",
    "error_body",
    "error_from_response",
    "error_response",
    "status_for",
]

log = logging.getLogger("concierge.server")

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("concierge_request_id", default="")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class Unauthenticated(ConciergeError):
    """No API key, or one the server does not know (HTTP 401)."""

    error = "unauthorized"
    status_code = 401


_STATUS: tuple[tuple[type[ConciergeError], int], ...] = (
    (ValidationFailed, 400),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (RateLimited, 429),
    (ConnectorError, 502),
    (ModelError, 502),
)


def current_request_id() -> str:
    return _REQUEST_ID.get()


def status_for(exc: ConciergeError) -> int:
    pinned = getattr(exc, "status_code", None)
    if isinstance(pinned, int):
        return pinned
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: ConciergeError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.error, "detail": exc.detail}
    if isinstance(exc, ValidationFailed) and exc.field:
        body["field"] = exc.field
    if isinstance(exc, RateLimited):
        body["retry_after"] = exc.retry_after
    if isinstance(exc, ConnectorError):
        body["kind"] = exc.kind
    return body


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


def error_from_response(status: int, body: Any) -> ConciergeError:
    """The `ConciergeError` an API error response stands for (the inverse of `error_response`)."""
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error") or "error")
    detail = str(body.get("detail") or f"HTTP {status}")
    if status in (400, 413, 415) or code == "validation_error":
        err: ConciergeError = ValidationFailed(detail, field=body.get("field"))
        err.error = code
        return err
    if status in (401, 403):  # the CLI prints both the same way: "error: <detail>"
        return PermissionDenied(detail, error=code)
    if status == 404:
        return NotFound(detail, error=code)
    if status == 409:
        return Conflict(detail, error=code)
    if status == 429:
        try:
            retry = float(body.get("retry_after", 1.0))
        except (TypeError, ValueError):
            retry = 1.0
        err = RateLimited(detail, retry_after=retry)
        err.error = code
        return err
    if code == "mcp_error" or "kind" in body:
        kind = str(body.get("kind") or "error")
        err = ConnectorError(kind, detail)
        err.detail = detail  # keep the server's wording exactly
        return err
    if code == MaxTurnsExceeded.error:
        return MaxTurnsExceeded(detail)
    if code == ModelError.error:
        return ModelError(detail)
    return ConciergeError(detail, error=code)


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
