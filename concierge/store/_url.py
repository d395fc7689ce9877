"""Which database: ``CONCIERGE_DATABASE_URL`` (or ``--database-url``) parsed once.

    unset or empty                       the SQLite file in the data directory (the default)
    sqlite:///absolute/path.db           another SQLite file
    postgresql://user[:pw]@host[:port]/db   PostgreSQL (``postgres://`` too; query options such
                                         as ``?sslmode=require`` go to the driver as given)

The URL's password never appears in a message, a log line or ``repr``: `DatabaseUrl.display`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

from concierge.store._errors import InvalidDatabaseUrl

__all__ = ["DEFAULT_SETTING", "DatabaseUrl", "Dialect", "parse_database_url"]

Dialect = Literal["sqlite", "postgresql"]
DEFAULT_SETTING = "CONCIERGE_DATABASE_URL"
_FORMS = "postgresql://user@host:port/database, sqlite:///absolute/path.db, or unset for the SQLite file"


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed database URL. ``dsn`` (PostgreSQL) may hold a password: pass it only to the driver."""

    dialect: Dialect
    path: Path | None = None
    dsn: str | None = field(default=None, repr=False)
    display: str = ""
    """The URL as it may be shown: the password replaced by ``***``."""

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.display!r})"


def _redact(parts: SplitResult) -> str:
    if parts.password is None:
        return urlunsplit(parts)
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def parse_database_url(raw: str | None, *, default_sqlite: Path | None = None,
                       setting: str = DEFAULT_SETTING) -> DatabaseUrl:
    """Parse ``raw``; ``setting`` names it as the user gave it (an environment variable or a
    flag) in every error. Unset or empty means the SQLite file ``default_sqlite``."""
    text = (raw or "").strip()
    if not text:
        if default_sqlite is None:
            raise InvalidDatabaseUrl(f"{setting} is not set and there is no default SQLite file",
                                     field=setting)
        return DatabaseUrl("sqlite", path=Path(default_sqlite), display=str(default_sqlite))
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        shown = text.split("@")[-1] if "@" in text else text
        raise InvalidDatabaseUrl(f"{setting} is not a valid URL ({exc}; …{shown}): use {_FORMS}",
                                 field=setting) from None
    shown = _redact(parts)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise InvalidDatabaseUrl(f"{setting} {shown!r}: a SQLite URL is sqlite:///absolute/path.db "
                                     "(three slashes, then an absolute path)", field=setting)
        return DatabaseUrl("sqlite", path=Path(parts.path), display=shown)
    if scheme in ("postgresql", "postgres"):
        if not parts.hostname and "host=" not in parts.query:
            raise InvalidDatabaseUrl(f"{setting} {shown!r} names no host: use {_FORMS}", field=setting)
        if port is not None and not 0 < port < 65536:
            raise InvalidDatabaseUrl(f"{setting} {shown!r}: port must be 1-65535", field=setting)
        if not parts.path.strip("/"):
            raise InvalidDatabaseUrl(f"{setting} {shown!r} names no database: add /DATABASE after the "
                                     "host", field=setting)
        return DatabaseUrl("postgresql", dsn=text, display=shown)
    raise InvalidDatabaseUrl(f"{setting} {shown!r}: unsupported scheme {parts.scheme or '(none)'!r}; "
                             f"use {_FORMS}", field=setting)
