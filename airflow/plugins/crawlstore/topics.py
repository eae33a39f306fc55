"""The pipeline's topics. A topic `T` has its dead-letter twin `T-dlq` (docs/architecture.md#topics)."""

from __future__ import annotations

from dataclasses import dataclass, field

from crawlstore.config import current


def pipeline_topics() -> tuple[str, ...]:
    """The topics the configured sources publish to (crawlstore.config), one kind each, sorted."""
    return current().topics


# One record per published run, in the same Kafka transaction as the run's items: a retried
# publish that finds its run here has nothing left to send (crawlstore.producer.publish_once).
PUBLISH_LOG = "crawlstore.publish-log"
DLQ_SUFFIX = "-dlq"
PARKING_SUFFIX = "-dlq-parking"
WEEK_MS = 7 * 24 * 3600 * 1000


def dlq_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


def parking_topic(topic: str) -> str:
    """Where dead letters go that failed every replay: kept, never replayed automatically."""
    return f"{topic}{PARKING_SUFFIX}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def twin_specs(topic: str) -> list[TopicSpec]:
    """A topic's dead-letter twins: kept until someone deals with them."""
    return [
        TopicSpec(dlq_topic(topic), 1, {"retention.ms": "-1"}),
        TopicSpec(parking_topic(topic), 1, {"retention.ms": "-1"}),
    ]


def topic_specs(partitions: int) -> list[TopicSpec]:
    """Main topics keep a week, with their twins; the publish log keeps 30 days."""
    specs: list[TopicSpec] = []
    for topic in pipeline_topics():
        specs.append(TopicSpec(topic, partitions, {"retention.ms": str(WEEK_MS)}))
        specs += twin_specs(topic)
    return [*specs, TopicSpec(PUBLISH_LOG, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)})]
