"""Settings objects, one per concern, loaded from environment variables (12-factor).

Required values have no defaults: a missing one fails at start-up naming the variable.
Secrets are `SecretStr`, so they never show up in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str
    replication_factor: int = 1
    partitions: int = 3


class PostgresSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTGRES_", extra="ignore")

    host: str
    port: int = 5432
    db: str
    user: str
    password: SecretStr

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.db,
            "user": self.user,
            "password": self.password.get_secret_value(),
            "application_name": "crawlstore",
            # A dead server or network shows as an error within about a minute, never as a hang.
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 60_000,
        }


class OpenSearchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENSEARCH_", extra="ignore")

    url: str


class HdfsSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    webhdfs_url: str = Field(validation_alias="WEBHDFS_URL")
    user: str = Field(validation_alias="HDFS_USER")


class PipelineSettings(BaseSettings):
    """Where crawl runs keep their files (one folder per source and run)."""

    model_config = SettingsConfigDict(env_prefix="CRAWLSTORE_", extra="ignore")

    data_dir: Path


class PageSettings(BaseSettings):
    """The Pipeline page in Airflow's UI (crawlstore.ui): where the consumers and the Kafka UI answer.

    `consumers` lists each sink's /health and /metrics address as `sink=url`, comma-separated;
    `kafka_ui_topic_url` is a topic's page in the Kafka UI, with `{topic}` in it.
    """

    model_config = SettingsConfigDict(env_prefix="PIPELINE_PAGE_", extra="ignore")

    consumers: str = (
        "postgres=http://127.0.0.1:9101,opensearch=http://127.0.0.1:9102,hdfs=http://127.0.0.1:9103"
    )
    kafka_ui_url: str = "http://127.0.0.1:8088"
    kafka_ui_topic_url: str = "http://127.0.0.1:8088/topic/{topic}"

    @field_validator("consumers")
    @classmethod
    def _consumers_listed(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            sink, sep, url = item.partition("=")
            if not sep or not sink.strip() or not url.strip().startswith(("http://", "https://")):
                raise ValueError(f"{item!r} is not sink=http://host:port (PIPELINE_PAGE_CONSUMERS)")
        return value

    @field_validator("kafka_ui_url", "kafka_ui_topic_url")
    @classmethod
    def _web_address(cls, value: str, info: ValidationInfo) -> str:
        variable = f"PIPELINE_PAGE_{str(info.field_name).upper()}"
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) address ({variable})")
        if info.field_name == "kafka_ui_topic_url" and "{topic}" not in value:
            raise ValueError(f"{value!r} has no {{topic}} in it ({variable})")
        return value

    def consumer_urls(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.consumers.split(",") if item.strip())
        return {sink.strip(): url.strip().rstrip("/") for sink, _, url in pairs}

    def topic_url(self, topic: str) -> str:
        return self.kafka_ui_topic_url.replace("{topic}", quote(topic, safe=""))
