"""The registry's tables (today's ``concierge/registry/store.py`` migrations 1, 2 and 4, and
the webhook events of its migration 3)."""

from __future__ import annotations

from concierge.store._migrate import Migration, MigrationSet

__all__ = ["REGISTRY"]

# The kinds a message of the old registry store could start with (user_version 5's backfill).
_OLD_KINDS = ("unauthorized", "forbidden", "not_found", "connection_refused", "dns", "tls", "timeout",
              "not_mcp", "protocol", "too_many_tools", "too_large", "server_error", "invalid_url", "unknown")
_BACKFILL_KINDS = "".join(
    f"    UPDATE sources SET health_error_kind = '{k}' WHERE substr(health_error, 1, {len(k) + 1}) = '{k}:';\n"
    for k in _OLD_KINDS)

REGISTRY = MigrationSet("registry", (
    Migration(1, "sandboxes, sources, agents, vault, audit", """
    CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX sandboxes_name ON sandboxes (lower(name));
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
        connect_timeout DOUBLE PRECISION NOT NULL,
        call_timeout DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        health_error TEXT,
        tool_count INTEGER,
        server_name TEXT,
        last_checked_at TEXT,
        last_latency_ms DOUBLE PRECISION,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    -- The namespace rule lives in the database so concurrent registrations cannot both win.
    CREATE UNIQUE INDEX sources_live_namespace
        ON sources (sandbox_id, lower(app_namespace))
        WHERE status <> 'disconnected' AND kind = 'user_mcp';
    CREATE INDEX sources_by_sandbox ON sources (sandbox_id, status);
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
        nonce {bytes} NOT NULL,
        ciphertext {bytes} NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE audit (
        id {serial},
        at TEXT NOT NULL,
        sandbox_id TEXT,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        object_type TEXT NOT NULL,
        object_id TEXT NOT NULL,
        before TEXT,
        after TEXT
    );
    CREATE INDEX audit_by_sandbox ON audit (sandbox_id, id);
    """),
    Migration(2, "results of pull(), one row per changed result", """
    CREATE TABLE ingested_results (
        id {serial},
        source_id TEXT NOT NULL,
        tool_name TEXT NOT NULL,
        arguments TEXT NOT NULL,
        call_key TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        content TEXT NOT NULL,
        fetched_at TEXT NOT NULL
    );
    CREATE INDEX ingested_by_call ON ingested_results (source_id, call_key, id);
    """),
    Migration(3, "the vault's key check value", """
    CREATE TABLE vault_key_check (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        nonce {bytes} NOT NULL,
        ciphertext {bytes} NOT NULL,
        created_at TEXT NOT NULL
    );
    """),
    Migration(4, "the kind of a failed health check (an ErrorKind) beside its message", """
    ALTER TABLE sources ADD COLUMN health_error_kind TEXT;
    -- older rows get the kind their message starts with ("unauthorized: ...")
    """ + _BACKFILL_KINDS),
    Migration(5, "indexes for keyset pages", """
    CREATE INDEX sources_page ON sources (created_at, id);
    CREATE INDEX sources_page_by_sandbox ON sources (sandbox_id, created_at, id);
    CREATE INDEX agents_page ON agents (sandbox_id, created_at, id);
    """),
    Migration(6, "tool-definition pins: the approved hash per tool, and a held pending definition", """
    ALTER TABLE sources ADD COLUMN pin_tools INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE sources ADD COLUMN tools_pinned_at TEXT;
    CREATE TABLE tool_pins (
        source_id TEXT NOT NULL,
        tool_name TEXT NOT NULL,
        hash TEXT,
        definition TEXT,
        pinned_at TEXT,
        pinned_by TEXT,
        pending_hash TEXT,
        pending_definition TEXT,
        pending_since TEXT,
        PRIMARY KEY (source_id, tool_name)
    );
    """),
    Migration(7, "stdio programs, OAuth settings and extra non-secret headers (JSON; secrets in the vault)", """
    ALTER TABLE sources ADD COLUMN headers TEXT;
    ALTER TABLE sources ADD COLUMN stdio TEXT;
    ALTER TABLE sources ADD COLUMN oauth TEXT;
    """),
    Migration(8, "webhook events belong to the registry (its webhooks store them); made by the http set until now", """
    -- One row per accepted event; the unique pair is what makes a replayed event id a no-op.
    CREATE TABLE IF NOT EXISTS webhook_events (
        id {serial},
        source_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        received_at TEXT NOT NULL,
        content_type TEXT,
        payload TEXT NOT NULL,
        UNIQUE (source_id, event_id)
    );
    CREATE INDEX IF NOT EXISTS webhook_events_by_source ON webhook_events (source_id, id);
    """),
    Migration(9, "indexes for the catalog's idle sources and the chat's same-URL check", {
        "sqlite": """
    CREATE INDEX sources_idle ON sources (sandbox_id, status, kind, created_at, id);
    CREATE INDEX sources_by_url ON sources (sandbox_id, base_url, created_at, id);
    """,
        # byte-wise, for the range "a URL with any query string" (`catalog_rows.at_url_query`)
        "postgresql": """
    CREATE INDEX sources_idle ON sources (sandbox_id, status, kind, created_at, id);
    CREATE INDEX sources_by_url ON sources (sandbox_id, base_url COLLATE "C", created_at, id);
    """}),
), legacy={1: 1, 2: 2, 3: 2, 4: 3, 5: 4})
