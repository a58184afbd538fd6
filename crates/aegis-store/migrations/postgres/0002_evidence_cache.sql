-- Narrative cache: the incident state (status, evidence count and latest seqs, as JSON) a
-- stored narrative was written from. A read serves the stored narrative only while the
-- incident still has this basis; NULL (narratives stored before) never matches.
ALTER TABLE incident_narratives ADD COLUMN basis TEXT;

-- Evidence graphs look up the incidents of a batch of decisions.
CREATE INDEX incident_evidence_decision ON incident_evidence (decision_id);
