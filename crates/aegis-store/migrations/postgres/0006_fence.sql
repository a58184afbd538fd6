-- Freshness fence: every change of an agent's row (status, risk tier, token rotation: each
-- updates the row) bumps its version, so a writer can tell, under the `log_head` lock,
-- whether a decision was made from the agent as it is now (`src/fence.rs`).
ALTER TABLE agents ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE FUNCTION agents_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;
CREATE TRIGGER agents_version BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_bump_version();

-- Leadership epoch (fencing token): incremented, under the `log_head` row lock, by each
-- replica that takes the SOC leadership; every consumer commit checks it is still its own.
ALTER TABLE log_head ADD COLUMN leader_epoch BIGINT NOT NULL DEFAULT 0;
