-- Evidence: the latest narrative generated for an incident (advisory text; never read by
-- the decision path).
CREATE TABLE incident_narratives (
    tenant_id     TEXT NOT NULL,
    incident_id   TEXT NOT NULL,
    generated_by  TEXT NOT NULL,
    narrative     TEXT NOT NULL,
    evidence      TEXT NOT NULL,
    generated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, incident_id)
);
