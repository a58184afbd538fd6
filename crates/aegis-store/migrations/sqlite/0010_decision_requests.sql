-- Retries of one tool call: the decision an agent's call with a `request_id` recorded, by
-- that id, so a repeated call is answered with it instead of a second record
-- (`src/requests.rs`). The primary key is the index of the one lookup a call with a
-- `request_id` costs, and what keeps two concurrent retries from both being recorded.
-- Containment refusals (frozen or changed agent) are never keyed: each is recorded afresh.
CREATE TABLE decision_requests (
    tenant_id    TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    decision_id  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id, request_id)
) WITHOUT ROWID;
