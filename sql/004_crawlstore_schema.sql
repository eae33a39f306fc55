-- What each kind's table was last prepared from (the declared key, field types and required
-- flags), and every change the PostgreSQL sink applied to it: the record schema evolution is
-- checked against (consumers/postgres_schema.py). Declarations live in the DAG bundle's config.

CREATE TABLE IF NOT EXISTS crawlstore_schema (
    table_name      text        PRIMARY KEY,
    kind            text        NOT NULL,
    schema_version  text        NOT NULL,
    declaration     jsonb       NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS crawlstore_schema_changes (
    id          bigserial   PRIMARY KEY,
    table_name  text        NOT NULL,
    change      text        NOT NULL,
    detail      jsonb       NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
