"""`python -m consumers <sink>`: run one consumer (postgres, opensearch or hdfs) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from pydantic import ValidationError

from consumers.runtime import EXIT_CONFIG, ConsumerRuntime
from consumers.settings import SINK_DEFAULTS, ConsumerSettings, RuntimeConfig, resolve
from consumers.sink import SinkTask
from crawlstore.connectors import SINKS
from crawlstore.settings import KafkaSettings

log = logging.getLogger("consumers")

STORE_ENV = """store and Kafka settings (required unless a default is shown):
  KAFKA_BOOTSTRAP_SERVERS            e.g. 127.0.0.1:9092
  POSTGRES_HOST POSTGRES_PORT=5432 POSTGRES_DB POSTGRES_USER POSTGRES_PASSWORD   (postgres)
  OPENSEARCH_URL                     e.g. http://127.0.0.1:9200                   (opensearch)
  WEBHDFS_URL HDFS_USER              e.g. http://127.0.0.1:9870 crawlstore         (hdfs)"""


def build_sink(config: RuntimeConfig, guest: str | None = None) -> SinkTask:
    """The sink named by the command line, with its store settings from the environment.

    `guest` names a writer of past offsets beside the consumer (a DLQ replay): the HDFS sink then
    stages apart and claims no partition (consumers.hdfs_claims)."""
    if config.sink == "postgres":
        from consumers.postgres import PostgresSink
        from crawlstore.settings import PostgresSettings

        return PostgresSink(PostgresSettings(), config.group)
    if config.sink == "opensearch":
        from consumers.opensearch import OpenSearchSink
        from crawlstore.settings import OpenSearchSettings

        s = config.settings
        return OpenSearchSink(OpenSearchSettings(), s.opensearch_index_prefix, s.opensearch_timeout_s)
    from consumers.hdfs import HdfsSink
    from crawlstore.settings import HdfsSettings

    return HdfsSink(HdfsSettings(), config.settings.hdfs_root, config.settings.hdfs_datanode_url, guest=guest)


def env_help() -> str:
    lines = ["consumer settings (environment):"]
    for name, field in ConsumerSettings.model_fields.items():
        default = "" if field.default is None else f" (default {field.default})"
        lines.append(f"  CONSUMER_{name.upper():<28} {field.description}{default}")
    ports = ", ".join(f"{sink} {d.metrics_port}" for sink, d in SINK_DEFAULTS.items())
    lines += [
        "",
        f"metrics ports by sink: {ports}",
        "",
        STORE_ENV,
        "",
        "exit codes: 0 stopped by signal, 1 configuration, 2 fatal error, 3 dead-letter breaker",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumers",
        description="Consume the crawl topics into one store, exactly once; bad records go to <topic>-dlq.",
        epilog=env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sink", choices=SINKS, help="the store to land records in")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ConsumerSettings()
        logging.getLogger().setLevel(settings.log_level.upper())
        config = resolve(args.sink, settings)
        kafka = KafkaSettings()
        sink = build_sink(config)
    except (ValidationError, ValueError) as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    # Client libraries log every request or reconnect at INFO; their warnings are what matters here.
    for chatty in ("kafka", "opensearch", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    tune_gc()
    return ConsumerRuntime(sink, config, kafka).run()


def tune_gc() -> None:
    """Make CPython's cycle collector cheap for a process that churns through records.

    A consumer allocates several container objects per record (the client's record, ours, the
    item, the batch's bookkeeping), nearly all freed by reference counting. With the default
    thresholds (700, 10, 10) the collector ran every few hundred records and its older
    generations re-scanned every module and schema object: a quarter of the consumer's CPU
    (measured: 83 -> 61 us per record, PostgreSQL sink, bench/consumers_bench.py). Objects
    alive now (imports, settings, the sink) are frozen out of collections; young ones are
    collected every 100,000 allocations instead of 700.
    """
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)


if __name__ == "__main__":
    sys.exit(main())
