-- Remote MCP servers a tenant's flows may call tools of, by name, as JSON:
-- {"<name>": {"url": "...", "token": "..."}}.
ALTER TABLE tenants ADD COLUMN mcp_servers TEXT NOT NULL DEFAULT '{}';
