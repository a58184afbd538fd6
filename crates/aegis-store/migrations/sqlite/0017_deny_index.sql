-- The escalation count (`schema::TIER_AND_EARLIER_DENIES_SQL`) reads only denies that are not
-- containment refusals, so only those rows need its index: an allow, most of the traffic,
-- no longer writes to it.
DROP INDEX decisions_agent_denies;
CREATE INDEX decisions_agent_denies ON decisions (agent_id, event_seq, created_at)
    WHERE decision = 'deny' AND NOT contained;
