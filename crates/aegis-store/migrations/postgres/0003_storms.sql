-- Storm semantics (PostgreSQL): commit-time event stamps, containment refusals, data
-- sources, and which reads count for data_exfiltration per tenant.

-- The time of the last committed batch's events. Each batch stamps its events with
-- GREATEST(this, the database clock) under the log_head lock, so event times never run
-- backwards in seq order, whichever replica (and replica clock) committed them.
ALTER TABLE log_head ADD COLUMN at_ms BIGINT NOT NULL DEFAULT 0;
UPDATE log_head SET at_ms = COALESCE((SELECT MAX(created_at) FROM events), 0);

-- A deny issued only because the agent is frozen: recorded and shown, but counted towards
-- neither risk-tier escalation nor the SOC's rules.
ALTER TABLE decisions ADD COLUMN contained BOOLEAN NOT NULL DEFAULT FALSE;

-- A registered action that returns data the agent could leak: the "read" half of
-- data_exfiltration.
ALTER TABLE tool_actions ADD COLUMN sensitive BOOLEAN NOT NULL DEFAULT FALSE;

-- NULL: only sensitive actions are reads (the default); 'non_mutating': any action that
-- changes nothing is a read (the older rule, for tenants that ask for it).
ALTER TABLE tenants ADD COLUMN exfiltration_reads TEXT
    CHECK (exfiltration_reads IN ('sensitive', 'non_mutating'));
