"""Where a source's OAuth state is kept between requests and restarts.

    OAuthStore          the interface a keeper implements (the registry: its vault), three items
                        per source, each an opaque JSON string: ``tokens`` (access and refresh
                        token, with when the access token expires), ``client`` (the registered
                        client: its id, and its secret if it has one) and ``discovery`` (the
                        protected resource and authorization server metadata, so a refresh
                        after a restart goes to the right token endpoint)
    MemoryOAuthStore    an in-memory keeper (tests, one-shot CLI runs)
    SourceTokenStorage  the mcp SDK's ``TokenStorage`` for one source, over an ``OAuthStore``

Nothing here logs or shows a value: reprs list sources and item names only.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, Protocol

from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken, ProtectedResourceMetadata

__all__ = ["OAUTH_ITEMS", "Discovery", "MemoryOAuthStore", "OAuthItem", "OAuthStore", "SourceTokenStorage"]

OAuthItem = Literal["tokens", "client", "discovery"]
OAUTH_ITEMS: tuple[OAuthItem, ...] = ("tokens", "client", "discovery")


class OAuthStore(Protocol):
    """Keeps OAuth items by source. Values are secrets (tokens, client secrets): encrypt them."""

    async def load(self, source: str, item: OAuthItem) -> str | None:
        """The item's value, or None."""
        ...

    async def save(self, source: str, item: OAuthItem, value: str) -> None:
        ...

    async def delete(self, source: str, item: OAuthItem | None = None) -> None:
        """Forget one item of ``source``, or (``item=None``) all of them."""
        ...


class MemoryOAuthStore:
    """An `OAuthStore` in a dict (lost when the process ends)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        held = sorted({f"{source}:{item}" for source, item in self._items})
        return f"MemoryOAuthStore({held})"

    async def load(self, source: str, item: OAuthItem) -> str | None:
        return self._items.get((source, item))

    async def save(self, source: str, item: OAuthItem, value: str) -> None:
        self._items[(source, item)] = value

    async def delete(self, source: str, item: OAuthItem | None = None) -> None:
        for key in [k for k in self._items if k[0] == source and (item is None or k[1] == item)]:
            del self._items[key]

    def items_of(self, source: str) -> list[str]:
        """The names of the items held for ``source`` (never their values)."""
        return sorted(item for s, item in self._items if s == source)


class Discovery:
    """What discovery found, as stored: protected resource metadata (RFC 9728), the chosen
    authorization server and its metadata (RFC 8414)."""

    def __init__(self, resource: ProtectedResourceMetadata | None, server: str | None,
                 metadata: OAuthMetadata | None) -> None:
        self.resource, self.server, self.metadata = resource, server, metadata

    def dumps(self) -> str:
        return json.dumps({
            "resource": self.resource.model_dump(mode="json", exclude_none=True) if self.resource else None,
            "server": self.server,
            "metadata": self.metadata.model_dump(mode="json", exclude_none=True) if self.metadata else None,
        })

    @classmethod
    def loads(cls, text: str) -> Discovery:
        data = json.loads(text)
        return cls(ProtectedResourceMetadata.model_validate(data["resource"]) if data.get("resource") else None,
                   data.get("server"),
                   OAuthMetadata.model_validate(data["metadata"]) if data.get("metadata") else None)


class SourceTokenStorage:
    """The SDK's ``TokenStorage`` for one source; also remembers when the access token
    expires (``expires_at``, absolute) and what discovery found."""

    def __init__(self, store: OAuthStore, source: str) -> None:
        self.store, self.source = store, source

    def __repr__(self) -> str:
        return f"SourceTokenStorage({self.source!r})"

    async def _load(self, item: OAuthItem) -> Any:
        text = await self.store.load(self.source, item)
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:  # a damaged item is as good as none: a new sign-in replaces it
            return None

    # -- TokenStorage -----------------------------------------------------------------------------

    async def get_tokens(self) -> OAuthToken | None:
        data = await self._load("tokens")
        if not isinstance(data, dict) or "token" not in data:
            return None
        return OAuthToken.model_validate(data["token"])

    async def set_tokens(self, tokens: OAuthToken) -> None:
        expires_at = time.time() + int(tokens.expires_in) if tokens.expires_in is not None else None
        value = {"token": tokens.model_dump(mode="json", exclude_none=True), "expires_at": expires_at}
        await self.store.save(self.source, "tokens", json.dumps(value))

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        data = await self._load("client")
        return OAuthClientInformationFull.model_validate(data) if isinstance(data, dict) else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await self.store.save(self.source, "client", client_info.model_dump_json(exclude_none=True))

    # -- ours -------------------------------------------------------------------------------------

    async def expires_at(self) -> float | None:
        data = await self._load("tokens")
        value = data.get("expires_at") if isinstance(data, dict) else None
        return float(value) if isinstance(value, int | float) else None

    async def clear_tokens(self) -> None:
        await self.store.delete(self.source, "tokens")

    async def get_discovery(self) -> Discovery | None:
        text = await self.store.load(self.source, "discovery")
        if not text:
            return None
        try:
            return Discovery.loads(text)
        except (ValueError, KeyError):
            return None

    async def set_discovery(self, discovery: Discovery) -> None:
        await self.store.save(self.source, "discovery", discovery.dumps())
