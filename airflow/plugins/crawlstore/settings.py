"""Settings objects, one per concern, loaded from environment variables (12-factor).

Required values have no defaults: a missing one fails at start-up naming the variable.
Secrets are `SecretStr`, so they never show up in logs or reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
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
