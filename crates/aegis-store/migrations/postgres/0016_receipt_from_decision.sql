-- A receipt's body repeated its decision's row: both held the agent, tool, action, verdict,
-- score, policies, action hash and time. From here on a receipt row keeps only what is its
-- own (id, chain position, `prev_hash`, `hash`) and its body is rebuilt from the decision row
-- it records (`records::StoredReceipt`), so a decision is stored once instead of twice and an
-- edit of the decision row breaks the chain like an edit of the receipt did. The two fields
-- of a body that the decision row did not hold move to it. A body stored before stays as it
-- is and is read as it was: `body = ''` marks a receipt written from here on (a schema-v1
-- body), the same marker in both stores.
ALTER TABLE receipts ADD COLUMN prev_hash TEXT;
ALTER TABLE decisions ADD COLUMN receipt_approval TEXT;
ALTER TABLE decisions ADD COLUMN tool_definition_hash TEXT;
