-- The landing table of each item kind (typed columns, the raw item as JSONB, Kafka lineage) is
-- derived from the kind's declaration in the DAG bundle's config and created and evolved by the
-- PostgreSQL sink (consumers/postgres_schema.py). Databases made before that keep the tables this
-- file used to create; the sink records them as it finds them.

-- Consumed offsets, written in the same transaction as the rows (exactly-once landing).
CREATE TABLE IF NOT EXISTS kafka_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
