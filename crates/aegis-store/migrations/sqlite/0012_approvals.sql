-- Approvals (`src/approvals.rs`): one row per call a person is asked to allow, bound to the
-- agent and the call's action hash. `status` is stored as last written; a pending or approved
-- row past `expires_at` reads as expired. `approvals` is the JSON list of approving keys,
-- `requested_seq` the seq of the `approval.requested` event (the list's order and cursor).
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    status TEXT NOT NULL,
    action_hash TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT,
    parameters TEXT NOT NULL,
    mutates_state INTEGER NOT NULL,
    risk TEXT NOT NULL,
    risk_score INTEGER NOT NULL,
    reason TEXT NOT NULL,
    run_id TEXT,
    required INTEGER NOT NULL,
    approvals TEXT NOT NULL DEFAULT '[]',
    rejected_by TEXT,
    consumed_by_decision_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    requested_seq INTEGER NOT NULL
);
CREATE INDEX approvals_by_call ON approvals (tenant_id, agent_id, action_hash, status);
CREATE INDEX approvals_by_seq ON approvals (tenant_id, requested_seq);
CREATE INDEX approvals_open ON approvals (expires_at) WHERE status IN ('pending', 'approved');

-- Per-tenant approval settings (`PUT /v1/tenants/approvals`).
ALTER TABLE tenants ADD COLUMN approval_ttl_secs INTEGER NOT NULL DEFAULT 900;
ALTER TABLE tenants ADD COLUMN approvals_required INTEGER NOT NULL DEFAULT 1;

-- Slack users allowed to decide approvals from Slack, each acting as one operator key
-- (`POST /v1/slack/approvers`).
CREATE TABLE slack_approvers (
    tenant_id TEXT NOT NULL,
    slack_user_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, slack_user_id)
);
