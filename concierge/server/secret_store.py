"""`VaultSecretStore`: the concierge's credential references, kept in the registry's vault.

Over HTTP a conversation outlives the process (a confirmation may be answered after a
restart), so the values behind ``[secret:sec_…]`` references are stored encrypted, like the
sources' own credentials, under ``concierge/secrets/<ref>``.
"""

from __future__ import annotations

from concierge.registry.vault import Vault
from concierge.registry.store import Store

__all__ = ["VaultSecretStore", "secret_key"]


def secret_key(ref: str) -> str:
    return f"concierge/secrets/{ref}"


class VaultSecretStore:
    """A `concierge.agent.secrets.SecretStore` backed by the vault."""

    def __init__(self, store: Store, vault: Vault) -> None:
        self._store = store
        self._vault = vault

    def put(self, ref: str, value: str) -> None:
        with self._store.transaction() as cx:
            self._vault.put(cx, secret_key(ref), value)

    def get(self, ref: str) -> str | None:
        return self._vault.get(secret_key(ref))

    def delete(self, ref: str) -> None:
        with self._store.transaction() as cx:
            self._vault.delete(cx, secret_key(ref))

    def __repr__(self) -> str:  # never the values
        return "VaultSecretStore()"
