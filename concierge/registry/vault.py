"""Credentials encrypted at rest with AES-256-GCM.

The master key comes from ``CONCIERGE_MASTER_KEY`` (64 hex characters or urlsafe base64 of
32 bytes) or from a key file created on first run with mode 0600. Each secret is stored under
its vault key (``user_mcp/<source id>/auth``) with a fresh 96-bit nonce; the vault key is the
associated data, so a ciphertext moved to another key fails to decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import sqlite3
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from concierge.errors import ConciergeError
from concierge.registry.store import Store, now_iso

__all__ = ["Vault", "VaultError", "auth_key", "load_master_key", "webhook_key"]


class VaultError(ConciergeError):
    error = "vault_error"


def auth_key(source_id: str) -> str:
    return f"user_mcp/{source_id}/auth"


def webhook_key(source_id: str) -> str:
    return f"user_mcp/{source_id}/webhook"


def _parse_key(raw: str) -> bytes:
    raw = raw.strip()
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        try:
            key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            key = b""
    if len(key) != 32:
        raise VaultError("CONCIERGE_MASTER_KEY must be 32 bytes as 64 hex characters or base64 "
                         "(generate one with: python -c \"import os;print(os.urandom(32).hex())\")")
    return key


def load_master_key(key_file: Path) -> bytes:
    """The environment's key, else the key file's, else a new key file (mode 0600)."""
    env = os.environ.get("CONCIERGE_MASTER_KEY")
    if env:
        return _parse_key(env)
    if key_file.exists():
        return _parse_key(key_file.read_text())
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    return key


class Vault:
    """Encrypted key/value secrets in the registry database."""

    def __init__(self, store: Store, master_key: bytes) -> None:
        self._store = store
        self._aead = AESGCM(master_key)

    def put(self, cx: sqlite3.Connection, key: str, secret: str) -> None:
        """Store or replace a secret, inside the caller's transaction."""
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, secret.encode(), key.encode())
        now = now_iso()
        cx.execute(
            "INSERT INTO vault (key, nonce, ciphertext, created_at, updated_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET nonce=excluded.nonce, ciphertext=excluded.ciphertext,"
            " updated_at=excluded.updated_at",
            (key, nonce, ciphertext, now, now))

    def get(self, key: str) -> str | None:
        row = self._store.query_one("SELECT nonce, ciphertext FROM vault WHERE key = ?", (key,))
        if row is None:
            return None
        try:
            return self._aead.decrypt(row["nonce"], row["ciphertext"], key.encode()).decode()
        except InvalidTag:
            raise VaultError(f"the secret {key} cannot be decrypted with this master key "
                             "(was CONCIERGE_MASTER_KEY or the key file changed?)") from None

    def delete(self, cx: sqlite3.Connection, key: str) -> None:
        cx.execute("DELETE FROM vault WHERE key = ?", (key,))

    def delete_prefix(self, cx: sqlite3.Connection, prefix: str) -> None:
        cx.execute("DELETE FROM vault WHERE key >= ? AND key < ?", (prefix, prefix + "\uffff"))
