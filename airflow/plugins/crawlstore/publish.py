"""The crawl DAG's Kafka producer: the provider's hook supplies the connection (`kafka_default`),
crawlstore.producer the settings that may not change and the delivery checks."""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook

from crawlstore.producer import producer_config

KAFKA_CONN_ID = "kafka_default"


class PipelineProducerHook(KafkaProducerHook):
    """The provider's hook with an idempotent, batching producer."""

    def _get_client(self, config: dict[str, Any]) -> Any:
        return super()._get_client(producer_config(config))


def connection_producer(conn_id: str = KAFKA_CONN_ID) -> Any:
    """The producer of an Airflow connection (default `kafka_default`)."""
    return PipelineProducerHook(kafka_config_id=conn_id).get_producer()
