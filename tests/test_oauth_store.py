"""The OAuth storage interface: what phase B's vault keeper must do, shown on the in-memory one."""

from __future__ import annotations

import time

import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken, ProtectedResourceMetadata
from pydantic import AnyHttpUrl

from concierge.mcp_client import Endpoint
from concierge.mcp_client.oauth import OAuth
from concierge.mcp_client.oauth_store import OAUTH_ITEMS, Discovery, MemoryOAuthStore, SourceTokenStorage

pytestmark = pytest.mark.anyio

ACCESS, REFRESH, SECRET = "at-canary-3f9e1", "rt-canary-77c2d", "cs-canary-a0b4f"


async def test_tokens_client_and_discovery_round_trip_by_source() -> None:
    store = MemoryOAuthStore()
    one, two = SourceTokenStorage(store, "ds_1"), SourceTokenStorage(store, "ds_2")
    assert await one.get_tokens() is None and await one.get_client_info() is None
    before = time.time()
    await one.set_tokens(OAuthToken(access_token=ACCESS, refresh_token=REFRESH, expires_in=120, scope="mcp"))
    await one.set_client_info(OAuthClientInformationFull(client_id="c1", client_secret=SECRET, redirect_uris=None))
    await one.set_discovery(Discovery(
        ProtectedResourceMetadata(resource=AnyHttpUrl("https://mcp.example/mcp"),
                                  authorization_servers=[AnyHttpUrl("https://auth.example")]),
        "https://auth.example",
        OAuthMetadata(issuer=AnyHttpUrl("https://auth.example"), authorization_endpoint=AnyHttpUrl(
            "https://auth.example/authorize"), token_endpoint=AnyHttpUrl("https://auth.example/token"))))

    tokens = await one.get_tokens()
    assert tokens is not None and tokens.access_token == ACCESS and tokens.refresh_token == REFRESH
    expires_at = await one.expires_at()
    assert expires_at is not None and before + 120 <= expires_at <= time.time() + 120
    client = await one.get_client_info()
    assert client is not None and client.client_secret == SECRET
    found = await one.get_discovery()
    assert found is not None and str(found.metadata.token_endpoint) == "https://auth.example/token"  # type: ignore[union-attr]
    assert await two.get_tokens() is None  # keyed by source

    assert store.items_of("ds_1") == sorted(OAUTH_ITEMS)
    await one.clear_tokens()
    assert store.items_of("ds_1") == ["client", "discovery"]
    await store.delete("ds_1")
    assert store.items_of("ds_1") == []


async def test_a_damaged_item_reads_as_none() -> None:
    store = MemoryOAuthStore()
    await store.save("ds_1", "tokens", "{not json")
    await store.save("ds_1", "discovery", '{"resource": {"nope": 1}}')
    storage = SourceTokenStorage(store, "ds_1")
    assert await storage.get_tokens() is None and await storage.expires_at() is None
    assert await storage.get_discovery() is None


async def test_no_value_is_shown() -> None:
    store = MemoryOAuthStore()
    storage = SourceTokenStorage(store, "ds_1")
    await storage.set_tokens(OAuthToken(access_token=ACCESS, refresh_token=REFRESH, expires_in=60))
    oauth = OAuth("https://mcp.example/mcp", store, source="ds_1", client_id="pub-id", client_secret=SECRET)
    endpoint = Endpoint("https://mcp.example/mcp", auth=oauth)
    shown = " ".join([repr(store), repr(storage), repr(oauth), repr(endpoint), str(endpoint)])
    for secret in (ACCESS, REFRESH, SECRET):
        assert secret not in shown
    assert "pub-id" in repr(oauth) and "client_secret='***'" in repr(oauth)
    assert repr(store) == "MemoryOAuthStore(['ds_1:tokens'])"
    status = await oauth.status()
    assert status.signed_in and status.can_refresh and ACCESS not in repr(status)


def test_oauth_rules() -> None:
    store = MemoryOAuthStore()
    with pytest.raises(ValueError, match="needs a client id and a client secret"):
        OAuth("https://x/mcp", store, source="s", grant="client_credentials", client_id="only-id")
    with pytest.raises(ValueError, match="a client secret needs its client id"):
        OAuth("https://x/mcp", store, source="s", client_secret="s3")
    with pytest.raises(ValueError, match="must be an https URL"):
        OAuth("https://x/mcp", store, source="s", client_metadata_url="http://x/client.json")
    with pytest.raises(ValueError, match="grant must be"):
        OAuth("https://x/mcp", store, source="s", grant="password")  # type: ignore[arg-type]
