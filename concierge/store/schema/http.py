"""The HTTP service's tables (today's ``concierge/registry/store.py`` migration 3, but for the
webhook events, which are the registry's): API keys and the concierge's conversations. The
HTTP layer applies this set itself (`concierge.server.auth.KeyStore`, the chat service)."""

from __future__ import annotations

from concierge.store._migrate import Migration, MigrationSet

__all__ = ["HTTP"]

HTTP = MigrationSet("http", (
    # Webhook events were made here until registry migration 8 took them (IF NOT EXISTS: a
    # database that has them from this migration keeps them as they are).
    Migration(1, "API keys (hashes only), webhook events, concierge conversations", """
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
    CREATE TABLE concierge_sessions (
        id TEXT PRIMARY KEY,
        sandbox_id TEXT NOT NULL,
        key_id TEXT,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE concierge_events (
        id {serial},
        session_id TEXT NOT NULL,
        run_id TEXT,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE INDEX concierge_events_by_session ON concierge_events (session_id, id);
    """),
    Migration(2, "conversation versions (compare-and-set across instances), keyset indexes", """
    ALTER TABLE concierge_sessions ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX api_keys_page ON api_keys (created_at, id);
    """),
    Migration(3, "a conversation's run lease: one run at a time across instances", """
    ALTER TABLE concierge_sessions ADD COLUMN running_until DOUBLE PRECISION;
    """),
), legacy={3: 1, 4: 1, 5: 1})
