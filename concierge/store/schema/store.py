"""The store's own tables: shared state that every process reads and writes."""

from __future__ import annotations

from concierge.store._migrate import Migration, MigrationSet

__all__ = ["STORE"]

STORE = MigrationSet("store", (
    Migration(1, "rate buckets, change feed, key-value", """
    -- One token bucket per (kind, subject): taken from in one statement by every process.
    CREATE TABLE rate_buckets (
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        per_minute INTEGER NOT NULL,
        tokens DOUBLE PRECISION NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (kind, subject)
    );
    CREATE INDEX rate_buckets_by_subject ON rate_buckets (subject);
    -- The change feed: one head per scope (its row lock orders the writers), one version per subject.
    CREATE TABLE change_heads (
        scope TEXT PRIMARY KEY,
        seq BIGINT NOT NULL
    );
    CREATE TABLE change_versions (
        scope TEXT NOT NULL,
        subject TEXT NOT NULL,
        version BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        action TEXT NOT NULL,
        PRIMARY KEY (scope, subject)
    );
    CREATE INDEX change_versions_by_seq ON change_versions (scope, seq);
    CREATE TABLE kv (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value {bytes} NOT NULL,
        version BIGINT NOT NULL,
        updated_at TEXT NOT NULL,
        expires_at DOUBLE PRECISION,
        PRIMARY KEY (namespace, key)
    );
    CREATE INDEX kv_by_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
    """),
))
