-- An incident's evidence row named its event and again that event's decision, with an index
-- on each: a storm or a runaway agent joins every later event to its incident, so this was
-- about 190 bytes per decision of such an agent. The decision of an evidence item is its
-- event's subject (a decision event's subject is its decision), read through the event
-- (`schema::EVIDENCE_ITEM_COLUMNS`), and the decisions that are evidence are found through
-- `decisions.event_seq`. The table keeps only the pair, clustered on its key (WITHOUT ROWID:
-- one B-tree instead of a table and its key's index), with the event's index that the
-- evidence of a decision and archiving read.
CREATE TABLE incident_evidence_by_event (
    incident_id  TEXT NOT NULL REFERENCES incidents (id),
    event_seq    INTEGER NOT NULL,
    PRIMARY KEY (incident_id, event_seq)
) WITHOUT ROWID;
INSERT INTO incident_evidence_by_event (incident_id, event_seq)
    SELECT incident_id, event_seq FROM incident_evidence;
DROP TABLE incident_evidence;
ALTER TABLE incident_evidence_by_event RENAME TO incident_evidence;
CREATE INDEX incident_evidence_event ON incident_evidence (event_seq);
