"""Where things live and how they are configured, resolved in one place.

Order for every setting: an explicit argument, then the environment, then the default.

- ``CONCIERGE_HOME``: data directory (database, key file). Default: the user's XDG data dir.
- ``CONCIERGE_MASTER_KEY``: 32-byte vault key as 64 hex characters or urlsafe base64.
  Default: ``$CONCIERGE_HOME/master.key``, created on first run with mode 0600.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["data_dir", "db_path", "key_path"]


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    raw = explicit or os.environ.get("CONCIERGE_HOME") or platformdirs.user_data_dir("concierge")
    path = Path(raw).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path(home: Path) -> Path:
    return home / "concierge.db"


def key_path(home: Path) -> Path:
    return home / "master.key"
