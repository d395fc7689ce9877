"""Credentials encrypted at rest with AES-256-GCM.

The master key comes from ``CONCIERGE_MASTER_KEY`` (64 hex characters or urlsafe base64 of
32 bytes) or from a key file created on first run with mode 0600. Each secret is stored under
its vault key (``user_mcp/<source id>/auth``) with a fresh 96-bit nonce; the vault key is the
associated data, so a ciphertext moved to another key fails to decrypt.

Two rules keep one registry under one key:

- The key file is written atomically (a temporary file, fsync, then a hard link that only the
  first writer wins), so processes starting together on a fresh home all read the same key
  and a kill never leaves a half-written key behind.
- The database keeps a key check value (a constant encrypted with the key). A registry opened
  with any other key is refused before it can write a secret; a database from before the
  check gets one on its first open with a key that decrypts its oldest secret.

Nothing is written to the vault for a deleted or revoked (``disconnected``) source:
`Vault.put` checks the source's row inside the caller's write transaction.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from concierge.errors import NotFound, SourceRevoked, VaultError, WrongMasterKey
from concierge.registry.store import Store, Transaction
from concierge.registry.vault_rows import VaultRows
from concierge.store.vault_rows import source_of

__all__ = ["ENV_KEY", "MasterKey", "Vault", "VaultError", "auth_key", "load_master_key", "webhook_key"]

ENV_KEY = "CONCIERGE_MASTER_KEY"
_CHECK_PLAINTEXT = b"concierge vault key check v1"
_CHECK_AAD = b"concierge/key-check"
_GENERATE = "generate one with: python -c \"import os;print(os.urandom(32).hex())\""


def auth_key(source_id: str) -> str:
    return f"user_mcp/{source_id}/auth"


def webhook_key(source_id: str) -> str:
    return f"user_mcp/{source_id}/webhook"


@dataclass(frozen=True)
class MasterKey:
    """The 32-byte key and where it came from, for messages (``CONCIERGE_MASTER_KEY`` or the
    key file's path)."""

    key: bytes
    origin: str
    key_file: Path | None = None
    from_env: bool = False

    def __repr__(self) -> str:  # never the key itself
        return f"MasterKey(origin={self.origin!r})"


def _decode(raw: str) -> bytes:
    raw = raw.strip()
    try:
        return bytes.fromhex(raw)
    except ValueError:
        try:
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            return b""


def load_master_key(key_file: Path, *, from_setting: str | None = None,
                    secrets: Callable[[], int] = lambda: 0,
                    forget_check: Callable[[], None] = lambda: None) -> MasterKey:
    """``from_setting`` (``CONCIERGE_MASTER_KEY``, see `concierge.config`) if set, else the key
    file's key, else a new key file (0600).

    ``secrets`` counts what this home's vault holds. A key file is made, or an empty one (an
    older version killed while creating it) replaced, only while the vault holds nothing:
    then no secret can be lost, and ``forget_check`` drops the check value of the old key.
    Otherwise every fault names the file and how to recover.
    """
    env = from_setting
    if env is not None and env.strip():
        key = _decode(env)
        if len(key) != 32:
            raise VaultError(f"{ENV_KEY} must be 32 bytes as 64 hex characters or base64 (it has "
                             f"{len(env.strip())} characters); {_GENERATE}, or unset it to use the "
                             f"key file {key_file}")
        return MasterKey(key, ENV_KEY, key_file, from_env=True)
    origin = f"the key file {key_file}"
    with _directory_lock(key_file.parent):
        # Keys are only ever made under this lock: a temporary key file seen now was left by a
        # process killed while making one (it never became the key), so it goes.
        for orphan in key_file.parent.glob(f".{key_file.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                orphan.unlink()
        try:
            raw: bytes | None = key_file.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is None or not raw:
            held = secrets()
            if held:
                what = "is missing" if raw is None else "is empty"
                raise VaultError(f"{origin} {what}, and this home's vault holds {held} secret(s) "
                                 f"encrypted with the key it held: restore the file from a backup, or "
                                 f"set {ENV_KEY} to that key")
            if raw is not None:
                key_file.unlink()  # empty, and nothing was encrypted with it: nothing to lose
            key = _create_key_file(key_file)
            forget_check()
            return MasterKey(key, origin, key_file)
    try:
        key = _decode(raw.decode("ascii"))
    except UnicodeDecodeError:
        key = b""
    if len(key) != 32:
        what = f"does not hold a valid key ({len(raw.strip())} characters; expected 64 hex characters)"
        held = secrets()
        if held:
            fix = (f"this home's vault holds {held} secret(s) encrypted with the key it held: restore "
                   f"the file from a backup, or set {ENV_KEY} to that key")
        else:
            fix = "nothing is encrypted with it yet: delete it and a new key is made on the next run"
        raise VaultError(f"{origin} {what}; {fix}")
    return MasterKey(key, origin, key_file)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory`` (released by the kernel if the process dies), so two
    processes never both decide to replace an empty key file."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the hard link still lets one writer win
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _create_key_file(key_file: Path) -> bytes:
    """A new key, written to a temporary file, synced, then hard-linked into place: the link
    fails if another process got there first, and then its key is the one used."""
    key = AESGCM.generate_key(bit_length=256)
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, key_file)
        except FileExistsError:
            winner = _decode(key_file.read_text())
            if len(winner) != 32:
                raise VaultError(f"the key file {key_file} appeared while this process was creating "
                                 "it but holds no valid key; remove it and run again") from None
            return winner
        _fsync_directory(key_file.parent)
        return key
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Vault:
    """Encrypted key/value secrets in the registry database."""

    def __init__(self, store: Store, master_key: bytes | MasterKey) -> None:
        self._store = store
        self._rows = VaultRows(store)
        if isinstance(master_key, bytes):
            master_key = MasterKey(master_key, "the master key")
        self._origin = master_key
        self._aead = AESGCM(master_key.key)
        self._check_key()

    # -- the key check value -----------------------------------------------------------------

    def _check_key(self) -> None:
        """Refuse a key other than the one this database's secrets are encrypted with; record
        the check value on the first open (of a new database, or one from before the check)."""
        row = self._rows.key_check()
        if row is not None:
            self._verify(row)
            return
        with self._store.transaction() as cx:
            row = self._rows.key_check(cx)
            if row is not None:  # a concurrent first open recorded it
                self._verify(dict(row))
                return
            oldest = self._rows.oldest(cx)
            if oldest is not None:
                try:
                    self._aead.decrypt(oldest["nonce"], oldest["ciphertext"], oldest["key"].encode())
                except InvalidTag:
                    raise self._wrong_key() from None
            nonce = os.urandom(12)
            self._rows.record_key_check(cx, nonce, self._aead.encrypt(nonce, _CHECK_PLAINTEXT, _CHECK_AAD))

    def _verify(self, row: dict[str, bytes]) -> None:
        try:
            ok = self._aead.decrypt(row["nonce"], row["ciphertext"], _CHECK_AAD) == _CHECK_PLAINTEXT
        except InvalidTag:
            ok = False
        if not ok:
            raise self._wrong_key()

    def _wrong_key(self) -> VaultError:
        key = self._origin
        if key.from_env:
            fix = f"set {ENV_KEY} to the right key" + (
                f", or unset it to use the key file {key.key_file}" if key.key_file and key.key_file.exists()
                else "")
            who = f"{ENV_KEY} is"
        else:
            fix = f"restore the right key file, or set {ENV_KEY} to the right key"
            who = f"{key.origin} holds"
        return WrongMasterKey(f"{who} not the key this registry's secrets are encrypted with "
                          f"({self._store.url.display}); refusing to start so that no secret is written under "
                          f"a second key: {fix}")

    # -- secrets -------------------------------------------------------------------------------

    def put(self, cx: Transaction, key: str, secret: str) -> None:
        """Store or replace a secret, inside the caller's write transaction. A source's secret
        is refused unless its row exists and is not revoked: checked here, under the
        transaction's write lock, so a revoke or delete that committed a moment ago (in any
        process) is seen and the source never gets a secret back."""
        source_id = source_of(key)
        if source_id is not None:
            status = self._rows.source_status(cx, source_id)  # locked until commit
            if status is None:
                raise NotFound(f"no source {source_id!r}; no secret is stored for it")
            if status == "disconnected":
                raise SourceRevoked(f"source {source_id} is revoked (disconnected); its secrets were "
                               "deleted and no new one is stored")
        nonce = os.urandom(12)
        self._rows.put(cx, key, nonce, self._aead.encrypt(nonce, secret.encode(), key.encode()))

    def get(self, key: str) -> str | None:
        row = self._rows.get(key)
        if row is None:
            return None
        try:
            return self._aead.decrypt(row["nonce"], row["ciphertext"], key.encode()).decode()
        except InvalidTag:
            raise VaultError(f"the secret {key} cannot be decrypted with this master key "
                             f"({self._origin.origin})") from None

    def version(self, key: str, cx: Transaction | None = None) -> bytes | None:
        """Changes whenever the secret is replaced (its nonce), without decrypting it."""
        return self._rows.nonce(key, cx)

    def delete(self, cx: Transaction, key: str) -> None:
        self._rows.delete(cx, key)

    def delete_prefix(self, cx: Transaction, prefix: str) -> int:
        """Delete every secret under ``prefix``; how many there were."""
        return self._rows.delete_prefix(cx, prefix)
