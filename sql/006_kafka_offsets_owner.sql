-- Fencing: opening a partition takes the row's next owner_epoch (and creates the row, next_offset
-- still NULL, when the group has none); a flush commits rows and offsets only while its epoch is
-- still the row's. A consumer that lost a partition while frozen then commits nothing for it.
ALTER TABLE kafka_offsets ADD COLUMN IF NOT EXISTS owner_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE kafka_offsets ALTER COLUMN next_offset DROP NOT NULL;
