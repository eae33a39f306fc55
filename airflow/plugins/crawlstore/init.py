"""One-shot init: create the pipeline's topics and apply the sql/ migrations.

`python -m crawlstore.init` is run by the native stack's `up` and by compose's init job;
running it again changes nothing.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import psycopg2
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, RetriableError, TopicAlreadyExistsError

from crawlstore.settings import KafkaSettings, PostgresSettings
from crawlstore.topics import TopicSpec, topic_specs

log = logging.getLogger(__name__)
SQL_DIR = Path(os.environ.get("CRAWLSTORE_SQL_DIR") or Path(__file__).resolve().parents[3] / "sql")


def create_topics(
    settings: KafkaSettings, specs: list[TopicSpec] | None = None, timeout_s: float = 120.0
) -> list[str]:
    """Create the missing ones of `specs` (default: the pipeline's topics); returns the names created.
    Retries until the broker answers."""
    specs = topic_specs(settings.partitions) if specs is None else specs
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.bootstrap_servers, client_id="crawlstore-init"
            )
            break
        except RetriableError:  # broker still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(s.name, s.partitions, settings.replication_factor, topic_configs=s.config)
            for s in specs
            if s.name not in existing
        ]
        created = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        for spec in specs:
            log.info(
                "topic %s: %d partition(s) %s",
                spec.name,
                spec.partitions,
                "created" if spec.name in created else "exists",
            )
        return created
    finally:
        admin.close()


def apply_migrations(settings: PostgresSettings, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply sql/NNN_*.sql in order, each once, in its own transaction (advisory-locked)."""
    applied: list[str] = []
    with psycopg2.connect(**settings.connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('crawlstore.migrations'))")
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
        for path in sorted(sql_dir.glob("[0-9]*.sql")):
            if path.stem in done:
                continue
            cur.execute(path.read_text())
            cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (path.stem,))
            applied.append(path.stem)
            log.info("migration %s applied", path.stem)
    conn.close()
    log.info("migrations: %d applied, %d already there", len(applied), len(done))
    return applied


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        create_topics(KafkaSettings())
        apply_migrations(PostgresSettings())
    except (KafkaError, psycopg2.Error) as exc:
        log.error("init failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
