-- Archiving (`aegis archive`, docs/receipts.md): per tenant, the signed cut of its chain.
-- Receipts through `pruned_through_seq` were written to an archive and may be pruned;
-- verification of the stored chain starts from this point instead of seq 1. One row per
-- chain: a later cut replaces it, and only ever moves it forward.
CREATE TABLE chain_cuts (
    tenant_id            TEXT PRIMARY KEY,
    pruned_through_seq   BIGINT NOT NULL,
    pruned_through_hash  TEXT NOT NULL,
    key_id               TEXT NOT NULL,
    cut_at               TEXT NOT NULL,
    signature            TEXT NOT NULL
);

-- The tenant's retention (`PUT /v1/tenants/retention`): decisions younger than this many days
-- are never archived. NULL: no minimum. The gateway never deletes on its own.
ALTER TABLE tenants ADD COLUMN retention_min_days BIGINT CHECK (retention_min_days >= 1);
