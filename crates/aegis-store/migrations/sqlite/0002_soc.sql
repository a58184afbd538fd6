-- The SOC plane (SQLite): consumer cursors, alerts, incidents and their evidence, response
-- actions, and the settings that tune correlation per tenant.

-- Where each consumer of the event log stands; advanced in the transaction of its effects.
CREATE TABLE consumer_cursors (
    name        TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- NULL means "use the gateway's default" (AEGIS_DENY_STORM_N / AEGIS_DENY_STORM_WINDOW_SECS).
ALTER TABLE tenants ADD COLUMN deny_storm_n INTEGER CHECK (deny_storm_n >= 1);
ALTER TABLE tenants ADD COLUMN deny_storm_window_secs INTEGER CHECK (deny_storm_window_secs >= 1);

-- Registered actions that send data outside (the "send" half of data_exfiltration).
ALTER TABLE tool_actions ADD COLUMN egress INTEGER NOT NULL DEFAULT 0;

CREATE TABLE alerts (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    agent_id    TEXT,
    -- The event that raised it: one alert per (rule, event), also across restarts.
    source_seq  INTEGER NOT NULL,
    summary     TEXT NOT NULL,
    event_seq   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
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
    -- Identifies one episode of one rule for one agent (rule, agent, first evidence seq):
    -- the database, not only memory, guarantees one incident per storm.
    dedup_key           TEXT NOT NULL,
    summary             TEXT NOT NULL,
    recommended_action  TEXT,
    opened_at           INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    acknowledged_at     INTEGER,
    acknowledged_by     TEXT,
    closed_at           INTEGER,
    closed_by           TEXT,
    close_reason        TEXT,
    event_seq           INTEGER NOT NULL,
    UNIQUE (tenant_id, dedup_key)
);
CREATE INDEX incidents_tenant ON incidents (tenant_id, event_seq);

CREATE TABLE incident_evidence (
    incident_id  TEXT NOT NULL REFERENCES incidents (id),
    event_seq    INTEGER NOT NULL,
    decision_id  TEXT,
    PRIMARY KEY (incident_id, event_seq)
);

CREATE TABLE response_actions (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    incident_id  TEXT NOT NULL REFERENCES incidents (id),
    agent_id     TEXT NOT NULL,
    action       TEXT NOT NULL,
    -- automatic (by the response engine) | applied (an operator applied a recommendation)
    mode         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    detail       TEXT NOT NULL,
    event_seq    INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX response_actions_incident ON response_actions (incident_id);

-- Correlation windows of each (tenant, agent), saved with the consumer's cursor so a restart
-- resumes mid-storm without replaying history.
CREATE TABLE correlator_state (
    tenant_id  TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    state      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);
