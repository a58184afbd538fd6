-- AegisAgent schema v1 (PostgreSQL). The same tables as the SQLite schema (migrations/sqlite),
-- plus what several replicas need: `log_head`, whose row lock serialises every write
-- transaction so event seqs are gap-free and in commit order. Times are Unix milliseconds.

CREATE TABLE tenants (
    id                         TEXT PRIMARY KEY,
    soc_autonomy_level         TEXT CHECK (soc_autonomy_level IN ('L0', 'L1', 'L2', 'L3', 'L4')),
    denial_threshold           BIGINT NOT NULL DEFAULT 5 CHECK (denial_threshold >= 1),
    escalation_window_minutes  BIGINT NOT NULL DEFAULT 60 CHECK (escalation_window_minutes >= 1),
    deny_storm_n               BIGINT CHECK (deny_storm_n >= 1),
    deny_storm_window_secs     BIGINT CHECK (deny_storm_window_secs >= 1),
    created_at                 BIGINT NOT NULL
);

CREATE TABLE operator_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    name         TEXT,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'responder', 'admin')),
    secret_hash  BYTEA NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX operator_keys_tenant ON operator_keys (tenant_id, created_at);

CREATE TABLE agents (
    id                    TEXT PRIMARY KEY,
    -- Insertion order, for keyset pagination (SQLite uses its rowid).
    ordinal               BIGSERIAL NOT NULL UNIQUE,
    tenant_id             TEXT NOT NULL REFERENCES tenants (id),
    name                  TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('active', 'frozen', 'revoked')),
    status_reason         TEXT,
    risk_tier             TEXT NOT NULL CHECK (risk_tier IN ('low', 'medium', 'high')),
    risk_tier_changed_seq BIGINT NOT NULL DEFAULT 0,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
CREATE INDEX agents_tenant ON agents (tenant_id, ordinal);

CREATE TABLE agent_tokens (
    secret_hash  BYTEA PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL REFERENCES agents (id),
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT
);
CREATE INDEX agent_tokens_agent ON agent_tokens (agent_id);

CREATE TABLE tool_actions (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    tool           TEXT NOT NULL,
    action         TEXT NOT NULL,
    mutates_state  BOOLEAN NOT NULL,
    egress         BOOLEAN NOT NULL DEFAULT FALSE,
    risk           TEXT NOT NULL CHECK (risk IN ('low', 'medium', 'high', 'critical')),
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, tool, action)
);

CREATE TABLE policies (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL,
    text        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- The highest event seq ever committed. Every write transaction locks this one row first
-- and holds it to COMMIT, so across all replicas seqs are assigned in commit order, without
-- gaps (a rolled-back transaction rolls its seqs back too): a consumer at cursor N never sees
-- N + 2 before N + 1.
CREATE TABLE log_head (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    seq        BIGINT NOT NULL
);
INSERT INTO log_head (singleton, seq) VALUES (TRUE, 0);

CREATE TABLE events (
    seq         BIGINT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    agent_id    TEXT,
    subject_id  TEXT,
    payload     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX events_tenant ON events (tenant_id, seq);

CREATE TABLE decisions (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    event_seq         BIGINT NOT NULL UNIQUE,
    agent_id          TEXT NOT NULL,
    request_id        TEXT,
    tool              TEXT NOT NULL,
    action            TEXT NOT NULL,
    resource          TEXT,
    mutates_state     BOOLEAN NOT NULL,
    risk              TEXT NOT NULL,
    source_trust      TEXT NOT NULL,
    decision          TEXT NOT NULL CHECK (decision IN ('allow', 'deny', 'require_approval')),
    risk_score        BIGINT NOT NULL,
    reason            TEXT NOT NULL,
    matched_policies  TEXT NOT NULL,
    action_hash       TEXT NOT NULL,
    run_id            TEXT,
    trace_id          TEXT,
    parent_run_id     TEXT,
    receipt_id        TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX decisions_tenant ON decisions (tenant_id, event_seq);
CREATE INDEX decisions_agent ON decisions (tenant_id, agent_id, event_seq);
CREATE INDEX decisions_agent_denies ON decisions (agent_id, decision, event_seq, created_at);
CREATE INDEX decisions_run ON decisions (tenant_id, run_id) WHERE run_id IS NOT NULL;

CREATE TABLE receipts (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    decision_id  TEXT NOT NULL,
    body         TEXT NOT NULL,
    hash         TEXT NOT NULL,
    -- Two writers extending one chain from the same head would collide here: a fork cannot
    -- commit even if the log_head serialisation were bypassed.
    UNIQUE (tenant_id, seq)
);

CREATE TABLE receipt_checkpoints (
    tenant_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    head_hash  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    signed_at  TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE signing_keys (
    key_id      TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE consumer_cursors (
    name        TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE alerts (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    agent_id    TEXT,
    source_seq  BIGINT NOT NULL,
    summary     TEXT NOT NULL,
    event_seq   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, kind, source_seq)
);
CREATE INDEX alerts_tenant ON alerts (tenant_id, event_seq);

CREATE TABLE incidents (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    kind                TEXT NOT NULL,
    severity            TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'closed')),
    agent_id            TEXT NOT NULL,
    dedup_key           TEXT NOT NULL,
    summary             TEXT NOT NULL,
    recommended_action  TEXT,
    opened_at           BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    acknowledged_at     BIGINT,
    acknowledged_by     TEXT,
    closed_at           BIGINT,
    closed_by           TEXT,
    close_reason        TEXT,
    event_seq           BIGINT NOT NULL,
    UNIQUE (tenant_id, dedup_key)
);
CREATE INDEX incidents_tenant ON incidents (tenant_id, event_seq);

CREATE TABLE incident_evidence (
    incident_id  TEXT NOT NULL REFERENCES incidents (id),
    event_seq    BIGINT NOT NULL,
    decision_id  TEXT,
    PRIMARY KEY (incident_id, event_seq)
);

CREATE TABLE response_actions (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    incident_id  TEXT NOT NULL REFERENCES incidents (id),
    agent_id     TEXT NOT NULL,
    action       TEXT NOT NULL,
    mode         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    detail       TEXT NOT NULL,
    event_seq    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX response_actions_incident ON response_actions (incident_id);

CREATE TABLE correlator_state (
    tenant_id  TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    state      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);

CREATE TABLE incident_narratives (
    tenant_id     TEXT NOT NULL,
    incident_id   TEXT NOT NULL,
    generated_by  TEXT NOT NULL,
    narrative     TEXT NOT NULL,
    evidence      TEXT NOT NULL,
    generated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, incident_id)
);

CREATE TABLE webhook_subscriptions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    url         TEXT NOT NULL,
    format      TEXT NOT NULL CHECK (format IN ('json', 'slack')),
    events      TEXT,
    secret      TEXT,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant_id, created_at);

CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    ordinal          BIGSERIAL NOT NULL UNIQUE,
    tenant_id        TEXT NOT NULL,
    sink             TEXT NOT NULL,
    agent_id         TEXT,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_sink ON deliveries (tenant_id, sink, ordinal);

CREATE TABLE notify_coalesce (
    tenant_id     TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    last_sent_at  BIGINT NOT NULL,
    pending       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);
