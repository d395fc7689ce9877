"""`build_app`: the whole HTTP service as one Starlette app.

    RequestIdMiddleware                      every response carries X-Request-Id
    OwnAddressMiddleware                     the URL policy learns each address the server is reached on
    └── Starlette router
        ├── the route table (routes_*.py, webhooks.py, chat.py, widget.py): one `ApiRoute`
        │   per endpoint, dispatched by `api.dispatch` (auth, role, errors)
        └── the agent MCP gateway mount (gateway_mount.py)

The registry is the embedded one (`LocalBackend`); the server adds API keys, webhooks, the
concierge's conversations and the widget on top, all in the same SQLite file.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from concierge.backend import LocalBackend
from concierge.mcp_client.url_policy import UrlPolicy
from concierge.offloop import loop_first
from concierge.registry import Registry
from concierge.registry.webhooks import Webhooks
from concierge.server import (
    chat,
    routes_agents,
    routes_audit,
    routes_meta,
    routes_sandboxes,
    routes_sources,
    signins,
    webhooks,
    widget,
)
from concierge.server.api import ApiRoute, dispatch
from concierge.server.auth import KeyStore
from concierge.server.errors import RequestIdMiddleware, internal_error
from concierge.server.gateway_mount import MCP_PATH, OPENAPI_PATH_ITEM, GatewayMount
from concierge.server.openapi import build_openapi
from concierge.server.services import Services

__all__ = ["ROUTE_TABLE", "build_app"]

log = logging.getLogger("concierge.server")

ROUTE_TABLE: tuple[ApiRoute, ...] = (
    *routes_meta.ROUTES,
    *routes_sandboxes.ROUTES,
    *routes_sources.ROUTES,
    *signins.ROUTES,
    *routes_agents.ROUTES,
    *routes_audit.ROUTES,
    *webhooks.ROUTES,
    *chat.ROUTES,
    *widget.ROUTES,
)


def _group(routes: Sequence[ApiRoute]) -> dict[str, dict[str, ApiRoute]]:
    """Methods by path, literal segments before parameters at each position (``…/sources/user-mcp``
    before ``…/sources/{source_id}``): a path takes every method, so the first match wins."""
    by_path: dict[str, dict[str, ApiRoute]] = defaultdict(dict)
    for route in routes:
        if route.method in by_path[route.path]:
            raise ValueError(f"duplicate route {route.method} {route.path}")
        by_path[route.path][route.method] = route
    order = sorted(by_path, key=lambda p: [(seg.startswith("{"), seg) for seg in p.split("/")])
    return {path: by_path[path] for path in order}


class _PathApp:
    """Every method of one path (an ASGI app, so Starlette passes all methods here and the
    405 answer is ours, in JSON)."""

    def __init__(self, methods: dict[str, ApiRoute], services: Services) -> None:
        self.handlers = {m: dispatch(r, services) for m, r in methods.items()}
        if "GET" in self.handlers and "HEAD" not in self.handlers:
            self.handlers["HEAD"] = self.handlers["GET"]
        self.allowed = ", ".join(sorted(methods))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        handler = self.handlers.get(request.method)
        if handler is None:
            response: Response = JSONResponse(
                {"error": "method_not_allowed",
                 "detail": f"{request.method} is not allowed here; use {self.allowed}"},
                status_code=405, headers={"Allow": self.allowed})
        else:
            response = await handler(request)
        await response(scope, receive, send)


class OwnAddressMiddleware:
    """Tells the registry's URL policy every address and port a request arrived on (the ASGI
    ``server`` of the scope), so that no source can point at this server, whatever name or
    address the server was reached by — also when the app was not told its bind address."""

    def __init__(self, app: Any, registry: Registry) -> None:
        self.app, self.registry = app, registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] == "http" and server and server[1] is not None:
            self.registry.url_policy.add_self(str(server[0]), int(server[1]))
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return JSONResponse({"error": "not_found", "detail": f"no route {request.url.path}"}, 404)
    return JSONResponse({"error": "http_error", "detail": str(exc.detail)}, exc.status_code,
                        headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return internal_error(request, exc)


def build_app(registry: Registry | None = None, *,
              backend_factory: Callable[[], LocalBackend] | None = None,
              keys: KeyStore | None = None, allow_anonymous_loopback: bool = False,
              host: str = "127.0.0.1", model_factory: Callable[[], Any] | None = None,
              chat_run_timeout: float = 120.0, cors_origins: Sequence[str] = (),
              url_policy: UrlPolicy | None = None, port: int | None = None,
              anonymous_with_scoped_keys: bool = False, allow_stdio: bool = False,
              stateless_mcp: bool = False) -> Starlette:
    """The service over ``registry`` (or ``backend_factory()``; default: ``LocalBackend.open()``).

    ``keys``: the API key store (default: the registry database's). ``allow_anonymous_loopback``:
    serve requests without a key when they come from loopback (local use only). ``host``: the
    bind address (loopback turns on the MCP SDK's Host check for the gateway mount).
    ``model_factory``: the concierge's chat model (default: ``OPENAI_API_KEY`` → OpenAI, else
    the offline planner). ``cors_origins``: web origins allowed to call the API from a browser
    (the widget embedded on another site); ``["*"]`` allows any (keys are bearer tokens, never
    cookies, so a page still needs a key). A registry passed in stays open when the app stops; one the app
    opened is closed. ``url_policy``: which addresses sources may point at (default: the
    registry's, local); ``host`` and ``port`` are recorded in it as Concierge itself, and so
    is every address a request arrives on. ``anonymous_with_scoped_keys``: keep serving
    anonymous loopback requests while keys limited to a sandbox or role exist (off: refused).
    ``allow_stdio``: let owner keys register stdio sources, whose programs run on this machine
    (off: refused, and existing ones are not run).
    """
    owns_backend = registry is None
    if registry is not None:
        backend = LocalBackend(registry)
    else:
        backend = backend_factory() if backend_factory is not None else LocalBackend.open()
    if url_policy is not None:
        backend.registry.url_policy = url_policy
    if port is not None:
        backend.registry.url_policy.add_self(host, port)
    backend.registry.allow_stdio = allow_stdio
    services = Services(
        backend=backend, keys=keys or KeyStore(backend.registry.store),
        webhooks=Webhooks(backend.registry),
        chat=chat.ChatService(backend, model_factory=model_factory, run_timeout=chat_run_timeout),
        allow_anonymous_loopback=allow_anonymous_loopback,
        anonymous_with_scoped_keys=anonymous_with_scoped_keys,
        openapi=build_openapi(ROUTE_TABLE, extra_paths={MCP_PATH: OPENAPI_PATH_ITEM}),
        sign_ins=signins.SignIns(backend.registry))
    if port is not None and services.sign_ins is not None:  # sign-ins started from chat come back here
        bind = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
        starter = services.sign_ins.start
        backend.sign_in_hook = lambda source_id, sandbox: starter(
            source_id, base_url=f"http://{bind}:{port}", sandbox=sandbox)
    gateway = GatewayMount(services, host=host, stateless=stateless_mcp)

    routes: list[Route] = [Route(path, _PathApp(methods, services))
                           for path, methods in _group(ROUTE_TABLE).items()]
    routes.append(Route(MCP_PATH, gateway))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # While serving, a thread building a big page lets the loop have the GIL back soon
        # (`loop_first`): /healthz under 1,000-row pages, p90 8-10 ms at the default interval.
        with loop_first():
            async with anyio.create_task_group() as tg:
                await gateway.run(tg)
                await services.chat.run(tg)
                try:
                    yield
                finally:
                    services.chat.stop()
                    gateway.stop()
            await services.chat.aclose()
            if services.sign_ins is not None:
                await services.sign_ins.aclose()
            if owns_backend:
                await backend.aclose()
            elif backend._gateway is not None:  # the registry is the caller's; our MCP sessions are ours
                await backend._gateway.aclose()

    middleware = [Middleware(RequestIdMiddleware), Middleware(OwnAddressMiddleware, registry=backend.registry)]
    if cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"], max_age=600))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.services = services
    return app
