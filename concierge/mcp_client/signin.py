"""Signing in to an OAuth-protected MCP server (the authorization-code grant, with a person).

    sign_in = await begin_sign_in(endpoint)       # endpoint.auth is an `OAuth`
    print("Open this URL to authorize:", sign_in.authorize_url)
    await sign_in.wait()                          # the redirect arrived, the code was exchanged

`begin_sign_in` connects to the server with a client of its own (the SDK's, started with no
tokens), which meets the server's 401 and runs discovery and registration; it returns once
the authorize URL is known. The browser then comes back either to a `LoopbackCallback` the
sign-in listens on (the default: for a person on this machine) or to a route of the HTTP
service, which hands the redirect to the `CallbackInbox` given here. The SDK checks
``state`` and exchanges the code with its PKCE verifier; the new tokens go to the source's
store, and the shared `OAuth` reads them at its next request.

Meanwhile requests that have no valid token fail at once with ``auth_required``; when the
person refuses, or nobody comes back within ``timeout``, `SignIn.wait` raises
``auth_required`` with the reason. The authorize URL is for the person who asked: it is
never logged here (anyone who opened it could sign the source in to their own account).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthToken

from concierge.errors import ConnectorError
from concierge.mcp_client._errors import Observed, map_errors
from concierge.mcp_client._sanitize import one_line
from concierge.mcp_client._transport import open_client
from concierge.mcp_client.endpoint import Endpoint, display_url
from concierge.mcp_client.kinds import ErrorKind
from concierge.mcp_client.oauth import OAuth, Provider
from concierge.mcp_client.oauth_callback import CallbackInbox, LoopbackCallback
from concierge.mcp_client.oauth_store import SourceTokenStorage

__all__ = ["DEFAULT_SIGN_IN_TIMEOUT", "SignIn", "begin_sign_in"]

log = logging.getLogger("concierge.mcp_client")

DEFAULT_SIGN_IN_TIMEOUT = 600.0
"""Seconds a sign-in waits for its person."""


class _SignInStorage:
    """A sign-in's view of the source's store: no tokens to start with (so the server's 401
    starts the flow), the existing registration unless it was made for another redirect URI."""

    def __init__(self, real: SourceTokenStorage, redirect_uri: str, *, fixed: bool) -> None:
        self.real, self.redirect_uri, self.fixed = real, redirect_uri, fixed

    async def get_tokens(self) -> OAuthToken | None:
        return None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await self.real.set_tokens(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        info = await self.real.get_client_info()
        if info is None or self.fixed:
            return info
        registered = {str(u) for u in info.redirect_uris or []}
        if registered and self.redirect_uri not in registered:
            return None  # registered for another callback (another port): register again
        return info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await self.real.set_client_info(client_info)

    def __getattr__(self, name: str) -> Any:  # expires_at, clear_tokens, get/set_discovery
        return getattr(self.real, name)


class _SignInAuth(httpx2.Auth):
    """The sign-in's own client, with `OAuth`'s error translation."""

    def __init__(self, oauth: OAuth, provider: Provider) -> None:
        self.oauth, self.provider = oauth, provider

    def secret_values(self) -> list[str]:
        return self.oauth.secret_values()

    def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        return self.oauth.drive(self.provider, request)


class SignIn:
    """One sign-in in progress (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, oauth: OAuth, *, inbox: CallbackInbox | None, redirect_uri: str | None,
                 timeout: float) -> None:
        self.endpoint, self.oauth, self.timeout = endpoint, oauth, timeout
        self._inbox, self.redirect_uri = inbox, redirect_uri
        self.authorize_url: str | None = None
        """The link the person opens (None until known, and if the server asked for no sign-in)."""
        self.error: ConnectorError | None = None
        self.needed = True
        """False when the server answered without asking for a sign-in."""
        self._ready, self._done = anyio.Event(), anyio.Event()
        self._task: asyncio.Task[None] | None = None
        self._state: str | None = None

    def __repr__(self) -> str:
        state = "done" if self._done.is_set() else ("waiting" if self.authorize_url else "starting")
        return f"SignIn({display_url(self.oauth.server_url)!r}, {state})"

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        """Until the sign-in ended; raises its `ConnectorError` if it failed."""
        await self._done.wait()
        if self.error is not None:
            raise self.error

    async def cancel(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await asyncio.wait({task})

    # -- the SDK's handlers -----------------------------------------------------------------------

    async def _on_redirect(self, authorize_url: str) -> None:
        assert self._inbox is not None
        state = parse_qs(urlsplit(authorize_url).query).get("state", [""])[0]
        self._state = state
        self._waiting = self._inbox.expect(state)
        self.authorize_url = authorize_url
        self.oauth.signing_in = True
        self._ready.set()

    async def _on_callback(self) -> AuthorizationCodeResult:
        with anyio.move_on_after(self.timeout):
            await self._waiting.done.wait()
        if not self._waiting.done.is_set():
            raise ConnectorError(ErrorKind.AUTH_REQUIRED, f"sign in: nobody finished signing in within "
                                 f"{self.timeout:g} s — start a new sign-in", delivered=False)
        params = self._waiting.params
        if "error" in params:
            error = one_line(params.get("error", ""), 64)
            detail = one_line(params.get("error_description", ""), 120)
            raise ConnectorError(ErrorKind.AUTH_REQUIRED, "sign in: the authorization server did not sign you in "
                                 f"({error}{': ' + detail if detail else ''}) — start a new sign-in to try again",
                                 delivered=False)
        return AuthorizationCodeResult(code=params.get("code", ""), state=params.get("state"), iss=params.get("iss"))

    # -- the run ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._inbox is None:
                    listener = (LoopbackCallback.for_redirect_uri(self.redirect_uri) if self.redirect_uri
                                else LoopbackCallback())
                    await stack.enter_async_context(listener)
                    self._inbox, self.redirect_uri = listener.inbox, listener.redirect_uri
                assert self.redirect_uri is not None
                storage = _SignInStorage(self.oauth.storage, self.redirect_uri, fixed=self.oauth.client_id is not None)
                provider = self.oauth.build_provider(storage=storage, redirect_uri=self.redirect_uri,
                                                     on_redirect=self._on_redirect, on_callback=self._on_callback)
                endpoint = dataclasses.replace(self.endpoint, auth=_SignInAuth(self.oauth, provider))
                box = Observed()
                connect = self.endpoint.connect_timeout
                with map_errors(endpoint, box, phase="connect", deadline=connect):
                    # (the person's time is bounded in `_on_callback`; this bounds the network)
                    with anyio.fail_after(self.timeout + 3 * connect):
                        async with open_client(endpoint, box, read_timeout=connect):
                            pass
                if provider.context.current_tokens is None:
                    self.needed = False  # the server let us in without asking
                await self.oauth.reload()
        except ConnectorError as err:
            self.error = err
        except OSError as exc:  # the loopback listener could not bind
            self.error = ConnectorError(ErrorKind.AUTH_REQUIRED, f"sign in: {one_line(str(exc), 200)}",
                                        delivered=False)
        except Exception as exc:  # a bug: never a silent sign-in
            log.exception("sign-in to %s failed", display_url(self.oauth.server_url))
            self.error = ConnectorError(ErrorKind.UNKNOWN, f"the sign-in failed ({type(exc).__name__})",
                                        delivered=False)
        finally:
            if self._inbox is not None and self._state is not None:
                self._inbox.forget(self._state)
            self.oauth.signing_in = False
            self._ready.set()
            self._done.set()


async def begin_sign_in(endpoint: Endpoint, *, inbox: CallbackInbox | None = None, redirect_uri: str | None = None,
                        timeout: float = DEFAULT_SIGN_IN_TIMEOUT) -> SignIn:
    """Start a sign-in to ``endpoint`` (whose ``auth`` is an `OAuth` with the
    authorization-code grant); returns once its authorize URL is known.

    Without ``inbox`` the redirect comes back to a loopback listener (on the port of
    ``redirect_uri`` or of the `OAuth`'s, if one is given, else any free port). With
    ``inbox``, ``redirect_uri`` is where the HTTP service receives it and calls
    ``inbox.deliver``. Raises `ConnectorError` if the sign-in cannot start (the server is
    unreachable, discovery or registration failed).
    """
    oauth = endpoint.auth
    if not isinstance(oauth, OAuth):
        raise ValueError("a sign-in needs an endpoint whose auth is an OAuth")
    if oauth.grant != "authorization_code":
        raise ValueError("only the authorization_code grant signs in with a person; client_credentials needs none")
    redirect_uri = redirect_uri or oauth.redirect_uri
    if inbox is not None and redirect_uri is None:
        raise ValueError("a sign-in completed elsewhere needs the redirect_uri that receives it")
    sign_in = SignIn(endpoint, oauth, inbox=inbox, redirect_uri=redirect_uri, timeout=timeout)
    sign_in._task = asyncio.get_running_loop().create_task(sign_in._run(), name=f"sign-in {oauth.source}")
    await sign_in._ready.wait()
    if sign_in.done and sign_in.error is not None:
        raise sign_in.error
    return sign_in
