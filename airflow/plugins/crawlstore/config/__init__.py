"""The pipeline's configuration: item kinds and sources declared in YAML (docs/configuration.md)."""

from crawlstore.config.loader import (
    CONFIG_ENV,
    NAVIGATION_KEYS,
    Config,
    ConfigError,
    config_dir,
    current,
    load,
)
from crawlstore.config.models import FieldSpec, HdfsLayout, KindSpec, SourceSpec, TopicsSpec

__all__ = [
    "CONFIG_ENV",
    "NAVIGATION_KEYS",
    "Config",
    "ConfigError",
    "FieldSpec",
    "HdfsLayout",
    "KindSpec",
    "SourceSpec",
    "TopicsSpec",
    "config_dir",
    "current",
    "load",
]
