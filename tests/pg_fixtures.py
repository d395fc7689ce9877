"""A real PostgreSQL for the tests: ``initdb`` + ``pg_ctl`` in a temporary directory, on a
loopback port, started once per test session.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` system user that Debian's package creates (``runuser -u postgres --``). Each test
that asks for ``pg_url`` gets a database of its own (``CREATE DATABASE`` from ``template0``),
dropped afterwards.

PostgreSQL is part of the test environment (``apt-get install -y postgresql``, as `.ci/run`
does): when it is missing the tests that need it fail with that command, on CI and off it,
and are never skipped.

Usable outside pytest too (``bench/store.py``): `start_pg` / `PgServer.stop`.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ENGINES", "PgServer", "add_sandbox", "db_url", "pg_bin", "pg_server", "pg_url", "source_row", "start_pg"]

ENGINES = ("sqlite", "postgresql")
INSTALL_HINT = "PostgreSQL is not installed: apt-get install -y postgresql"
_SERVER_OPTIONS = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


@dataclass
class PgServer:
    """One throw-away PostgreSQL cluster. ``user``: the OS user it runs as (None: this one)."""

    directory: Path
    port: int
    bindir: Path
    user: str | None
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://concierge@127.0.0.1:{self.port}/{name}"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        data = self.directory / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "concierge",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.directory / "log"),
                  "-w", "-t", "60", "-o", f"-p {self.port} -k {self.directory} {_SERVER_OPTIONS}",
                  "start")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command with ``psql`` (no driver needed); its output."""
        return self._run(str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", "concierge", "-d", database, "-v", "ON_ERROR_STOP=1", "-Atqc", sql).stdout

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate",
                      "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_pg(*, attempts: int = 3) -> PgServer:
    """Start a fresh cluster on a free loopback port (another port if that one was taken
    between choosing and binding). Raises RuntimeError with the install command if missing."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError(INSTALL_HINT)
    user = "postgres" if os.geteuid() == 0 else None
    last: subprocess.CalledProcessError | None = None
    for _ in range(attempts):
        directory = Path(tempfile.mkdtemp(prefix="concierge-pg-"))
        if user:
            shutil.chown(directory, user=user)
        server = PgServer(directory=directory, port=_free_port(), bindir=bindir, user=user)
        try:
            server.start()
            return server
        except subprocess.CalledProcessError as exc:
            last = exc
            log = directory / "log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else exc.stderr
            shutil.rmtree(directory, ignore_errors=True)
            last.add_note(detail)
    assert last is not None
    raise last


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL. Missing PostgreSQL fails the test (never a skip)."""
    try:
        server = start_pg()
    except RuntimeError as exc:
        pytest.fail(f"{exc} (CI={os.environ.get('CI', '')!r}: PostgreSQL tests are never skipped)",
                    pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database of its own for one test, dropped afterwards."""
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each engine in turn: a real SQLite file, a real PostgreSQL
    database. (PostgreSQL starts only when a test asks for it.)"""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


# -- rows for the store tests ----------------------------------------------------------------

def source_row(source_id: str, sandbox_id: str, namespace: str, **values: Any) -> dict[str, Any]:
    """A complete ``sources`` row as the registry writes one."""
    now = "2026-01-01T00:00:00.000Z"
    return {
        "id": source_id, "sandbox_id": sandbox_id, "kind": "user_mcp", "name": f"source {source_id}",
        "base_url": "https://mcp.example.com/mcp", "transport": "auto", "auth_kind": "bearer",
        "auth_header": None, "vault_key": f"user_mcp/{source_id}/auth", "token_last4": None,
        "app_namespace": namespace, "allowed_tools": None, "ingest_tool_calls": [],
        "rate_cap_per_minute": 60, "webhook_rate_cap_per_minute": 600, "connect_timeout": 10.0,
        "call_timeout": 60.0, "status": "active", "health_error": None, "tool_count": None,
        "server_name": None, "last_checked_at": None, "last_latency_ms": None, "created_at": now,
        "updated_at": now, **values,
    }


async def add_sandbox(db: Any, sandbox_id: str = "sb_1", name: str = "default") -> str:
    await db.execute("INSERT INTO sandboxes (id, name, created_at) VALUES ($1, $2, $3)",
                     sandbox_id, name, "2026-01-01T00:00:00.000Z")
    return sandbox_id
