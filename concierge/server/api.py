"""The route table: one `ApiRoute` per endpoint, from which both the Starlette routes and the
OpenAPI document are built (so the two cannot drift), and the per-request plumbing.

A handler is ``async def h(ctx: Ctx) -> Response | BaseModel | list | dict``; a returned value
is sent as JSON with the route's status. `dispatch` authenticates, checks the route's access
level, names the caller in the audit log and turns `ConciergeError` into ``{"error", "detail"}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from concierge.errors import (
    ConciergeError,
    ForbiddenOrigin,
    PayloadTooLarge,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
)
from concierge.offloop import json_in_slices, off_loop
from concierge.registry import Sandbox, acting_as
from concierge.server.auth import Principal, Role, anonymous_refusal, is_loopback, own_request_refusal
from concierge.server.errors import error_response, internal_error

if TYPE_CHECKING:
    from concierge.backend import LocalBackend
    from concierge.registry import Registry
    from concierge.server.services import Services

__all__ = [
    "Access",
    "ApiRoute",
    "Ctx",
    "ListOf",
    "PageOf",
    "Query",
    "UnsupportedMediaType",
    "authenticate",
    "dispatch",
    "page_query",
    "read_body",
]

Access = Literal["public", "signature", "viewer", "editor", "owner"]
"""``public``: no key. ``signature``: no key, the handler checks an HMAC signature."""

MAX_BODY_BYTES = 1024 * 1024
"""The largest request body any route reads (a webhook's limit is lower)."""
_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}")


@dataclass(frozen=True)
class ListOf:
    """A JSON array of ``model`` (for the OpenAPI document)."""

    model: type[BaseModel]


@dataclass(frozen=True)
class PageOf:
    """One page of a list of ``model``: ``{items, next_cursor, total}``; the route takes
    ``limit`` (1-1000, default ``default_limit``) and ``cursor`` (the previous page's
    ``next_cursor``) on top of its own query parameters."""

    model: type[BaseModel]
    default_limit: int = 100


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


def page_query(default_limit: int = 100) -> tuple[Query, Query]:
    """The ``limit`` and ``cursor`` parameters of a paged list (see `PageOf`)."""
    return (Query("limit", f"How many items on this page (1-1000, default {default_limit}).",
                  {"type": "integer", "minimum": 1, "maximum": 1000, "default": default_limit}),
            Query("cursor", "The `next_cursor` of the previous page; leave it out for the first page.",
                  {"type": "string", "minLength": 1}))


Handler = Callable[["Ctx"], Awaitable[Any]]


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str
    handler: Handler
    summary: str
    access: Access
    tag: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | ListOf | PageOf | dict[str, Any] | None = None
    status: int = 200
    media: str = "application/json"
    query: Sequence[Query] = ()
    errors: Sequence[int] = ()
    """Error statuses beyond the ones implied by ``access`` and path parameters."""
    description: str | None = None

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    @property
    def role(self) -> Role | None:
        return Role(self.access) if self.access in ("viewer", "editor", "owner") else None


class Ctx:
    """What a handler gets: the request, the caller and the services."""

    def __init__(self, request: Request, principal: Principal | None, services: Services) -> None:
        self.request = request
        self.principal = principal
        self.services = services

    @property
    def backend(self) -> LocalBackend:
        return self.services.backend

    @property
    def registry(self) -> Registry:
        return self.services.registry

    @property
    def caller(self) -> Principal:
        assert self.principal is not None, "route is not public"
        return self.principal

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)

    def int_query(self, name: str, default: int, *, lo: int, hi: int) -> int:
        raw = self.request.query_params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ValidationFailed(f"{name} must be an integer (got {raw!r})", field=name) from None
        if not lo <= value <= hi:
            raise ValidationFailed(f"{name} must be between {lo} and {hi} (got {value})", field=name)
        return value

    def page_args(self, default_limit: int = 100) -> dict[str, Any]:
        """``limit`` and ``cursor`` of a paged list, checked (400 naming the parameter)."""
        from concierge.registry.pages import MAX_LIMIT

        cursor = self.request.query_params.get("cursor")
        if cursor is not None and not cursor:
            raise ValidationFailed("cursor must be a next_cursor this list handed out (got an empty "
                                   "string); leave it out for the first page", field="cursor")
        return {"limit": self.int_query("limit", default_limit, lo=1, hi=MAX_LIMIT), "cursor": cursor}

    async def body_bytes(self, *, limit: int = MAX_BODY_BYTES) -> bytes:
        """The body, read at most ``limit`` bytes far (413 beyond; see `read_body`)."""
        return await read_body(self.request, limit)

    async def json(self, *, required: bool = True) -> dict[str, Any]:
        """The body as a JSON object (400 when it is not one)."""
        content_type = self.request.headers.get("content-type", "")
        announced = self.request.headers.get("content-length")
        if "json" not in content_type.lower() and announced not in (None, "0"):  # refused unread
            raise UnsupportedMediaType(f"send the body as JSON with 'Content-Type: application/json' "
                                       f"(got {content_type or 'no content type'!r})", field="body")
        raw = await self.body_bytes()
        if not raw.strip():
            if required:
                raise ValidationFailed("request body must be a JSON object", field="body")
            return {}
        if "json" not in content_type.lower():
            # Also keeps browsers honest: a cross-site page cannot send JSON without a preflight.
            raise UnsupportedMediaType(f"send the body as JSON with 'Content-Type: application/json' "
                                       f"(got {content_type or 'no content type'!r})", field="body")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValidationFailed(f"request body is not valid JSON ({exc})", field="body") from None
        if not isinstance(data, dict):
            raise ValidationFailed("request body must be a JSON object", field="body")
        return data

    def sandbox(self, ref: str | None = None) -> Sandbox:
        """The sandbox named by the path (id or name), if this caller may use it.

        A key limited to one sandbox gets 403 for any other ref, existing or not, so it cannot
        probe for other tenants' sandboxes."""
        ref = ref if ref is not None else self.param("sandbox_id")
        principal = self.caller
        try:
            sb = self.registry.get_sandbox(ref)
        except ConciergeError:
            if principal.sandbox_id is not None:
                principal.require_sandbox(None)
            raise
        principal.require_sandbox(sb.id)
        return sb

    def sandbox_ref(self) -> str:
        """The path's sandbox ref exactly as sent (id or name), once the caller may use it, so
        messages name the sandbox the way the caller did (as `LocalBackend` does)."""
        self.sandbox()
        return self.param("sandbox_id")

    def default_sandbox(self) -> Sandbox:
        """The key's own sandbox, else the registry's default sandbox."""
        sandbox_id = self.caller.sandbox_id
        return self.registry.get_sandbox(sandbox_id) if sandbox_id else self.registry.get_sandbox(None)

    def visible(self, sandbox_id: str | None) -> bool:
        return self.caller.sandbox_id is None or sandbox_id == self.caller.sandbox_id


