"""The mcp SDK's OAuth clients with the hooks Concierge needs; the OAuth itself is the SDK's.

The SDK (``mcp.client.auth``) does discovery (RFC 9728 protected resource metadata, RFC 8414 /
OIDC authorization server metadata), client registration (a client ID metadata document
where the server supports one, else dynamic registration), PKCE, the RFC 8707 ``resource``
parameter, the code exchange, refresh and ``client_credentials``. What `_Hooks` adds:

    restart      when the access token expires and what discovery found are stored with the
                 tokens (`SourceTokenStorage`) and restored, so a new process refreshes at the
                 right token endpoint instead of asking for a new sign-in
    early        a token counts as expired ``margin`` seconds before it is (at most a tenth of
                 its lifetime): the refresh happens before a request can meet a 401
    refused      a refresh the authorization server refuses (``invalid_grant``: revoked,
                 expired, rotated) deletes the stored tokens and raises ``auth_required``
                 ("sign in again: …") at once, unless the store meanwhile holds newer tokens
                 (another process refreshed first): those are used; a server error keeps the
                 tokens and uses the old access token while it still lives
    exchange     a refused code or client-credentials exchange is one clear sentence (the
                 SDK's message quotes the whole response body)
    scope        a scope the person gave wins over the one the server's challenge suggests
    fixed client a pre-registered client id (and secret) is used as is, never re-registered
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from mcp.shared.exceptions import MCPDeprecationWarning

from concierge.errors import ConnectorError
from concierge.mcp_client._sanitize import one_line
from concierge.mcp_client.endpoint import display_url
from concierge.mcp_client.kinds import ErrorKind
from concierge.mcp_client.oauth_store import Discovery, SourceTokenStorage

__all__ = ["AuthCodeProvider", "ClientCredentialsProvider", "Refusal", "read_refusal"]

_PERMANENT_STATUSES = frozenset({400, 401, 403})
"""RFC 6749 §5.2: a token request the server refuses on its merits (invalid_grant,
invalid_client, …) answers 400 or 401; a 5xx or 429 is the server's trouble, worth retrying."""


class Refusal:
    """Why a token endpoint said no: its status and its RFC 6749 ``error`` (and description)."""

    def __init__(self, status: int, error: str | None, description: str | None, where: str) -> None:
        self.status, self.error, self.description, self.where = status, error, description, where

    @property
    def permanent(self) -> bool:
        return self.status in _PERMANENT_STATUSES

    def words(self, redact: Any = None) -> str:
        what = self.error or f"HTTP {self.status}"
        if self.description:
            what = f"{what}: {self.description}"
        text = one_line(what, 160)
        return redact(text) if redact is not None else text


async def read_refusal(response: httpx2.Response) -> Refusal:
    where = display_url(str(response.request.url)) if response.request is not None else "the token endpoint"
    error = description = None
    try:
        body = json.loads(await response.aread())
        if isinstance(body, dict):
            error = str(body["error"]) if isinstance(body.get("error"), str) else None
            description = str(body["error_description"]) if isinstance(body.get("error_description"), str) else None
    except (ValueError, httpx2.HTTPError):
        pass
    return Refusal(response.status_code, one_line(error, 64) if error else None,
                   one_line(description, 120) if description else None, where)


