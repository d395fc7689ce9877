"""Configuration, resolved in one place: one frozen `Settings`, loaded once per process.

Every setting is looked up in this order, the first that has it wins:

1. a command-line flag (``--api-url``, ``--model``), passed to `load` as ``flags``;
2. the environment (``CONCIERGE_HOME``, ``CONCIERGE_MASTER_KEY``, ``CONCIERGE_DATABASE_URL``, ``CONCIERGE_API_URL``,
   ``CONCIERGE_API_KEY``, ``CONCIERGE_MODEL``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``NO_COLOR``);
3. the settings file: TOML at ``$CONCIERGE_CONFIG``, else ``<user config dir>/concierge/config.toml``
   when it exists (``~/.config/concierge/config.toml``), with the lower-case names of the table in
   `SETTINGS` (``home = "~/concierge"``, ``api_url = "…"``, ``model = "…"``, ``openai_base_url``);
   credentials are refused there: they come from the environment only;
4. the default.

The entry points (``concierge``, ``build_app``, ``Registry.open``) call `load` once and pass
the result down; no other module reads ``os.environ`` for configuration.

The data directory is kept private: it is 0700 and Concierge's files in it are 0600 whatever
the umask (they hold the audit log, conversations and webhook payloads).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from concierge.errors import ConfigError

__all__ = ["DB_NAME", "KEY_NAME", "SETTINGS", "Setting", "Settings", "data_dir", "db_path", "env_value",
           "key_path", "load", "private_file", "secure_home", "terminal_is_dumb", "tiktoken_cache_dir"]


@dataclass(frozen=True)
class Setting:
    """One row of the configuration table (the README's table is checked against it)."""

    name: str
    env: str
    flag: str | None = None
    in_file: bool = True
    """False for credentials: never read from the settings file."""
    doc: str = ""


SETTINGS: tuple[Setting, ...] = (
    Setting("home", "CONCIERGE_HOME", doc="data directory (SQLite file, key file, REPL history)"),
    Setting("master_key", "CONCIERGE_MASTER_KEY", in_file=False,
            doc="vault master key (64 hex chars or base64 of 32 bytes)"),
    Setting("database_url", "CONCIERGE_DATABASE_URL", flag="--database-url",
            doc="the database: unset for the SQLite file in the home, or postgresql://user@host:port/db"),
    Setting("api_url", "CONCIERGE_API_URL", flag="--api-url",
            doc="a remote `concierge serve` to manage instead of the local database"),
    Setting("api_key", "CONCIERGE_API_KEY", in_file=False, doc="the API key sent to --api-url"),
    Setting("model", "CONCIERGE_MODEL", flag="--model", doc="the chat model's name"),
    Setting("openai_api_key", "OPENAI_API_KEY", in_file=False,
            doc="key for the OpenAI-compatible endpoint; without it, the offline planner"),
    Setting("openai_base_url", "OPENAI_BASE_URL", doc="the OpenAI-compatible endpoint"),
    Setting("no_color", "NO_COLOR", doc="plain REPL output when set to anything"),
)
CONFIG_ENV = "CONCIERGE_CONFIG"


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved (see the module docstring for the order). ``None``: not set."""

    home: Path
    master_key: str | None = None
    database_url: str | None = None
    api_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    no_color: bool = False
    config_file: Path | None = None
    """The settings file that was read, if any."""

    def __repr__(self) -> str:  # never a credential
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for setting in SETTINGS:
            if not setting.in_file and shown[setting.name] is not None:
                shown[setting.name] = "***"
        if self.database_url:  # a URL's password, never
            shown["database_url"] = re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", self.database_url)
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def load(flags: Mapping[str, str | None] | None = None, *,
         environ: Mapping[str, str] | None = None) -> Settings:
    """The settings: ``flags`` (name -> value, ``None`` when not given) over ``environ``
    (default: the process environment) over the settings file over the defaults."""
    env = os.environ if environ is None else environ
    flags = flags or {}
    file_path, from_file = _read_file(env)
    values: dict[str, object] = {}
    for setting in SETTINGS:
        value: object = flags.get(setting.name)
        if value is None or not str(value).strip():
            value = env.get(setting.env)
        if value is None or not str(value).strip():
            value = from_file.get(setting.name)
        if value is not None and str(value).strip():
            values[setting.name] = str(value).strip()
    home = Path(str(values.pop("home", None) or _platform_dir("data"))).expanduser()
    no_color = bool(values.pop("no_color", None))
    return Settings(home=home, no_color=no_color, config_file=file_path,
                    **values)  # type: ignore[arg-type]


def _platform_dir(kind: str) -> str:
    import platformdirs  # only when a setting falls back to its default

    return platformdirs.user_data_dir("concierge") if kind == "data" else \
        platformdirs.user_config_dir("concierge")


def _read_file(env: Mapping[str, str]) -> tuple[Path | None, dict[str, object]]:
    explicit = env.get(CONFIG_ENV, "").strip()
    path = Path(explicit).expanduser() if explicit else Path(_platform_dir("config")) / "config.toml"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist", field=CONFIG_ENV) from None
        return None, {}
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"the settings file {path} is not valid TOML: {exc}", field=str(path)) from None
    known = {s.name: s for s in SETTINGS}
    for key, value in data.items():
        setting = known.get(key)
        if setting is None:
            raise ConfigError(f"the settings file {path} has an unknown setting {key!r} (known: "
                              f"{', '.join(s.name for s in SETTINGS if s.in_file)})", field=key)
        if not setting.in_file:
            raise ConfigError(f"the settings file {path} may not hold {key!r}, a credential: set "
                              f"{setting.env} in the environment instead", field=key)
        if not isinstance(value, (str, bool, int, float)):
            raise ConfigError(f"{key} in {path} must be a string (got {type(value).__name__})", field=key)
    return path, dict(data)


def env_value(name: str) -> str | None:
    """A variable the user named on the command line (``--token-env VAR``): input, not
    configuration, read here so that this module stays the only reader of the environment."""
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def terminal_is_dumb() -> bool:
    """``TERM=dumb``: the terminal cannot do what prompt_toolkit needs (plain lines instead)."""
    return os.environ.get("TERM", "") == "dumb"


def tiktoken_cache_dir() -> str | None:
    """The directory tiktoken reads cached files from (the same lookup as ``tiktoken.load``)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        path = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        path = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        import tempfile

        path = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return path or None  # "" disables tiktoken's cache: every load would download


DB_NAME = "concierge.db"
KEY_NAME = "master.key"
# Concierge's own files in the home. Only these are tightened: CONCIERGE_HOME may point at a
# directory that also holds the user's files, whose modes are not ours to change.
_OWN_FILES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", KEY_NAME,
              "chat_history")
DIR_MODE = 0o700
FILE_MODE = 0o600


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory (``explicit``, else the settings' ``home``), created 0700 if missing;
    an existing one is tightened (`secure_home`)."""
    path = Path(explicit).expanduser() if explicit else load().home
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
