"""The HTTP service's tables (today's ``concierge/registry/store.py`` migration 3)."""

from __future__ import annotations

from concierge.store._migrate import Migration, MigrationSet

__all__ = ["HTTP"]

HTTP = MigrationSet("http", (
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
    -- One row per accepted event; the unique pair is what makes a replayed event id a no-op.
    CREATE TABLE webhook_events (
        id {serial},
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
    CREATE INDEX webhook_events_by_source ON webhook_events (source_id, id);
    """),
), legacy={3: 1, 4: 1, 5: 1, 6: 1})
