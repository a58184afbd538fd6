-- A decision's event repeated its decision's row in its payload (verdict, tool, action,
-- risk, score, trust, run) and its subject (the decision's id): about 330 bytes per
-- decision. From here on the event of a decision is stored with an empty payload and no
-- subject, and both are rebuilt from the decision row (found by `event_seq`) when the log is
-- read (`records::StoredEvent`), with the same fields and values as before. The three fields
-- of the payload that no decision column held move to it. An event stored before keeps its
-- payload; `payload = ''` marks one written from here on. Pruning an archived decision whose
-- event stays (an incident's evidence) writes the payload and subject out first.
ALTER TABLE decisions ADD COLUMN egress BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE decisions ADD COLUMN sensitive BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE decisions ADD COLUMN approval_id TEXT;
