"""Where things live and how they are configured, resolved in one place.

Order for every setting: an explicit argument, then the environment, then the default.

- ``CONCIERGE_HOME``: data directory (database, key file, REPL history). Default: the user's
  XDG data dir. Kept private: the directory is 0700 and Concierge's files in it are 0600
  whatever the umask (they hold the audit log, conversations and webhook payloads).
- ``CONCIERGE_MASTER_KEY``: 32-byte vault key as 64 hex characters or urlsafe base64.
  Default: ``$CONCIERGE_HOME/master.key``, created on first run with mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import platformdirs

__all__ = ["DB_NAME", "KEY_NAME", "data_dir", "db_path", "key_path", "private_file", "secure_home"]

DB_NAME = "concierge.db"
KEY_NAME = "master.key"
# Concierge's own files in the home. Only these are tightened: CONCIERGE_HOME may point at a
# directory that also holds the user's files, whose modes are not ours to change.
_OWN_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", KEY_NAME,
              "chat_history")
DIR_MODE = 0o700
FILE_MODE = 0o600


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory, created 0700 if missing; an existing one is tightened (`secure_home`)."""
    raw = explicit or os.environ.get("CONCIERGE_HOME") or platformdirs.user_data_dir("concierge")
    path = Path(raw).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)  # mkdir's mode is cut by the umask; secure_home sets it exactly
    secure_home(path)
    return path


def secure_home(home: Path) -> None:
    """Make ``home`` 0700 and Concierge's files in it 0600 (homes made by older versions, or
    files another library created under a loose umask). Only what this user owns is touched."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    _chmod_own(home, DIR_MODE, uid, want_dir=True)
    for name in _OWN_FILES:
        _chmod_own(home / name, FILE_MODE, uid, want_dir=False)


def _chmod_own(path: Path, mode: int, uid: int | None, *, want_dir: bool) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) != want_dir or stat.S_ISLNK(st.st_mode):
        return
    if (uid is None or st.st_uid == uid) and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def private_file(path: Path) -> Path:
    """``path``, created empty with mode 0600 if missing (or tightened to 0600 if it is ours),
    so a library that later opens it for writing (SQLite, prompt_toolkit's history) never
    leaves it readable by others."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        _chmod_own(path, FILE_MODE, os.getuid() if hasattr(os, "getuid") else None, want_dir=False)
    return path


def db_path(home: Path) -> Path:
    return home / DB_NAME


def key_path(home: Path) -> Path:
    return home / KEY_NAME
