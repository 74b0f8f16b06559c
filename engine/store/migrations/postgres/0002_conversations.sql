-- Each conversation's latest context, written behind the reply by the
-- durable writer: a turn resumes from here when the context store (Redis)
-- has lost the conversation.
CREATE TABLE conversations (
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id TEXT NOT NULL,
    -- the context store's version that wrote it; only a higher one replaces it
    version         BIGINT NOT NULL,
    -- the conversation as JSON; NULL after a reset
    context         TEXT,
    -- Unix ms
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);
