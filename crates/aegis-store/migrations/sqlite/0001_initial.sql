-- AegisAgent schema v1 (SQLite). Times are Unix milliseconds; ids are opaque text.

CREATE TABLE tenants (
    id                         TEXT PRIMARY KEY,
    -- NULL means "not overridden": the gateway's AEGIS_SOC_AUTONOMY_LEVEL applies.
    soc_autonomy_level         TEXT CHECK (soc_autonomy_level IN ('L0', 'L1', 'L2', 'L3', 'L4')),
    denial_threshold           INTEGER NOT NULL DEFAULT 5 CHECK (denial_threshold >= 1),
    escalation_window_minutes  INTEGER NOT NULL DEFAULT 60 CHECK (escalation_window_minutes >= 1),
    created_at                 INTEGER NOT NULL
);

CREATE TABLE operator_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'responder', 'admin')),
    secret_hash  BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX operator_keys_tenant ON operator_keys (tenant_id, created_at);

CREATE TABLE agents (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    name                  TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('active', 'frozen', 'revoked')),
    status_reason         TEXT,
    risk_tier             TEXT NOT NULL CHECK (risk_tier IN ('low', 'medium', 'high')),
    -- Event seq of the last tier change: only denies logged after it count toward escalation.
    risk_tier_changed_seq INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX agents_tenant ON agents (tenant_id, created_at);

-- Every token an agent ever had; only the one with retired_at NULL is valid.
CREATE TABLE agent_tokens (
    secret_hash  BLOB PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL REFERENCES agents (id),
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER
);
CREATE INDEX agent_tokens_agent ON agent_tokens (agent_id);

CREATE TABLE tool_actions (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    tool           TEXT NOT NULL,
    action         TEXT NOT NULL,
    mutates_state  INTEGER NOT NULL,
    risk           TEXT NOT NULL CHECK (risk IN ('low', 'medium', 'high', 'critical')),
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, tool, action)
);

CREATE TABLE policies (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL,
    text        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- The event log: one row per state change, written in the transaction of that change.
-- seq is assigned by the single writer, so commit order is seq order.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    agent_id    TEXT,
    subject_id  TEXT,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX events_tenant ON events (tenant_id, seq);

CREATE TABLE decisions (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    event_seq         INTEGER NOT NULL UNIQUE,
    agent_id          TEXT NOT NULL,
    request_id        TEXT,
    tool              TEXT NOT NULL,
    action            TEXT NOT NULL,
    resource          TEXT,
    mutates_state     INTEGER NOT NULL,
    risk              TEXT NOT NULL,
    source_trust      TEXT NOT NULL,
    decision          TEXT NOT NULL CHECK (decision IN ('allow', 'deny', 'require_approval')),
    risk_score        INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    matched_policies  TEXT NOT NULL,
    action_hash       TEXT NOT NULL,
    run_id            TEXT,
    trace_id          TEXT,
    parent_run_id     TEXT,
    receipt_id        TEXT NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX decisions_tenant ON decisions (tenant_id, event_seq);
CREATE INDEX decisions_agent ON decisions (tenant_id, agent_id, event_seq);
-- Covers the escalation count (denies of an agent after a seq, within a time window).
CREATE INDEX decisions_agent_denies ON decisions (agent_id, decision, event_seq, created_at);
CREATE INDEX decisions_run ON decisions (tenant_id, run_id) WHERE run_id IS NOT NULL;

-- One hash chain per tenant; body is the canonical JSON that hash covers.
CREATE TABLE receipts (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    decision_id  TEXT NOT NULL,
    body         TEXT NOT NULL,
    hash         TEXT NOT NULL,
    UNIQUE (tenant_id, seq)
);

CREATE TABLE receipt_checkpoints (
    tenant_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    head_hash  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    signed_at  TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE signing_keys (
    key_id      TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
