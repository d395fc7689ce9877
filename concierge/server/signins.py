"""OAuth sign-ins held by ``serve``: the link a register (or authorize) answers with, and the
callback route the browser comes back to.

    POST …/sources/{id}/user-mcp/authorize   a new sign-in; answers ``authorize_url``
    GET  /api/v1/oauth/callback              public (the browser has no key): the redirect's
                                             ``state`` finds its sign-in, which exchanges the
                                             code; then the source's health check runs

Each sign-in waits in this process (its PKCE verifier never leaves it) for at most
``timeout`` seconds; a new sign-in of the same source replaces the old one. When a sign-in
ends without tokens the source stays ``auth_required`` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from starlette.responses import HTMLResponse

from concierge.registry.models import AuthKind, Outcome, SourceStatus
from concierge.server.api import ApiRoute, Ctx

if TYPE_CHECKING:
    from concierge.mcp_client.signin import SignIn
    from concierge.registry import Registry

__all__ = ["CALLBACK_PATH", "ROUTES", "SignIns"]

log = logging.getLogger("concierge.server")

CALLBACK_PATH = "/api/v1/oauth/callback"
SRC = "/api/v1/storage/sandboxes/{sandbox_id}/sources/{source_id}"


class SignIns:
    """The sign-ins waiting in this server, by source."""

    def __init__(self, registry: Registry, *, timeout: float = 600.0) -> None:
        from concierge.mcp_client.oauth_callback import CallbackInbox

        self.registry, self.timeout = registry, timeout
        self.inbox = CallbackInbox()
        self._waiting: dict[str, tuple[SignIn, asyncio.Task[Any]]] = {}

    def __repr__(self) -> str:
        return f"SignIns(waiting={sorted(self._waiting)})"

    def wants_sign_in(self, outcome: Outcome) -> bool:
        if outcome.status != SourceStatus.AUTH_REQUIRED or outcome.data_source_id is None:
            return False
        source = self.registry.get_source(outcome.data_source_id)
        return source.auth_kind == AuthKind.OAUTH and source.grant != "client_credentials"

    async def start(self, source_id: str, *, base_url: str, sandbox: str | None = None) -> str | None:
        """A new sign-in of ``source_id``; its authorize URL (None if the server let us in)."""
        await self.cancel(source_id)
        redirect_uri = base_url.rstrip("/") + CALLBACK_PATH
        sign_in = await self.registry.begin_sign_in(source_id, sandbox=sandbox, inbox=self.inbox,
                                                    redirect_uri=redirect_uri, timeout=self.timeout)
        task = asyncio.get_running_loop().create_task(self._finish(source_id, sign_in),
                                                      name=f"sign-in {source_id}")
        self._waiting[source_id] = (sign_in, task)
        return sign_in.authorize_url

    async def _finish(self, source_id: str, sign_in: SignIn) -> None:
        try:
            await self.registry.finish_sign_in(source_id, sign_in)
        except Exception:  # noqa: BLE001 - a deleted source, a bug: logged, never raised into the loop
            log.exception("finishing the sign-in of %s failed", source_id)
        finally:
            held = self._waiting.get(source_id)
            if held is not None and held[0] is sign_in:
                del self._waiting[source_id]

    async def cancel(self, source_id: str) -> None:
        held = self._waiting.pop(source_id, None)
        if held is not None:
            await held[0].cancel()
            held[1].cancel()

    async def aclose(self) -> None:
        for source_id in list(self._waiting):
            await self.cancel(source_id)


def _base_url(ctx: Ctx) -> str:
    return str(ctx.request.base_url)


async def start_or_say_why(ctx: Ctx, source_id: str, sandbox: str | None) -> tuple[str | None, str]:
    """A new sign-in's link and what to tell the person; when it cannot start (the server is
    unreachable, discovery or registration failed) no link, and why (the source stays
    ``auth_required`` with that reason: it is the upstream's failure, not this request's)."""
    from concierge.errors import ConnectorError

    try:
        url = await _sign_ins(ctx).start(source_id, base_url=_base_url(ctx), sandbox=sandbox)
    except ConnectorError as exc:
        return None, f"the sign-in could not start: {exc.detail}"
    if url is None:
        return None, "the server let Concierge in without a sign-in"
    return url, "open this link to sign in; the source becomes active once you have"


def _sign_ins(ctx: Ctx) -> SignIns:
    sign_ins = ctx.services.sign_ins
    assert sign_ins is not None, "build_app makes one"
    return sign_ins


async def authorize(ctx: Ctx) -> Outcome:
    source_id = ctx.param("source_id")
    sandbox = ctx.sandbox_ref()
    await ctx.backend.get_source(source_id, sandbox=sandbox)  # 404 for another sandbox's
    url, detail = await start_or_say_why(ctx, source_id, sandbox)
    source = await ctx.backend.get_source(source_id, sandbox=sandbox)
    return Outcome(data_source_id=source.id, status=source.status.value, name=source.name,
                   ingestion_mode=source.ingestion_mode, health_error=source.health_error,
                   detail=detail, authorize_url=url)


async def callback(ctx: Ctx) -> HTMLResponse:
    from concierge.mcp_client.oauth_callback import callback_page

    params = {k: v for k, v in ctx.request.query_params.items()}
    delivery = _sign_ins(ctx).inbox.deliver(params)
    _, page = callback_page(delivery, params)
    # Always 200: a page for the person's browser, which says what happened (a forged or
    # stale state only ever gets "no sign-in is waiting for this link").
    return HTMLResponse(page, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


ROUTES = [
    ApiRoute("POST", SRC + "/user-mcp/authorize", authorize,
             "Start a new OAuth sign-in of the source; answers the link to open", "editor", "sources",
             response=Outcome, errors=(409, 502),
             description="For an `oauth` source (authorization-code grant): answers `authorize_url`. "
                         "Once the person signs in there, the authorization server redirects to "
                         f"`{CALLBACK_PATH}`, the code is exchanged and the health check runs."),
    ApiRoute("GET", CALLBACK_PATH, callback, "Where the browser lands after an OAuth sign-in", "public",
             "sources", response={"type": "string"}, media="text/html",
             description="The authorization server's redirect (`code` and `state`, or `error`). Needs no "
                         "key: the `state` of a sign-in waiting in this server is what it is matched by. "
                         "Always 200: the page tells the person what happened (signed in, refused, or no "
                         "sign-in waiting for this link)."),
]
