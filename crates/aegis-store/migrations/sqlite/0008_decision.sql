-- Coalesced alerts (SQLite): an alert counts the detections of its kind for its agent within
-- its window (aegis-core/src/correlate.rs, "Alert coalescing") instead of one row each.
ALTER TABLE alerts ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
