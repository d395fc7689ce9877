"""Health, the OpenAPI document and who-am-I."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from concierge import __version__
from concierge.server.api import ApiRoute, Ctx
from concierge.wire import Health, Me

__all__ = ["ROUTES"]


async def healthz(ctx: Ctx) -> Health:
    return Health(status="ok", version=__version__)


async def openapi_json(ctx: Ctx) -> JSONResponse:
    return JSONResponse(ctx.services.openapi)


async def me(ctx: Ctx) -> Me:
    p = ctx.caller
    return Me(key_id=p.key_id, role=p.role.value, sandbox_id=p.sandbox_id,
              default_sandbox=ctx.default_sandbox())


_OPENAPI_SCHEMA: dict[str, Any] = {"type": "object", "description": "An OpenAPI 3.1 document."}

ROUTES = [
    ApiRoute("GET", "/healthz", healthz, "Liveness check", "public", "meta", response=Health),
    ApiRoute("GET", "/openapi.json", openapi_json, "This OpenAPI document", "public", "meta",
             response=_OPENAPI_SCHEMA),
    ApiRoute("GET", "/api/v1/me", me, "The calling key: role, sandbox scope and default sandbox",
             "viewer", "meta", response=Me),
]