def _json_response(result: Any, status: int) -> JSONResponse:
    return JSONResponse(to_jsonable_python(result), status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, never more than ``limit`` bytes of it in memory.

    A ``Content-Length`` over the limit is refused before a byte of the body is read; a body
    without one (chunked) is read as it arrives and refused as soon as it passes the limit.
    Either way the answer is 413 `PayloadTooLarge`, and the rest is never read."""
    announced = request.headers.get("content-length")
    if announced is not None:
        try:
            length = int(announced)
            if length < 0:
                raise ValueError
        except ValueError:
            raise ValidationFailed(f"Content-Length must be a number of bytes (got {announced!r})",
                                   field="Content-Length") from None
        if length > limit:
            raise PayloadTooLarge(f"request body of {length} bytes is over the limit of {limit} bytes",
                                  field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes", field="body")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # what Starlette's own request.body() caches, for any later reader
    return body


def _body_left_unread(request: Request) -> bool:
    announced = request.headers.get("content-length")
    has_body = (announced not in (None, "0")) or "chunked" in request.headers.get("transfer-encoding", "").lower()
    return has_body and not getattr(request, "_stream_consumed", False) and not hasattr(request, "_body")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _same_origin(request: Request) -> None:
    """Anonymous loopback access is for this machine's own tools and pages. A web page from
    anywhere else could otherwise make the browser drive the local server (a cross-site
    request, or DNS rebinding with a foreign Host header), so both must look local."""
    host = request.headers.get("host", "")
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if hostname.strip("[]") not in ("127.0.0.1", "localhost", "::1"):
        raise ForbiddenOrigin(f"anonymous access is for http://127.0.0.1 only (Host {host!r}); "
                               "send an API key")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != host:
        raise ForbiddenOrigin(f"a page from {origin} may not use this server without an API key")


def authenticate(request: Request, services: Services) -> Principal:
    """The caller, from ``Authorization: Bearer <key>`` or (when allowed) anonymous loopback."""
    client = (request.client.host, request.client.port) if request.client else None
    refused = own_request_refusal(client)
    if refused:
        raise Unauthenticated(refused)
    presented = _bearer(request)
    if presented is not None:
        principal = services.keys.authenticate(presented)
        if principal is None:
            raise Unauthenticated("the API key is unknown or revoked")
        return principal
    if services.allow_anonymous_loopback and is_loopback(request.client.host if request.client else None):
        _same_origin(request)
        refused = anonymous_refusal(services.keys, with_scoped_keys=services.anonymous_with_scoped_keys)
        if refused:
            raise Unauthenticated(refused)
        return Principal(key_id=None, role=Role.OWNER, sandbox_id=None)
    if request.headers.get("authorization"):
        raise Unauthenticated("send the API key as 'Authorization: Bearer <key>'")
    raise Unauthenticated("an API key is required: send 'Authorization: Bearer <key>' "
                          "(create one with `concierge keys create`)")


def dispatch(route: ApiRoute, services: Services) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint for ``route``."""

    async def endpoint(request: Request) -> Response:
        try:
            principal: Principal | None = None
            if route.role is not None:
                principal = authenticate(request, services)
                principal.require(route.role, f"{route.method} {route.path}")
            with acting_as(principal.actor if principal else None):
                result = await route.handler(Ctx(request, principal, services))
            if isinstance(result, Response):
                return result
            if isinstance(route.response, (ListOf, PageOf)):
                # A page of a thousand rows takes a while to serialize: not on the event loop
                # (and in pydantic-core, which does it many times faster than json.dumps).
                body = await off_loop(json_in_slices, result)
                return Response(body, status_code=route.status, media_type="application/json")
            return _json_response(result, route.status)
        except ConciergeError as exc:
            response = error_response(exc)
            if _body_left_unread(request):
                # Refused before (all of) its body was read: close the connection after the
                # answer, so the server does not go on receiving and dropping the rest of it.
                response.headers["Connection"] = "close"
            return response
        except Exception as exc:  # a bug: 500 with the request id, details in the log
            return internal_error(request, exc)

    endpoint.__name__ = route.handler.__name__
    return endpoint
