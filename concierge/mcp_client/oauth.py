"""OAuth 2.1 to an upstream MCP server: `OAuth`, the ``auth`` of an `Endpoint`.

One `OAuth` per source, shared by every connection to it (pooled sessions, health checks,
sign-ins), so that one refresh is in flight per source. It drives the mcp SDK's OAuth client
(`_oauth_provider`; no OAuth is written here) and adds:

    fast path    a request with a valid token is signed without the SDK's lock (which is held
                 until a response's headers arrive, and would queue a source's calls behind
                 each other); an expired or refused token takes the SDK's path, where one
                 refresh runs while the others wait for it
    no person    outside a sign-in nobody can open a browser: where a person is needed the
                 request fails at once with ``auth_required`` and a sentence saying why
                 ("sign in: …", "sign in again: …"), and later requests fail the same way
                 without touching the network until new tokens are stored (by a sign-in here
                 or in another process: the store is read again)
    grants       ``authorization_code`` (sign in with `concierge.mcp_client.signin`) and
                 ``client_credentials`` (machine to machine, no person)
    clients      in this order: a pre-registered ``client_id`` (and secret) if given; else the
                 SDK registers Concierge: with the client ID metadata document at
                 ``client_metadata_url`` where the server supports those, else dynamically

Tokens, refresh tokens and client secrets live in an `OAuthStore` (the registry's vault) and
never appear in a repr, a log line or an error message (`secret_values` feeds the redaction).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import httpx2
from mcp.client.auth import OAuthFlowError, OAuthRegistrationError
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from pydantic import AnyUrl

from concierge.errors import ConnectorError
from concierge.mcp_client._oauth_provider import AuthCodeProvider, ClientCredentialsProvider
from concierge.mcp_client._sanitize import one_line
from concierge.mcp_client.endpoint import display_url, redact
from concierge.mcp_client.kinds import ErrorKind
from concierge.mcp_client.oauth_store import OAuthStore, SourceTokenStorage

__all__ = ["DEFAULT_REFRESH_MARGIN", "Grant", "OAuth", "OAuthStatus"]

Grant = Literal["authorization_code", "client_credentials"]
DEFAULT_REFRESH_MARGIN = 60.0
"""Seconds before expiry at which a token is refreshed (at most a tenth of its lifetime)."""
_PLACEHOLDER_REDIRECT = "http://127.0.0.1/callback"
"""The redirect URI the shared (non-interactive) client names; a sign-in sets the real one."""

Provider = AuthCodeProvider | ClientCredentialsProvider
RedirectHandler = Callable[[str], Awaitable[None]]
CallbackHandler = Callable[[], Awaitable[AuthorizationCodeResult]]


class _QuietExpected(logging.Filter):
    """The SDK logs every failed flow with a traceback; `OAuth.drive` reports each as one
    `ConnectorError` to its caller, so the log line is noise (and quotes response bodies)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectorError | OAuthFlowError)


logging.getLogger("mcp.client.auth.oauth2").addFilter(_QuietExpected())


@dataclass(frozen=True)
class OAuthStatus:
    """What can be shown about a source's OAuth state (no secret)."""

    grant: Grant
    signed_in: bool
    """Tokens are stored (for ``client_credentials``: a token was obtained)."""
    expires_at: float | None
    can_refresh: bool
    client_registered: bool
    client_id: str | None
    """The client id in use (a public identifier, not a secret)."""
    needs_sign_in: str | None
    """Why a person must sign in (``"sign in again: …"``), when one must."""
    signing_in: bool
    authorization_server: str | None


