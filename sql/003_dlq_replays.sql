-- The DLQ replay ledger: one row per dead letter the dlq_replay DAG has dealt with, written after
-- its outcome is durable (stored by the sink, re-published, or back in the DLQ / parking topic).
-- Every replay run skips the DLQ offsets listed here, so a record is replayed once, whichever run
-- (scheduled, backfill, manual, or a rerun of a killed one) gets to it first.

CREATE TABLE IF NOT EXISTS dlq_replays (
    dlq_topic        text        NOT NULL,
    dlq_partition    integer     NOT NULL,
    dlq_offset       bigint      NOT NULL,
    outcome          text        NOT NULL
        CHECK (outcome IN ('replayed', 'failed_again', 'parked', 'republished')),
    -- What the dead letter's headers said: where it failed, why, and how often it was replayed.
    connector        text        NOT NULL,
    error_class      text        NOT NULL,
    error_kind       text        NOT NULL,
    origin_topic     text        NOT NULL,
    origin_partition integer     NOT NULL,
    origin_offset    bigint      NOT NULL,
    replay_count     integer     NOT NULL,
    target           text        NOT NULL CHECK (target IN ('sink', 'topic')),
    run_id           text        NOT NULL,
    handled_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);

CREATE INDEX IF NOT EXISTS dlq_replays_run_id ON dlq_replays (run_id);
