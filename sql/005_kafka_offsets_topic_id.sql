-- The id of the topic the offsets were read from: a topic deleted and re-created under the same
-- name gets a new id, and its new log is read from the start instead of from the old position.
-- Rows from before this column keep NULL until the sink next commits.
ALTER TABLE kafka_offsets ADD COLUMN IF NOT EXISTS topic_id text;
