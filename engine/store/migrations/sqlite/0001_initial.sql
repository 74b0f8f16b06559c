-- MCP Engine schema, SQLite dialect. migrations/postgres holds the same
-- tables in PostgreSQL's dialect; a test checks the two stay alike.
-- Times are Unix milliseconds; flags are 0/1 integers; JSON is text.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- {"condition": {"fuel": 1000000, ...}, ...}: per-world limit overrides
    limits      TEXT NOT NULL DEFAULT '{}',
    -- ["api.example.com", "127.0.0.1:8080"]: hosts tool plugins may call
    allow_list  TEXT NOT NULL DEFAULT '[]',
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    -- sha256 of the secret part; the secret itself is never stored
    secret_hash TEXT NOT NULL,
    -- space-separated: messages flows:write plugins:write admin
    scopes      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE flows (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    flow_id     TEXT NOT NULL,
    is_default  BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, flow_id)
);
CREATE UNIQUE INDEX flows_one_default ON flows (tenant_id) WHERE is_default = 1;

CREATE TABLE flow_versions (
    tenant_id    TEXT NOT NULL,
    flow_id      TEXT NOT NULL,
    version      TEXT NOT NULL,
    -- order of creation within the flow: "latest" is the highest
    seq          BIGINT NOT NULL,
    definition   TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('draft', 'published')),
    created_at   BIGINT NOT NULL,
    published_at BIGINT,
    PRIMARY KEY (tenant_id, flow_id, version),
    UNIQUE (tenant_id, flow_id, seq),
    FOREIGN KEY (tenant_id, flow_id) REFERENCES flows (tenant_id, flow_id) ON DELETE CASCADE
);

CREATE TABLE plugins (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    -- order of upload within the plugin: the active version is the highest enabled
    seq         BIGINT NOT NULL,
    world       TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    manifest    TEXT,
    config      TEXT NOT NULL DEFAULT '{}',
    enabled     BIGINT NOT NULL DEFAULT 1,
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, version),
    UNIQUE (tenant_id, name, seq)
);

-- Compiled code, shared by every tenant that uploads the same bytes.
CREATE TABLE plugin_artifacts (
    content_sha256 TEXT NOT NULL,
    engine_hash    TEXT NOT NULL,
    artifact       BLOB NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (content_sha256, engine_hash)
);

CREATE TABLE experiments (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    experiment_id TEXT NOT NULL,
    -- the core's ExperimentConfig as JSON
    config        TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'stopped')),
    created_at    BIGINT NOT NULL,
    stopped_at    BIGINT,
    PRIMARY KEY (tenant_id, experiment_id)
);

CREATE TABLE transcripts (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    -- the conversation's creation time: a reset starts a new transcript
    started_at      BIGINT NOT NULL,
    turn            BIGINT NOT NULL,
    flow_id         TEXT NOT NULL,
    flow_version    TEXT NOT NULL,
    state_before    TEXT NOT NULL,
    state_after     TEXT NOT NULL,
    -- the event as JSON
    input           TEXT NOT NULL,
    -- messages, visited states, actions, updates and errors as JSON
    output          TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    duration_us     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, started_at, turn)
);

-- What changed, for engine processes that cannot be notified (SQLite); on
-- PostgreSQL the same change is also sent with NOTIFY.
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,
    changed_at BIGINT NOT NULL
);