class _Hooks:
    """The hooks (see the module docstring), mixed into each SDK provider below."""

    context: Any
    grant: str = "authorization_code"

    def _setup(self, storage: SourceTokenStorage, *, margin: float, scope: str | None,
               fixed_client: OAuthClientInformationFull | None, redact: Any) -> None:
        self.storage = storage
        self.margin = margin
        self.user_scope = scope
        self.fixed_client = fixed_client
        self.redact = redact
        self.expires_at: float | None = None
        """When the access token really expires (the SDK's clock is set ``margin`` earlier)."""

    def _early(self, expires_at: float | None) -> float | None:
        if expires_at is None:
            return None
        tokens = self.context.current_tokens
        lifetime = tokens.expires_in if tokens is not None and tokens.expires_in else None
        margin = min(self.margin, 0.1 * lifetime) if lifetime else self.margin
        return expires_at - margin

    async def _initialize(self) -> None:
        await super()._initialize()  # type: ignore[misc]
        ctx = self.context
        if self.fixed_client is not None:
            ctx.client_info = self.fixed_client
        self.expires_at = await self.storage.expires_at() if ctx.current_tokens is not None else None
        ctx.token_expiry_time = self._early(self.expires_at)
        if ctx.oauth_metadata is None:
            found = await self.storage.get_discovery()
            if found is not None:
                ctx.protected_resource_metadata = found.resource
                ctx.auth_server_url = found.server
                ctx.oauth_metadata = found.metadata

    async def _after_tokens(self) -> None:
        ctx = self.context
        self.expires_at = await self.storage.expires_at()
        ctx.token_expiry_time = self._early(self.expires_at)
        await self.storage.set_discovery(Discovery(ctx.protected_resource_metadata, ctx.auth_server_url,
                                                   ctx.oauth_metadata))

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        if response.status_code not in (200, 201):
            refusal = await read_refusal(response)
            raise self._exchange_refused(refusal)
        await super()._handle_token_response(response)  # type: ignore[misc]
        await self._after_tokens()

    def _exchange_refused(self, refusal: Refusal) -> ConnectorError:
        words = refusal.words(self.redact)
        if self.grant == "client_credentials":
            if refusal.permanent:
                return ConnectorError(ErrorKind.UNAUTHORIZED, f"the authorization server at {refusal.where} refused "
                                      f"the client credentials ({words}) — check the client id and secret",
                                      delivered=False)
            return ConnectorError(ErrorKind.SERVER_ERROR, f"the authorization server at {refusal.where} could not "
                                  f"issue a token ({words}) — try again", delivered=False)
        return ConnectorError(ErrorKind.AUTH_REQUIRED, f"sign in again: the authorization server at {refusal.where} "
                              f"refused the sign-in ({words})", delivered=False)

    async def _handle_refresh_response(self, response: httpx2.Response) -> bool:
        if response.status_code == 200:
            ok = bool(await super()._handle_refresh_response(response))  # type: ignore[misc]
            if ok:
                await self._after_tokens()
            return ok
        refusal = await read_refusal(response)
        words = refusal.words(self.redact)
        if refusal.permanent:
            if await self._adopt_newer():
                return True
            self.context.clear_tokens()
            await self.storage.clear_tokens()
            raise ConnectorError(ErrorKind.AUTH_REQUIRED, f"sign in again: the authorization server at "
                                 f"{refusal.where} refused to refresh the access token ({words})", delivered=False)
        if self.expires_at is None or time.time() < self.expires_at - 1.0:
            self.context.token_expiry_time = self.expires_at  # the old one still works meanwhile
            return True
        raise ConnectorError(ErrorKind.SERVER_ERROR, f"the authorization server at {refusal.where} could not "
                             f"refresh the access token ({words}) — try again", delivered=False)

    async def _adopt_newer(self) -> bool:
        """After a refused refresh: if the store holds other tokens than the ones refreshed (a
        process sharing the store refreshed first, and the server rotated the refresh token),
        use those instead of deleting them."""
        used = self.context.current_tokens
        stored = await self.storage.get_tokens()
        if stored is None or used is None or stored.refresh_token == used.refresh_token:
            return False
        self.context.current_tokens = stored
        self.expires_at = await self.storage.expires_at()
        self.context.token_expiry_time = self._early(self.expires_at)
        return True

    async def _perform_authorization(self) -> httpx2.Request:
        if self.user_scope:
            self.context.client_metadata.scope = self.user_scope
        return await super()._perform_authorization()  # type: ignore[misc,no-any-return]


class AuthCodeProvider(_Hooks, OAuthClientProvider):
    """The SDK's authorization-code client (PKCE, refresh) with Concierge's hooks."""

    grant = "authorization_code"

    def __init__(self, server_url: str, client_metadata: OAuthClientMetadata, *, storage: SourceTokenStorage,
                 redirect_handler: Callable[[str], Awaitable[None]],
                 callback_handler: Callable[[], Awaitable[AuthorizationCodeResult]],
                 client_metadata_url: str | None, margin: float, scope: str | None,
                 fixed_client: OAuthClientInformationFull | None, redact: Any) -> None:
        super().__init__(server_url, client_metadata, storage, redirect_handler=redirect_handler,
                         callback_handler=callback_handler, client_metadata_url=client_metadata_url)
        self._setup(storage, margin=margin, scope=scope, fixed_client=fixed_client, redact=redact)


class ClientCredentialsProvider(_Hooks, ClientCredentialsOAuthProvider):
    """The SDK's ``client_credentials`` client with Concierge's hooks."""

    grant = "client_credentials"

    def __init__(self, server_url: str, *, storage: SourceTokenStorage, client_id: str, client_secret: str,
                 method: str, scope: str | None, issuer: str | None, margin: float, redact: Any) -> None:
        with warnings.catch_warnings():
            # No issuer yet means first use: the one discovery finds is pinned for every later
            # use (see `OAuth`), which is what passing it here would do.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            super().__init__(server_url, storage, client_id, client_secret,
                             token_endpoint_auth_method=method, scope=scope, issuer=issuer)  # type: ignore[arg-type]
        self._setup(storage, margin=margin, scope=scope, fixed_client=None, redact=redact)
