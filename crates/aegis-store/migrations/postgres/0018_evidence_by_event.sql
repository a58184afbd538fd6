-- An incident's evidence row named its event and again that event's decision, with an index
-- on each: a storm or a runaway agent joins every later event to its incident. The decision
-- of an evidence item is its event's subject (a decision event's subject is its decision),
-- read through the event (`schema::EVIDENCE_ITEM_COLUMNS`), and the decisions that are
-- evidence are found through `decisions.event_seq`, with the event's index that the evidence
-- of a decision and archiving read. Dropping the column drops its index.
ALTER TABLE incident_evidence DROP COLUMN decision_id;
CREATE INDEX incident_evidence_event ON incident_evidence (event_seq);
