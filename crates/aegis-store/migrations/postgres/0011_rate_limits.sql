-- Rate limits and budgets of the action plane (`aegis-server/src/rate_limit.rs`). A
-- tenant's token bucket applies to each of its agents, unless the agent has its own; the
-- budget caps each agent's calls that change state per hour. NULL: no limit (on an agent:
-- the tenant's bucket applies).
ALTER TABLE tenants ADD COLUMN rate_per_sec BIGINT CHECK (rate_per_sec >= 1);
ALTER TABLE tenants ADD COLUMN rate_burst BIGINT CHECK (rate_burst >= 1);
ALTER TABLE tenants ADD COLUMN mutating_per_hour BIGINT CHECK (mutating_per_hour >= 1);
ALTER TABLE agents ADD COLUMN rate_per_sec BIGINT CHECK (rate_per_sec >= 1);
ALTER TABLE agents ADD COLUMN rate_burst BIGINT CHECK (rate_burst >= 1);
