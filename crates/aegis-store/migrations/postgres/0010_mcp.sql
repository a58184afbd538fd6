-- MCP gateway mode: the upstream MCP servers each tenant registered, and the pin of every
-- tool definition the gateway has seen from them.
CREATE TABLE mcp_servers (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    url         TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- `definition_hash` is the trusted definition (first seen, or last accepted);
-- `changed_hash` the newest different one seen since, withheld until an admin accepts it.
CREATE TABLE mcp_tool_pins (
    tenant_id          TEXT NOT NULL,
    server_id          TEXT NOT NULL,
    tool               TEXT NOT NULL,
    definition_hash    TEXT NOT NULL,
    read_only          BOOLEAN NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pinned', 'changed', 'accepted')),
    changed_hash       TEXT,
    changed_read_only  BOOLEAN,
    accepted_by        TEXT,
    accepted_at        BIGINT,
    pinned_at          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, server_id, tool)
);
