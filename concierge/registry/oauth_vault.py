"""The registry's `OAuthStore`: a source's OAuth items (tokens, registered client, discovery)
encrypted in the vault under ``user_mcp/<source>/oauth/<item>``.

The keys sit under the source's prefix, so revoke and delete (``delete_prefix``) take every
token with them, and the vault refuses to store one for a revoked source. Values never leave
this module except to the SDK's OAuth client (`concierge.mcp_client.oauth`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge.registry.store import Store
from concierge.registry.vault import Vault

if TYPE_CHECKING:  # (the module itself loads the mcp SDK; `source list` must not)
    from concierge.mcp_client.oauth_store import OAuthItem

_ITEMS: tuple[OAuthItem, ...] = ("tokens", "client", "discovery")  # oauth_store.OAUTH_ITEMS

__all__ = ["VaultOAuthStore", "oauth_key", "oauth_prefix"]


def oauth_prefix(source_id: str) -> str:
    return f"user_mcp/{source_id}/oauth/"


def oauth_key(source_id: str, item: OAuthItem) -> str:
    return oauth_prefix(source_id) + item


class VaultOAuthStore:
    """An `OAuthStore` over the registry's vault (restart-safe, shared by every process)."""

    def __init__(self, store: Store, vault: Vault) -> None:
        self._store, self._vault = store, vault

    def __repr__(self) -> str:
        return f"VaultOAuthStore({self._store.path.name if self._store.path else 'database'})"

    async def load(self, source: str, item: OAuthItem) -> str | None:
        return self._vault.get(oauth_key(source, item))

    async def save(self, source: str, item: OAuthItem, value: str) -> None:
        with self._store.transaction() as cx:
            self._vault.put(cx, oauth_key(source, item), value)

    async def delete(self, source: str, item: OAuthItem | None = None) -> None:
        with self._store.transaction() as cx:
            if item is None:
                self._vault.delete_prefix(cx, oauth_prefix(source))
            else:
                self._vault.delete(cx, oauth_key(source, item))

    def holds(self, source: str, item: OAuthItem = "tokens") -> bool:
        """Whether ``item`` is stored (its value is not read)."""
        return self._vault.version(oauth_key(source, item)) is not None

    def items_of(self, source: str) -> list[str]:
        """The names of the items held for ``source`` (never their values)."""
        return [item for item in _ITEMS if self.holds(source, item)]
