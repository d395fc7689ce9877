"""OAuth 2.1 against a real authorization server and a real protected MCP server on loopback
(both built from the mcp SDK's server-side auth): sign-in, refresh, revocation, the ways of
getting a client, machine-to-machine, and restarts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import anyio
import httpx2
import pytest

from concierge.errors import ConnectorError
from concierge.mcp_client import Endpoint, ErrorKind, McpSession, SessionPool, call_tool, probe
from concierge.mcp_client.oauth import OAuth
from concierge.mcp_client.oauth_callback import CallbackInbox
from concierge.mcp_client.oauth_store import MemoryOAuthStore
from concierge.mcp_client.signin import begin_sign_in
from tests.mcp_servers import free_port
from tests.oauth_servers import SCOPE, OAuthServers, follow, oauth_servers, query_of

pytestmark = pytest.mark.anyio

CIMD_URL = "https://concierge.example/oauth/client.json"


@pytest.fixture
def servers() -> Iterator[OAuthServers]:
    with oauth_servers() as srv:
        yield srv


def endpoint_for(srv: OAuthServers, store: MemoryOAuthStore | None = None, **options: object) -> Endpoint:
    oauth = OAuth(srv.mcp_url, store or MemoryOAuthStore(), source="ds_oauth", **options)  # type: ignore[arg-type]
    return Endpoint(srv.mcp_url, auth=oauth, connect_timeout=10)


async def sign_in(endpoint: Endpoint) -> None:
    started = await begin_sign_in(endpoint)
    assert started.authorize_url is not None
    page = await follow(started.authorize_url)
    assert page.status_code == 200 and "Signed in" in page.text
    await started.wait()


async def whoami(endpoint: Endpoint) -> dict[str, object]:
    result = await call_tool(endpoint, "whoami", {})
    assert not result.is_error, result.text
    return json.loads(result.text)  # type: ignore[no-any-return]


# -- signing in ------------------------------------------------------------------------------------

async def test_sign_in_with_dynamic_registration_pkce_and_resource(servers: OAuthServers) -> None:
    store = MemoryOAuthStore()
    endpoint = endpoint_for(servers, store)
    before = await probe(endpoint)
    assert before.error_kind is ErrorKind.AUTH_REQUIRED
    assert before.error == f"auth_required: sign in: nobody has signed in to the server at {servers.mcp_url} yet"
    assert servers.auth.kinds("register") == []  # a health check registers nothing

    started = await begin_sign_in(endpoint)
    url = started.authorize_url
    assert url is not None and url.startswith(servers.as_url + "/authorize?")
    params = query_of(url)
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["resource"] == servers.mcp_url  # RFC 8707
    assert params["redirect_uri"] == started.redirect_uri and started.redirect_uri.startswith("http://127.0.0.1:")
    page = await follow(url)
    assert page.status_code == 200 and "Signed in" in page.text
    await started.wait()

    [registered] = servers.auth.kinds("register")
    assert registered["redirect_uris"] == [started.redirect_uri]
    [exchange] = servers.auth.kinds("token")
    assert exchange["grant"] == "authorization_code" and exchange["resource"] == servers.mcp_url
    assert store.items_of("ds_oauth") == ["client", "discovery", "tokens"]

    after = await probe(endpoint)
    assert after.ok and {t.name for t in after.tools} == {"whoami", "echo", "slow", "rendezvous"}
    me = await whoami(endpoint)
    assert me == {"client_id": registered["client_id"], "scopes": [SCOPE], "resource": servers.mcp_url}
    status = await endpoint.auth.status()  # type: ignore[union-attr]
    assert status.signed_in and status.can_refresh and (status.authorization_server or "").rstrip("/") == servers.as_url
    assert status.needs_sign_in is None and not status.signing_in


async def test_a_second_sign_in_reuses_the_registration_for_the_same_callback(servers: OAuthServers) -> None:
    port = free_port()
    endpoint = endpoint_for(servers, redirect_uri=f"http://127.0.0.1:{port}/callback")
    await sign_in(endpoint)
    await sign_in(endpoint)
    assert len(servers.auth.kinds("register")) == 1
    assert [e["grant"] for e in servers.auth.kinds("token")] == ["authorization_code"] * 2
    assert (await probe(endpoint)).ok


async def test_sign_in_completed_by_a_callback_that_arrives_elsewhere(servers: OAuthServers) -> None:
    inbox = CallbackInbox()
    endpoint = endpoint_for(servers)
    route = "https://concierge.example/api/v1/oauth/callback"  # the HTTP service's route (phase B)
    started = await begin_sign_in(endpoint, inbox=inbox, redirect_uri=route)
    assert started.authorize_url is not None and query_of(started.authorize_url)["redirect_uri"] == route
    during = await probe(endpoint)
    assert during.error == "auth_required: sign in: a sign-in was started and is waiting for the person to open its link"
    async with httpx2.AsyncClient() as browser:
        answer = await browser.get(started.authorize_url)
    location = answer.headers["location"]
    assert location.startswith(route + "?")
    assert inbox.deliver({"state": "forged", "code": "x"}) == "unknown_state"
    assert not started.done
    assert inbox.deliver(query_of(location)) == "signed_in"
    await started.wait()
    assert inbox.deliver(query_of(location)) == "unknown_state"  # one delivery per sign-in
    assert (await probe(endpoint)).ok


async def test_a_refused_sign_in_says_so() -> None:
    with oauth_servers(deny=True) as srv:
        endpoint = endpoint_for(srv)
        started = await begin_sign_in(endpoint)
        assert started.authorize_url is not None
        page = await follow(started.authorize_url)
        assert "Not signed in" in page.text and "access_denied" in page.text
        with pytest.raises(ConnectorError) as err:
            await started.wait()
        assert err.value.kind is ErrorKind.AUTH_REQUIRED
        assert str(err.value) == ("auth_required: sign in: the authorization server did not sign you in "
                                  "(access_denied: the user said no) — start a new sign-in to try again")
        assert srv.auth.kinds("token") == []
        assert (await probe(endpoint)).error_kind is ErrorKind.AUTH_REQUIRED


async def test_a_sign_in_nobody_finishes_times_out(servers: OAuthServers) -> None:
    endpoint = endpoint_for(servers)
    started = await begin_sign_in(endpoint, timeout=0.5)
    with pytest.raises(ConnectorError) as err:
        await started.wait()
    assert str(err.value) == "auth_required: sign in: nobody finished signing in within 0.5 s — start a new sign-in"
    assert not endpoint.auth.signing_in  # type: ignore[union-attr]
    async with httpx2.AsyncClient() as browser:  # the link is dead now
        answer = await browser.get(started.authorize_url)  # type: ignore[arg-type]
        assert answer.status_code == 302
        with pytest.raises(httpx2.ConnectError):
            await browser.get(answer.headers["location"])


async def test_a_sign_in_can_be_cancelled(servers: OAuthServers) -> None:
    endpoint = endpoint_for(servers)
    started = await begin_sign_in(endpoint)
    await started.cancel()
    assert started.done and not endpoint.auth.signing_in  # type: ignore[union-attr]


# -- refresh -------------------------------------------------------------------------------------------

async def test_an_expiring_token_is_refreshed_before_a_request_meets_a_401() -> None:
    with oauth_servers(access_ttl=2) as srv:
        endpoint = endpoint_for(srv)
        await sign_in(endpoint)
        assert (await call_tool(endpoint, "echo", {"text": "one"})).text == "one"
        statuses = len(srv.statuses)
        await anyio.sleep(2.1)  # the access token has expired
        assert (await call_tool(endpoint, "echo", {"text": "two"})).text == "two"
        assert [e["grant"] for e in srv.auth.kinds("token")] == ["authorization_code", "refresh_token"]
        assert srv.auth.kinds("token")[1]["resource"] == srv.mcp_url
        assert 401 not in srv.statuses[statuses:]  # refreshed first, not after a refusal
        assert endpoint.auth.refreshes == 1  # type: ignore[union-attr]


async def test_the_refresh_comes_a_little_before_expiry() -> None:
    with oauth_servers(access_ttl=2) as srv:
        endpoint = endpoint_for(srv)  # margin: a tenth of the 2 s lifetime
        await sign_in(endpoint)
        requests = len(srv.statuses)
        [issued] = srv.auth.access_tokens
        await anyio.sleep(srv.auth.expiry[issued] - time.time() - 0.12)  # it has ~0.12 s left at the server
        assert (await call_tool(endpoint, "echo", {"text": "early"})).text == "early"
        assert [e["grant"] for e in srv.auth.kinds("token")] == ["authorization_code", "refresh_token"]
        assert 401 not in srv.statuses[requests:]


async def test_one_refresh_in_flight_for_many_waiting_requests() -> None:
    with oauth_servers(access_ttl=2) as srv:
        endpoint = endpoint_for(srv)
        await sign_in(endpoint)
        pool = SessionPool()
        sessions = [McpSession(endpoint), McpSession(endpoint)]
        for session in sessions:
            await session.open()
        await anyio.sleep(2.1)
        answers: list[str] = []

        async def call(i: int) -> None:
            answers.append((await sessions[i % 2].call_tool("echo", {"text": str(i)})).text)

        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(call, i)
        assert sorted(answers, key=int) == [str(i) for i in range(12)]
        assert [e["grant"] for e in srv.auth.kinds("token")].count("refresh_token") == 1
        for session in sessions:
            await session.aclose()
        await pool.aclose()


async def test_signed_calls_to_a_source_are_not_queued_behind_each_other() -> None:
    # With JSON answers the headers come when the tool is done; the SDK's OAuth client holds
    # its lock until then, so without the fast path these calls would run one at a time.
    with oauth_servers(json_response=True) as srv:
        endpoint = endpoint_for(srv)
        await sign_in(endpoint)
        async with McpSession(endpoint) as session:
            seen: list[int] = []

            async def meet() -> None:
                result = await session.call_tool("rendezvous", {"n": 3})
                seen.append(int(result.text))

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(meet)
        assert max(seen) == 3


async def test_a_token_the_server_refuses_early_is_refreshed_and_the_call_goes_through() -> None:
    with oauth_servers() as srv:
        endpoint = endpoint_for(srv)
        await sign_in(endpoint)
        srv.auth.expire_access_tokens()  # the server ends them before their time
        assert (await call_tool(endpoint, "echo", {"text": "still"})).text == "still"
        assert [e["grant"] for e in srv.auth.kinds("token")] == ["authorization_code", "refresh_token"]


async def test_a_revoked_refresh_token_means_sign_in_again() -> None:
    with oauth_servers(access_ttl=2) as srv:
        store = MemoryOAuthStore()
        endpoint = endpoint_for(srv, store)
        await sign_in(endpoint)
        srv.auth.revoke_refresh_tokens()
        await anyio.sleep(2.1)
        with pytest.raises(ConnectorError) as err:
            await call_tool(endpoint, "echo", {"text": "x"})
        assert err.value.kind is ErrorKind.AUTH_REQUIRED and not err.value.delivered
        assert str(err.value) == (
            f"auth_required: sign in again: the authorization server at {srv.as_url}/token refused to refresh "
            "the access token (invalid_grant: refresh token does not exist)")
        assert store.items_of("ds_oauth") == ["client", "discovery"]  # the dead tokens are gone
        requests = len(srv.statuses)
        result = await probe(endpoint)
        assert result.error == str(err.value)  # said the same way, without asking the servers again
        assert len(srv.statuses) == requests and len(srv.auth.kinds("token")) == 1
        status = await endpoint.auth.status()  # type: ignore[union-attr]
        assert not status.signed_in and status.needs_sign_in == err.value.sentence

        await sign_in(endpoint)  # and signing in again mends it
        assert (await probe(endpoint)).ok


async def test_a_pooled_session_hears_auth_required_when_its_refresh_is_refused() -> None:
    with oauth_servers(access_ttl=2) as srv:
        endpoint = endpoint_for(srv)
        await sign_in(endpoint)
        pool = SessionPool()
        session, _ = await pool.session("ds_oauth", lambda: endpoint)
        assert (await session.call_tool("echo", {"text": "a"})).text == "a"
        srv.auth.revoke_refresh_tokens()
        await anyio.sleep(2.1)
        with pytest.raises(ConnectorError) as err:
            await session.call_tool("echo", {"text": "b"})
        assert err.value.kind is ErrorKind.AUTH_REQUIRED and "sign in again" in str(err.value)
        with pytest.raises(ConnectorError) as again:
            await pool.session("ds_oauth", lambda: endpoint)
        assert again.value.kind is ErrorKind.AUTH_REQUIRED and not again.value.delivered
        await pool.aclose()


# -- clients -----------------------------------------------------------------------------------------

async def test_a_pre_registered_client_is_used_and_never_re_registered() -> None:
    with oauth_servers(cimd=True) as srv:
        port = free_port()
        redirect = f"http://127.0.0.1:{port}/callback"
        client_id, secret = srv.auth.add_client(redirect_uris=[redirect])
        endpoint = endpoint_for(srv, client_id=client_id, client_secret=secret, redirect_uri=redirect,
                                client_metadata_url=CIMD_URL)
        assert secret not in repr(endpoint) and "client_secret='***'" in repr(endpoint)
        await sign_in(endpoint)
        assert srv.auth.kinds("register") == []
        assert srv.auth.kinds("authorize")[0]["client_id"] == client_id  # not the CIMD URL
        assert (await whoami(endpoint))["client_id"] == client_id


async def test_a_client_id_metadata_document_where_the_server_supports_it() -> None:
    with oauth_servers(cimd=True) as srv:
        endpoint = endpoint_for(srv, client_metadata_url=CIMD_URL)
        await sign_in(endpoint)
        assert srv.auth.kinds("register") == []
        assert (await whoami(endpoint))["client_id"] == CIMD_URL


async def test_dynamic_registration_where_documents_are_not_supported(servers: OAuthServers) -> None:
    endpoint = endpoint_for(servers, client_metadata_url=CIMD_URL)
    await sign_in(endpoint)
    [registered] = servers.auth.kinds("register")
    assert (await whoami(endpoint))["client_id"] == registered["client_id"] != CIMD_URL


async def test_a_server_that_registers_nobody_asks_for_a_client_id() -> None:
    with oauth_servers(registration=False) as srv:
        with pytest.raises(ConnectorError) as err:
            await begin_sign_in(endpoint_for(srv))
        assert err.value.kind is ErrorKind.AUTH_REQUIRED
        assert "refused to register Concierge as a client" in str(err.value)
        assert "give a pre-registered client id" in str(err.value)


async def test_client_credentials_machine_to_machine() -> None:
    with oauth_servers(access_ttl=2) as srv:
        client_id, secret = srv.auth.add_client(grant_types=["client_credentials"], auth_method="client_secret_basic")
        assert secret is not None
        endpoint = endpoint_for(srv, grant="client_credentials", client_id=client_id, client_secret=secret)
        result = await probe(endpoint)
        assert result.ok, result.error
        assert (await whoami(endpoint))["client_id"] == client_id
        [first] = srv.auth.kinds("token")
        assert first["grant"] == "client_credentials" and first["resource"] == srv.mcp_url and first["ok"]
        await anyio.sleep(2.1)  # expired: a new token, still without a person
        assert (await call_tool(endpoint, "echo", {"text": "m2m"})).text == "m2m"
        assert [e["grant"] for e in srv.auth.kinds("token")] == ["client_credentials"] * 2
        with pytest.raises(ValueError, match="only the authorization_code grant"):
            await begin_sign_in(endpoint)

        wrong = endpoint_for(srv, grant="client_credentials", client_id=client_id, client_secret="wrong-secret-123")
        refused = await probe(wrong)
        assert refused.error_kind is ErrorKind.UNAUTHORIZED
        assert refused.error == (f"unauthorized: the authorization server at {srv.as_url}/token refused the client "
                                 "credentials (invalid_client: unknown client or wrong secret) — check the client id "
                                 "and secret")


# -- restarts -----------------------------------------------------------------------------------------

async def test_a_new_process_uses_stored_tokens_and_refreshes_at_the_right_server() -> None:
    with oauth_servers(access_ttl=2) as srv:
        store = MemoryOAuthStore()  # stands for the vault, which outlives processes
        await sign_in(endpoint_for(srv, store))
        await anyio.sleep(2.1)
        later = endpoint_for(srv, store)  # a new OAuth: nothing in memory, only the store
        requests = len(srv.statuses)
        assert (await call_tool(later, "echo", {"text": "after restart"})).text == "after restart"
        assert 401 not in srv.statuses[requests:]  # it knew the token had expired
        assert [e["grant"] for e in srv.auth.kinds("token")] == ["authorization_code", "refresh_token"]
        assert len(srv.auth.kinds("register")) == 1


async def test_two_processes_sharing_a_store_both_keep_working_across_a_rotation() -> None:
    with oauth_servers(access_ttl=2) as srv:
        store = MemoryOAuthStore()
        first = endpoint_for(srv, store)
        await sign_in(first)
        second = endpoint_for(srv, store)  # e.g. `serve` and the CLI, one vault
        assert (await call_tool(second, "echo", {"text": "b"})).text == "b"
        await anyio.sleep(2.1)
        assert (await call_tool(first, "echo", {"text": "a"})).text == "a"  # refreshes; the old refresh token dies
        assert (await call_tool(second, "echo", {"text": "b2"})).text == "b2"  # reads the new tokens: no refresh
        assert [e["grant"] for e in srv.auth.kinds("token")] == ["authorization_code", "refresh_token"]
        assert [e["known"] for e in srv.auth.kinds("refresh_attempt")] == [True]  # not even a refused one
        # The race itself: a client that read the store just before the other one refreshed
        # now refreshes with the rotated, dead refresh token (the SDK's client, driven as is).
        late = second.auth.build_provider()  # type: ignore[union-attr]
        await late._initialize()
        await anyio.sleep(2.1)
        assert (await call_tool(first, "echo", {"text": "a2"})).text == "a2"  # rotates again
        racing = Endpoint(srv.mcp_url, auth=late)
        assert (await call_tool(racing, "echo", {"text": "b3"})).text == "b3"  # refused, adopts the new ones
        assert store.items_of("ds_oauth") == ["client", "discovery", "tokens"]
        assert (await call_tool(first, "echo", {"text": "a3"})).text == "a3"


async def test_tokens_stored_by_another_process_end_auth_required(servers: OAuthServers) -> None:
    store = MemoryOAuthStore()
    gateway = endpoint_for(servers, store)  # e.g. `serve`, which found no tokens
    assert (await probe(gateway)).error_kind is ErrorKind.AUTH_REQUIRED
    await sign_in(endpoint_for(servers, store))  # e.g. the CLI's `authorize`, same vault
    assert (await probe(gateway)).ok


async def test_forget_deletes_every_stored_item(servers: OAuthServers) -> None:
    store = MemoryOAuthStore()
    endpoint = endpoint_for(servers, store)
    await sign_in(endpoint)
    await endpoint.auth.forget()  # type: ignore[union-attr]
    assert store.items_of("ds_oauth") == []
    assert (await probe(endpoint)).error_kind is ErrorKind.AUTH_REQUIRED


# -- secrets ----------------------------------------------------------------------------------------

async def test_tokens_never_reach_a_repr_a_log_line_or_a_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with oauth_servers(access_ttl=2, leaky=True) as srv:
        store = MemoryOAuthStore()
        endpoint = endpoint_for(srv, store)
        await sign_in(endpoint)
        await anyio.sleep(2.1)
        leaked = await call_tool(endpoint, "leak", {})  # the server echoes the bearer token back
        assert leaked.is_error
        srv.auth.revoke_refresh_tokens()
        await anyio.sleep(2.1)
        failure = await probe(endpoint)
        assert failure.error_kind is ErrorKind.AUTH_REQUIRED
        shown = " ".join([repr(endpoint), str(endpoint), repr(endpoint.auth), repr(store), failure.error or "",
                          repr(await endpoint.auth.status())])  # type: ignore[union-attr]
        issued = srv.auth.issued
        assert len(issued) == 4  # two access tokens and two refresh tokens
        # (the servers run in this process; their own log lines are theirs, not Concierge's)
        ours = "\n".join(logging.Formatter().format(r) for r in caplog.records
                         if not r.name.startswith(("mcp.server", "uvicorn", "starlette")))
        assert "HTTP Request: POST" in ours  # (the capture did see the client's traffic)
        client = json.loads(await store.load("ds_oauth", "client") or "{}")
        for token in [*issued, client["client_secret"]]:
            assert token not in shown
            assert token not in ours
