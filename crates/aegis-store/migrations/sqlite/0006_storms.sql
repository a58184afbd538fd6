-- Storm semantics (SQLite): containment refusals, data sources, and which reads count for
-- data_exfiltration per tenant.

-- A deny issued only because the agent is frozen: recorded and shown, but counted towards
-- neither risk-tier escalation nor the SOC's rules.
ALTER TABLE decisions ADD COLUMN contained INTEGER NOT NULL DEFAULT 0;

-- A registered action that returns data the agent could leak: the "read" half of
-- data_exfiltration.
ALTER TABLE tool_actions ADD COLUMN sensitive INTEGER NOT NULL DEFAULT 0;

-- NULL: only sensitive actions are reads (the default); 'non_mutating': any action that
-- changes nothing is a read (the older rule, for tenants that ask for it).
ALTER TABLE tenants ADD COLUMN exfiltration_reads TEXT
    CHECK (exfiltration_reads IN ('sensitive', 'non_mutating'));
