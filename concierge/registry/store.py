"""SQLite storage: one file, WAL mode, versioned migrations, every write in a transaction.

Rows go in and out as plain dicts; JSON columns are decoded here. The service layer owns
the rules; this module owns only SQL.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from concierge import config

__all__ = ["MIGRATIONS", "Store", "now_iso"]

MIGRATIONS: Sequence[str] = (
    # 1: sandboxes, sources, agents, vault, audit
    """
    CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE sources (
        id TEXT PRIMARY KEY,
        sandbox_id TEXT NOT NULL REFERENCES sandboxes(id),
        kind TEXT NOT NULL DEFAULT 'user_mcp',
        name TEXT NOT NULL,
        base_url TEXT NOT NULL,
        transport TEXT NOT NULL DEFAULT 'auto',
        auth_kind TEXT NOT NULL,
        auth_header TEXT,
        vault_key TEXT,
        token_last4 TEXT,
        app_namespace TEXT NOT NULL,
        allowed_tools TEXT,
        ingest_tool_calls TEXT NOT NULL DEFAULT '[]',
        rate_cap_per_minute INTEGER NOT NULL,
        webhook_rate_cap_per_minute INTEGER NOT NULL,
        connect_timeout REAL NOT NULL,
        call_timeout REAL NOT NULL,
        status TEXT NOT NULL,
        health_error TEXT,
        tool_count INTEGER,
        server_name TEXT,
        last_checked_at TEXT,
        last_latency_ms REAL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    -- The namespace rule lives in the database so concurrent registrations cannot both win.
    CREATE UNIQUE INDEX sources_live_namespace
        ON sources(sandbox_id, app_namespace COLLATE NOCASE)
        WHERE status != 'disconnected' AND kind = 'user_mcp';
    CREATE INDEX sources_by_sandbox ON sources(sandbox_id, status);
    CREATE TABLE agents (
        id TEXT PRIMARY KEY,
        sandbox_id TEXT NOT NULL REFERENCES sandboxes(id),
        slug TEXT NOT NULL,
        name TEXT NOT NULL,
        system_prompt TEXT NOT NULL DEFAULT '',
        tool_sources TEXT NOT NULL,
        tool_allowlist TEXT NOT NULL,
        model_settings TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'active',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (sandbox_id, slug)
    );
    CREATE TABLE vault (
        key TEXT PRIMARY KEY,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        sandbox_id TEXT,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        before TEXT,
        after TEXT
    );
    CREATE INDEX audit_by_sandbox ON audit(sandbox_id, id);
    """,
    # 2: results of pull() (a source's ingest_tool_calls), one row per changed result
    """
    CREATE TABLE ingested_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source_id TEXT NOT NULL,
        tool_name TEXT NOT NULL,
        arguments TEXT NOT NULL,
        call_key TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        content TEXT NOT NULL,
        fetched_at TEXT NOT NULL
    );
    CREATE INDEX ingested_by_call ON ingested_results(source_id, call_key, id);
    """,
    # 3: the HTTP service: API keys (hashes only), webhook events, concierge conversations
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        sandbox_id TEXT,
        role TEXT NOT NULL,
        label TEXT,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT
    );
    -- One row per accepted event; the unique pair is what makes a replayed event id a no-op.
    CREATE TABLE webhook_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        received_at TEXT NOT NULL,
        content_type TEXT,
        payload TEXT NOT NULL,
        UNIQUE (source_id, event_id)
    );
    CREATE TABLE concierge_sessions (
        id TEXT PRIMARY KEY,
        sandbox_id TEXT NOT NULL,
        key_id TEXT,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE concierge_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        run_id TEXT,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX concierge_events_by_session ON concierge_events(session_id, id);
    """,
    # 4: a key check value: one value encrypted with the master key, so a different key is
    # refused when the registry opens instead of writing secrets under two keys
    """
    CREATE TABLE vault_key_check (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 5: the kind of a failed health check (an ErrorKind), stored beside its message so that
    # readers look the kind up instead of guessing it from the text; older rows get the kind
    # their message starts with ("unauthorized: ...")
    """
    ALTER TABLE sources ADD COLUMN health_error_kind TEXT;
    UPDATE sources SET health_error_kind = substr(health_error, 1, instr(health_error, ':') - 1)
        WHERE instr(health_error, ':') > 1
        AND substr(health_error, 1, instr(health_error, ':') - 1) IN ('unauthorized', 'forbidden', 'not_found', 'connection_refused', 'dns', 'tls', 'timeout', 'not_mcp', 'protocol', 'too_many_tools', 'too_large', 'server_error', 'invalid_url', 'unknown');
    """,
    # 6: stdio programs, OAuth settings and extra non-secret headers (JSON; secrets in the vault);
    # and the keyset page indexes, so that a home at 6 is the store's registry set through 6
    """
    CREATE INDEX IF NOT EXISTS sources_page ON sources (created_at, id);
    CREATE INDEX IF NOT EXISTS sources_page_by_sandbox ON sources (sandbox_id, created_at, id);
    CREATE INDEX IF NOT EXISTS agents_page ON agents (sandbox_id, created_at, id);
    ALTER TABLE sources ADD COLUMN headers TEXT;
    ALTER TABLE sources ADD COLUMN stdio TEXT;
    ALTER TABLE sources ADD COLUMN oauth TEXT;
    """,
)

_JSON_COLUMNS = {"allowed_tools", "ingest_tool_calls", "headers", "stdio", "oauth", "tool_sources", "tool_allowlist",
                 "model_settings", "before", "after", "content", "arguments"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in _JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out


def _encode(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


class Store:
    """A connection to the registry database. Safe to share between threads (one lock)."""

    def __init__(self, path: Path | str, *, migrations: Sequence[str] = MIGRATIONS) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        # Created 0600 here, before SQLite does it under the umask; SQLite gives the -wal and
        # -shm files the database file's mode.
        config.private_file(self.path)
        self._cx = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10.0)
        self._cx.row_factory = sqlite3.Row
        self._use_wal(timeout=10.0)
        self._cx.execute("PRAGMA foreign_keys=ON")
        self._cx.execute("PRAGMA synchronous=NORMAL")
        self._cx.execute("PRAGMA busy_timeout=10000")
        self._migrate(migrations)

    # -- plumbing ----------------------------------------------------------------------------

    def _use_wal(self, *, timeout: float) -> None:
        """Switch to WAL. Switching needs the database to itself, and SQLite answers "database
        is locked" at once, without waiting, while another process opening the same new file
        holds it (processes starting together on a fresh home): so wait and retry here."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                self._cx.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _migrate(self, migrations: Sequence[str]) -> None:
        with self.transaction() as cx:
            current = cx.execute("PRAGMA user_version").fetchone()[0]
            for version, script in enumerate(migrations[current:], start=current + 1):
                for statement in _statements(script):
                    cx.execute(statement)
                cx.execute(f"PRAGMA user_version = {version}")

    @property
    def schema_version(self) -> int:
        return int(self._cx.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        with self._lock:
            self._cx.execute("BEGIN IMMEDIATE")
            try:
                yield self._cx
            except BaseException:
                self._cx.execute("ROLLBACK")
                raise
            else:
                self._cx.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [_row(r) for r in self._cx.execute(sql, params).fetchall()]  # type: ignore[misc]

    def query_one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> dict[str, Any] | None:
        with self._lock:
            return _row(self._cx.execute(sql, params).fetchone())

    def close(self) -> None:
        with self._lock:
            self._cx.close()

    # -- generic row writes (inside a transaction) ---------------------------------------------

    @staticmethod
    def insert(cx: sqlite3.Connection, table: str, values: dict[str, Any]) -> None:
        cols = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        cx.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})",
                   {k: _encode(x) for k, x in values.items()})

    @staticmethod
    def update(cx: sqlite3.Connection, table: str, row_id: str, values: dict[str, Any]) -> None:
        if not values:
            return
        sets = ", ".join(f"{k} = :{k}" for k in values)
        params = {k: _encode(x) for k, x in values.items()} | {"_id": row_id}
        cx.execute(f"UPDATE {table} SET {sets} WHERE id = :_id", params)


def _statements(script: str) -> list[str]:
    parts, buf = [], []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            parts.append("\n".join(buf).strip())
            buf = []
    if "".join(buf).strip():
        parts.append("\n".join(buf).strip())
    return [p for p in parts if p]
