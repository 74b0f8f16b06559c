-- Every execution of a tenant's tool, whoever called it (a flow, an MCP
-- client, seed 002's endpoints, ExecuteTool): the audit log. Rows older
-- than TOOL_AUDIT_RETENTION_DAYS are deleted by the engine.
CREATE TABLE tool_calls (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Unix ms
    called_at    BIGINT NOT NULL,
    -- mcp, seed-002, grpc or flow
    via          TEXT NOT NULL,
    -- the API key's id; for a flow, the conversation's id
    caller       TEXT NOT NULL,
    tool         TEXT NOT NULL,
    -- the plugin version that ran; empty when none was resolved
    version      TEXT NOT NULL,
    -- SHA-256 of the arguments' JSON text: what was asked, not its content
    args_sha256  TEXT NOT NULL,
    -- ok, invalid_arguments, invalid_result, denied, rate_limited,
    -- needs_confirmation, not_found, or the plugin error's kind
    outcome      TEXT NOT NULL,
    error        TEXT,
    duration_us  BIGINT NOT NULL,
    fuel         BIGINT NOT NULL
);

CREATE INDEX tool_calls_by_tenant ON tool_calls (tenant_id, called_at);
