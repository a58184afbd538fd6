-- A tenant's decisions had an index of their own, (tenant_id, event_seq), which repeats the
-- tenant's events (`events_tenant`, the same keys, since a decision's `event_seq` is its
-- event's seq). Each commit batch wrote a page of it for every tenant the batch moved. A
-- listing of a tenant's decisions now walks the tenant's events newest first and finds each
-- decision by the unique `event_seq` (`schema.rs::DecisionListings`); a listing of one
-- agent's decisions reads `decisions_agent`, one run's `decisions_run`.
DROP INDEX decisions_tenant;
