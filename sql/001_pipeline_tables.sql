-- Landing tables for the pipeline's items: typed columns, the raw item as JSONB, Kafka lineage.
-- The natural key is the Kafka message key; a row is only replaced by a record at a later offset
-- or crawl time (stale-write guard in the PostgreSQL sink).

CREATE TABLE IF NOT EXISTS products (
    product_id      text PRIMARY KEY,
    name            text NOT NULL,
    brand           text,
    category        text,
    price           numeric(12, 2) NOT NULL,
    sale_price      numeric(12, 2),
    currency        char(3) NOT NULL,
    url             text NOT NULL,
    image_url       text,
    rating          numeric(3, 2),
    review_count    integer,
    crawled_at      timestamptz NOT NULL,
    raw             jsonb NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    landed_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS readings (
    reading_id      text PRIMARY KEY,
    device_id       text NOT NULL,
    sensor1         double precision,
    sensor2         double precision,
    sensor3         double precision,
    motor1          double precision,
    motor2          double precision,
    motor3          double precision,
    is_fail         boolean NOT NULL,
    measured_at     timestamptz NOT NULL,
    crawled_at      timestamptz NOT NULL,
    raw             jsonb NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    landed_at       timestamptz NOT NULL DEFAULT now()
);

-- Consumed offsets, written in the same transaction as the rows (exactly-once landing).
CREATE TABLE IF NOT EXISTS kafka_offsets (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset     bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
