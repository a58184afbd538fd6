-- A commit batch signs the checkpoints of every chain it extended with one signature over the
-- Merkle root of their bodies (aegis_core::receipt::ReceiptSigner::checkpoints). Each
-- checkpoint keeps its place in that tree: the leaf index, the number of leaves, and the
-- sibling hashes from its leaf to the root (32 bytes each, leaf side first). Checkpoints
-- written before keep NULL here and their own signature over the body alone.
ALTER TABLE receipt_checkpoints ADD COLUMN batch_index INTEGER;
ALTER TABLE receipt_checkpoints ADD COLUMN batch_size INTEGER;
ALTER TABLE receipt_checkpoints ADD COLUMN batch_path BLOB;
