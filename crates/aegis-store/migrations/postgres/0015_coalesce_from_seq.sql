-- What the notifier gathers for an agent's next message is every notified event of that agent
-- in the log from the first one held back up to the notifier's cursor. Keep that first seq
-- instead of a copy of every item, which was written again on each pass and made a burst of
-- denies cost the writer more per deny the longer it lasted.
ALTER TABLE notify_coalesce ADD COLUMN pending_from_seq BIGINT;
UPDATE notify_coalesce
   SET pending_from_seq = (SELECT MIN((item ->> 'seq')::BIGINT) FROM jsonb_array_elements(pending::jsonb) AS item)
 WHERE pending <> '[]';
ALTER TABLE notify_coalesce DROP COLUMN pending;
