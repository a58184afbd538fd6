-- Freshness fence: every change of an agent's row (status, risk tier, token rotation: each
-- updates the row) bumps its version, so the writer can tell whether a decision was made
-- from the agent as it is now (`src/fence.rs`). The WHEN clause stops the trigger's own
-- update from firing it again.
ALTER TABLE agents ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER agents_version AFTER UPDATE ON agents
    FOR EACH ROW WHEN NEW.version = OLD.version
BEGIN
    UPDATE agents SET version = OLD.version + 1 WHERE rowid = NEW.rowid;
END;
