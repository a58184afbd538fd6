-- The argument of an MCP tool whose string value is the `resource` of its calls' decisions,
-- when an admin names one.
ALTER TABLE mcp_tool_pins ADD COLUMN resource_argument TEXT;