class OAuth(httpx2.Auth):
    """OAuth 2.1 for the MCP server at ``server_url``, its state kept in ``store`` under ``source``.

    ``redirect_uri`` is where the authorization server sends the browser back after a
    sign-in: a pre-registered client needs the one it was registered with; otherwise a sign-in
    picks one (a loopback callback, or the route of the HTTP service).
    """

    def __init__(self, server_url: str, store: OAuthStore, *, source: str, grant: Grant = "authorization_code",
                 client_id: str | None = None, client_secret: str | None = None,
                 token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] | None = None,
                 scope: str | None = None, redirect_uri: str | None = None, client_metadata_url: str | None = None,
                 client_name: str = "Concierge", issuer: str | None = None,
                 refresh_margin: float = DEFAULT_REFRESH_MARGIN) -> None:
        if grant not in ("authorization_code", "client_credentials"):
            raise ValueError(f"grant must be authorization_code or client_credentials (got {grant!r})")
        if grant == "client_credentials" and not (client_id and client_secret):
            raise ValueError("the client_credentials grant needs a client id and a client secret")
        if client_secret and not client_id:
            raise ValueError("a client secret needs its client id")
        if client_metadata_url is not None and not client_metadata_url.startswith("https://"):
            raise ValueError("client_metadata_url must be an https URL (the client ID metadata document)")
        self.server_url, self.store, self.source, self.grant = server_url, store, source, grant
        self.client_id, self._client_secret = client_id, client_secret
        self.token_endpoint_auth_method = token_endpoint_auth_method or (
            "client_secret_basic" if grant == "client_credentials" else "client_secret_post")
        self.scope, self.redirect_uri, self.client_metadata_url = scope, redirect_uri, client_metadata_url
        self.client_name, self.issuer, self.refresh_margin = client_name, issuer, refresh_margin
        self.storage = SourceTokenStorage(store, source)
        self._provider: Provider | None = None
        self._building = anyio.Lock()
        self.needs_sign_in: str | None = None
        """Why a person must sign in, once a request found out (cleared by new tokens)."""
        self.signing_in = False
        """A sign-in is waiting for its person (set by `concierge.mcp_client.signin`)."""
        self.refreshes = 0
        """Refresh requests sent (one per expiry, however many requests were waiting)."""
        self._had_tokens = False
        self._dead_token: str | None = None

    def __repr__(self) -> str:
        secret = ", client_secret='***'" if self._client_secret else ""
        return (f"OAuth(source={self.source!r}, url={display_url(self.server_url)!r}, grant={self.grant!r}, "
                f"client_id={self.client_id!r}{secret})")

    # -- secrets ----------------------------------------------------------------------------------

    def secret_values(self) -> list[str]:
        """The secrets this client holds right now (for redaction from messages)."""
        out = [self._client_secret] if self._client_secret else []
        provider = self._provider
        if provider is not None:
            tokens = provider.context.current_tokens
            if tokens is not None:
                out += [t for t in (tokens.access_token, tokens.refresh_token) if t]
            info = provider.context.client_info
            if info is not None and info.client_secret:
                out.append(info.client_secret)
        return out

    def redact(self, text: str) -> str:
        return redact(text, {str(i): v for i, v in enumerate(self.secret_values())})

    # -- the SDK's client -------------------------------------------------------------------------

    def _fixed_client(self, redirect_uri: str | None) -> OAuthClientInformationFull | None:
        if self.client_id is None or self.grant != "authorization_code":
            return None
        uri = redirect_uri or self.redirect_uri or _PLACEHOLDER_REDIRECT
        method = self.token_endpoint_auth_method if self._client_secret else "none"
        return OAuthClientInformationFull(client_id=self.client_id, client_secret=self._client_secret,
                                          redirect_uris=[AnyUrl(uri)], token_endpoint_auth_method=method,
                                          grant_types=["authorization_code", "refresh_token"], scope=self.scope)

    def build_provider(self, *, storage: Any = None, redirect_uri: str | None = None,
                       on_redirect: RedirectHandler | None = None,
                       on_callback: CallbackHandler | None = None) -> Provider:
        """A new SDK client for this source: the shared one (no person), or a sign-in's."""
        storage = storage or self.storage
        if self.grant == "client_credentials":
            assert self.client_id and self._client_secret
            return ClientCredentialsProvider(
                self.server_url, storage=storage, client_id=self.client_id, client_secret=self._client_secret,
                method=self.token_endpoint_auth_method, scope=self.scope, issuer=self.issuer,
                margin=self.refresh_margin, redact=self.redact)
        metadata = OAuthClientMetadata(
            redirect_uris=[AnyUrl(redirect_uri or self.redirect_uri or _PLACEHOLDER_REDIRECT)],
            token_endpoint_auth_method="client_secret_post", grant_types=["authorization_code", "refresh_token"],
            response_types=["code"], client_name=self.client_name, scope=self.scope)
        return AuthCodeProvider(
            self.server_url, metadata, storage=storage, redirect_handler=on_redirect or self._no_person,
            callback_handler=on_callback or self._no_callback, client_metadata_url=self.client_metadata_url,
            margin=self.refresh_margin, scope=self.scope, fixed_client=self._fixed_client(redirect_uri),
            redact=self.redact)

    async def _shared(self) -> Provider:
        """The shared client, its state loaded from the store."""
        provider = self._provider
        if provider is None:
            async with self._building:
                if self._provider is None:
                    if self.grant == "client_credentials" and self.issuer is None:
                        found = await self.storage.get_discovery()
                        if found is not None and found.server:
                            self.issuer = found.server  # pinned on first use
                    self._provider = self.build_provider()
                provider = self._provider
        if not getattr(provider, "_initialized", False):
            async with provider.context.lock:
                if not getattr(provider, "_initialized", False):
                    await provider._initialize()
        return provider

    async def _no_person(self, authorize_url: str) -> None:
        raise self._need_sign_in()

    async def _no_callback(self) -> AuthorizationCodeResult:  # never reached: _no_person raised
        raise self._need_sign_in()

    def _need_sign_in(self) -> ConnectorError:
        had_tokens = self._had_tokens
        reason = self.needs_sign_in or (
            f"sign in again: the server at {display_url(self.server_url)} refused the access token "
            "and it could not be refreshed" if had_tokens else
            f"sign in: nobody has signed in to the server at {display_url(self.server_url)} yet")
        return ConnectorError(ErrorKind.AUTH_REQUIRED, reason, delivered=False)

    # -- state ------------------------------------------------------------------------------------

    async def reload(self) -> None:
        """Read the store again at the next request (new tokens were stored)."""
        self.needs_sign_in = self._dead_token = None
        if self._provider is not None:
            self._provider._initialized = False  # noqa: SLF001 - the SDK's own re-read switch

    async def forget(self) -> None:
        """Delete every stored item of this source (tokens, client, discovery): rotation, revoke."""
        await self.store.delete(self.source)
        if self._provider is not None:
            self._provider.context.clear_tokens()
            self._provider.context.client_info = None
            self._provider._initialized = False  # noqa: SLF001
        self._provider = None

    async def status(self) -> OAuthStatus:
        tokens = await self.storage.get_tokens()
        client = await self.storage.get_client_info()
        found = await self.storage.get_discovery()
        return OAuthStatus(
            grant=self.grant, signed_in=tokens is not None, expires_at=await self.storage.expires_at(),
            can_refresh=bool(tokens and tokens.refresh_token), client_registered=client is not None,
            client_id=self.client_id or (client.client_id if client is not None else None),
            needs_sign_in=self.needs_sign_in, signing_in=self.signing_in,
            authorization_server=found.server if found is not None else None)

    # -- httpx2.Auth -----------------------------------------------------------------------------

    async def _settle(self, provider: Provider) -> Provider:
        """Before a request that cannot be signed: fail at once if a person is needed."""
        if self.needs_sign_in is not None or (self.grant == "authorization_code"
                                              and provider.context.current_tokens is None):
            reason, dead = self.needs_sign_in, self._dead_token
            await self.reload()  # another process (or a sign-in) may have stored new tokens
            provider = await self._shared()
            tokens = provider.context.current_tokens
            if reason is not None and (tokens is None or tokens.access_token == dead):
                self.needs_sign_in, self._dead_token = reason, dead
                raise ConnectorError(ErrorKind.AUTH_REQUIRED, reason, delivered=False)
        if self.grant == "authorization_code" and provider.context.current_tokens is None:
            if self.signing_in:
                raise ConnectorError(ErrorKind.AUTH_REQUIRED, "sign in: a sign-in was started and is waiting for "
                                     "the person to open its link", delivered=False)
            raise self._need_sign_in()
        return provider

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        provider = await self._shared()
        ctx = provider.context
        if ctx.is_token_valid() and self.needs_sign_in is None:
            request.headers["Authorization"] = f"Bearer {ctx.current_tokens.access_token}"
            response = yield request
            if not _challenged(response):
                return
            ctx.token_expiry_time = 1.0  # refused: treat it as expired (the SDK then refreshes)
        else:
            provider = await self._settle(provider)
            ctx = provider.context
            if not ctx.is_token_valid():
                # Read the store first (under the SDK's lock, when the flow starts): another
                # process, or a request that held the lock before us, may have refreshed already.
                provider._initialized = False  # noqa: SLF001 - the SDK's own re-read switch
        self._had_tokens = ctx.current_tokens is not None
        flow = self.drive(provider, request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = yield outgoing
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        finally:
            await flow.aclose()

    async def drive(self, provider: Provider, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """The SDK client's flow for ``request``, its failures as `ConnectorError`s."""
        ctx = provider.context
        flow = provider.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                if outgoing is not request and _is_refresh(outgoing):
                    self.refreshes += 1
                response = yield outgoing
                outgoing = await flow.asend(response)
        except StopAsyncIteration:
            return
        except ConnectorError as err:
            if err.kind is ErrorKind.AUTH_REQUIRED and provider is self._provider:
                self.needs_sign_in = err.sentence
                tokens = ctx.current_tokens
                self._dead_token = tokens.access_token if tokens is not None else None
            raise
        except OAuthRegistrationError as exc:
            raise ConnectorError(ErrorKind.AUTH_REQUIRED, "sign in: the authorization server refused to register "
                                 f"Concierge as a client ({self._words(exc)}) — give a pre-registered client id",
                                 delivered=False) from None
        except OAuthFlowError as exc:
            raise ConnectorError(ErrorKind.PROTOCOL, f"OAuth with {display_url(self.server_url)} failed: "
                                 f"{self._words(exc)}", delivered=False) from None
        finally:
            await flow.aclose()

    def _words(self, exc: BaseException) -> str:
        return one_line(self.redact(str(exc)), 200)


def _challenged(response: httpx2.Response) -> bool:
    """The server refused the token (401), or wants more scopes (403 ``insufficient_scope``)."""
    if response.status_code == 401:
        return True
    return response.status_code == 403 and "insufficient_scope" in response.headers.get("www-authenticate", "")


def _is_refresh(request: httpx2.Request) -> bool:
    if request.method != "POST":
        return False
    try:
        body = request.content
    except httpx2.RequestNotRead:
        return False
    return b"grant_type=refresh_token" in body

