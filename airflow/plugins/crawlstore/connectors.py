"""The pipeline's connectors, named once: the three sinks and the crawl DAG's validation.

A connector's name is what a dead letter's `__connect.errors.connector.name` header says, what
`python -m consumers <sink>` takes, and (for a sink) the suffix of its consumer group.
"""

from __future__ import annotations

from typing import Literal, get_args

SinkName = Literal["postgres", "opensearch", "hdfs"]
SINKS: tuple[SinkName, ...] = get_args(SinkName)
VALIDATE = "validate"  # the crawl DAG's validate task, which dead-letters invalid items
CONNECTORS: tuple[str, ...] = (*SINKS, VALIDATE)


def consumer_group(sink: str) -> str:
    """The consumer group a sink's consumers share (CONSUMER_GROUP overrides it)."""
    return f"crawlstore-{sink}"


CONSUMER_GROUPS: tuple[str, ...] = tuple(consumer_group(sink) for sink in SINKS)
