"""The crawl DAG's Kafka producer: the provider's hook supplies the connection (`kafka_default`),
crawlstore.producer the settings that may not change and the delivery checks."""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

from crawlstore.producer import producer_config, reader_config, transactional_config

KAFKA_CONN_ID = "kafka_default"


class PipelineProducerHook(KafkaProducerHook):
    """The provider's hook with an idempotent, batching producer (transactional when asked)."""

    def __init__(self, kafka_config_id: str = KAFKA_CONN_ID, extra: dict[str, Any] | None = None) -> None:
        super().__init__(kafka_config_id=kafka_config_id)
        self.extra = extra or {}
        self.client_config: dict[str, Any] = {}

    def _get_client(self, config: dict[str, Any]) -> Any:
        self.client_config = dict(config)
        return super()._get_client(producer_config({**config, **self.extra}))


def connection_producer(conn_id: str = KAFKA_CONN_ID) -> Any:
    """The producer of an Airflow connection (default `kafka_default`)."""
    return PipelineProducerHook(kafka_config_id=conn_id).get_producer()


def connection_publisher(run_key: str, conn_id: str = KAFKA_CONN_ID) -> tuple[Any, dict[str, Any]]:
    """A transactional producer for one run, and the reader config of the publish log, for
    crawlstore.producer.publish_once."""
    hook = PipelineProducerHook(kafka_config_id=conn_id, extra=transactional_config(run_key))
    producer = hook.get_producer()
    return producer, reader_config(hook.client_config)
