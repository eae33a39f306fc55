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
from crawlstore.config.models import FieldSpec, KindSpec, SourceSpec

__all__ = [
    "CONFIG_ENV",
    "NAVIGATION_KEYS",
    "Config",
    "ConfigError",
    "FieldSpec",
    "KindSpec",
    "SourceSpec",
    "config_dir",
    "current",
    "load",
]
