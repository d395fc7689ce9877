"""An agent's catalog as a streamable-HTTP MCP endpoint under the API, behind the same keys:

    /api/v1/storage/sandboxes/{sandbox_id}/agents/{slug}/mcp

Each (sandbox, agent) gets its own MCP server (`concierge.gateway_server`), built on first use;
its session manager runs in a task group owned by the app's lifespan. Calls need an editor key
for that sandbox (a tool call can change things on the user's server).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from concierge.errors import ConciergeError
from concierge.gateway_lane import FastLane
from concierge.gateway_server import build_gateway_app
from concierge.registry import acting_as
from concierge.server.api import Ctx, authenticate
from concierge.server.auth import Role
from concierge.server.errors import error_response, internal_error

if TYPE_CHECKING:
    from concierge.server.services import Services

__all__ = ["MCP_PATH", "OPENAPI_PATH_ITEM", "GatewayMount"]

MCP_PATH = "/api/v1/storage/sandboxes/{sandbox_id}/agents/{slug}/mcp"

OPENAPI_PATH_ITEM: dict[str, Any] = {
    method: {
        "operationId": f"agent_mcp_{method}",
        "summary": "The agent's catalog as an MCP server (streamable HTTP; editor key)",
        "tags": ["catalog"],
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                       for p in ("sandbox_id", "slug")],
        "responses": {"200": {"description": "MCP streamable HTTP (JSON or text/event-stream)"},
                      "202": {"description": "A notification or response was accepted"},
                      "400": {"description": "An MCP protocol error (JSON-RPC error body), e.g. a "
                                             "GET or DELETE without an MCP session id"},
                      "406": {"description": "The Accept header does not allow the MCP answer"},
                      "401": {"description": "No or unknown API key"},
                      "403": {"description": "Not allowed for this key"},
                      "404": {"description": "Unknown sandbox or agent"}},
        "security": [{"bearerAuth": []}],
    } for method in ("get", "post", "delete")
}


class GatewayMount:
    """The ASGI app behind `MCP_PATH` (a Starlette route passes the path parameters)."""

    def __init__(self, services: Services, *, host: str, stateless: bool = False, fast_lane: bool = True) -> None:
        self.services = services
        self.host = host
        self.fast_lane = fast_lane
        """Stateless-era ``tools/call`` requests take `concierge.gateway_lane` (False: the SDK path)."""
        self.stateless = stateless
        """No MCP sessions: every request stands alone, so any instance on the database answers
        it (``serve --stateless-mcp``); server-to-client notifications are lost."""
        self._managers: dict[tuple[str, str], tuple[Any, FastLane | None]] = {}
        self._lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()

    async def run(self, tg: TaskGroup) -> None:
        """Called from the app's lifespan: session managers start in ``tg``."""
        self._tg = tg

    def stop(self) -> None:
        self._stop.set()

    async def _serve_manager(self, manager: Any, *, task_status: TaskStatus[None]) -> None:
        cm: AbstractAsyncContextManager[Any] = manager.run()
        async with cm:
            task_status.started()
            await self._stop.wait()

    async def _manager(self, sandbox_id: str, slug: str) -> tuple[Any, FastLane | None]:
        key = (sandbox_id, slug)
        async with self._lock:
            held = self._managers.get(key)
            if held is None:
                if self._tg is None:
                    raise RuntimeError("the gateway mount needs the app's lifespan to run")
                app = build_gateway_app(self.services.backend, agent=slug, sandbox=sandbox_id,
                                        host=self.host, stateless=self.stateless, fast_lane=self.fast_lane)
                manager = app.state.session_manager
                await self._tg.start(self._serve_manager, manager)
                held = self._managers[key] = (manager, app.state.lane)
            return held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params") or {}
        request = Request(scope, receive)
        try:
            principal = authenticate(request, self.services)
            principal.require(Role.EDITOR, "the agent MCP endpoint")
            ctx = Ctx(request, principal, self.services)
            sb = ctx.sandbox(params["sandbox_id"])
            agent = await self.services.backend.get_agent(params["slug"], sandbox=sb.id)
            manager, lane = await self._manager(sb.id, agent.slug)
        except ConciergeError as exc:
            await error_response(exc)(scope, receive, send)
            return
        except Exception as exc:
            await internal_error(request, exc)(scope, receive, send)
            return
        with acting_as(principal.actor):
            if lane is None:
                await manager.handle_request(scope, receive, send)  # the SDK's body limit first
            else:  # (the lane keeps the same limit, and gives the SDK what it does not take)
                await lane.handle(scope, receive, send, manager.handle_request)
