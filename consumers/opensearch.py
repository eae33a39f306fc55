"""OpenSearch sink: `_bulk` index with `_id` = natural key and external versioning.

Exactly-once without a transaction: every document is written with `version_type=external` and
a version that only grows with the item's age (see `external_version`). Writing a record a
second time, or an older record after a newer one, is rejected by OpenSearch with 409
(version conflict), which this sink counts as success: the index already holds that record or a
newer one. So a replay of anything is a no-op, and it is enough to commit Kafka offsets after
the bulk request succeeded: a crash before the commit only replays records that change nothing.

Why the version comes from crawl time, not from the Kafka offset alone: offsets only order the
records of one partition of one topic. A key moves to another partition when partitions are
added or the topic is re-created, the same index is fed from several topics (a backfill, a test),
and a DLQ replay re-publishes an old item at a new, higher offset; with offset versions each of
these would let an older item overwrite a newer one. Crawl time is the item's own notion of
"newer" and the order the PostgreSQL sink's stale-write guard uses, so both stores converge on the
same version of each item. The offset breaks ties between two crawls in the same millisecond,
with its low 21 bits: those wrap every 2,097,152 offsets, so a refusal by a version of the same
millisecond is checked against the stored document's full (crawl time, offset) when both records
come from one partition, and the later record is written above the stored version (`_ties`).

Index templates and mappings are owned here: created on start (idempotent), one index per item
declared kind (`<prefix><kind>s`), mappings derived from the kind's declaration and strict, so
schema drift surfaces as dead letters (and trips the breaker) instead of unsearchable fields.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka.structs import TopicPartition
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from consumers.batching import Batch, Decoded, Rejection
from consumers.errors import FatalError, StoreRejected, TransientError
from consumers.sink import SinkTask
from crawlstore.config import FieldSpec, KindSpec, current
from crawlstore.config.evolution import ADVICE, declaration, unsafe_changes
from crawlstore.dlq import STAGE_SINK
from crawlstore.settings import OpenSearchSettings

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OFFSET_BITS = 21  # ties within one millisecond; 42 bits of milliseconds last until the year 2109
MAX_MS = (1 << (63 - OFFSET_BITS)) - 1
RETRY_STATUS = {429, 502, 503, 504}
ACTION = b'{"index":{"_index":%s,"_id":%s,"version":%d,"version_type":"external"}}'
# Per-item errors that are about the cluster, not the document.
TRANSIENT_ITEM_ERRORS = {
    "cluster_block_exception",
    "index_closed_exception",  # someone closed the index: wait until it is opened again
    "es_rejected_execution_exception",
    "process_cluster_event_timeout_exception",
    "unavailable_shards_exception",
}

KAFKA_LINEAGE = {
    "properties": {
        "topic": {"type": "keyword"},
        "partition": {"type": "integer"},
        "offset": {"type": "long"},
        "timestamp": {"type": "date", "format": "epoch_millis"},
    }
}
URL = {"type": "keyword", "ignore_above": 4096}
KEYWORD = {"type": "keyword", "ignore_above": 1024}
SEARCHED = {"type": "text", "fields": {"raw": KEYWORD}}
INT32 = 2**31 - 1
META = "crawlstore"  # the index mapping's _meta key holding the declaration it was prepared from


def index_name(prefix: str, kind: str) -> str:
    """The index of a kind: `<prefix><kind>s`, like its PostgreSQL table."""
    return f"{prefix}{kind}s"


def field_mapping(spec: FieldSpec) -> dict[str, Any]:
    """The mapping of a declared field: searched text is analysed (with a keyword twin), ids are
    keywords, decimals scaled floats with the declared places, JSON objects stored unindexed."""
    t = spec.type
    if t in ("text", "list[text]"):
        return SEARCHED if spec.search else KEYWORD
    if t == "decimal":
        return {"type": "scaled_float", "scaling_factor": 10 ** (2 if spec.places is None else spec.places)}
    if t == "integer":
        small = spec.min is not None and spec.max is not None and spec.min >= -INT32 and spec.max <= INT32
        return {"type": "integer" if small else "long"}
    simple: dict[str, dict[str, Any]] = {
        "identifier": {"type": "keyword"},
        "enum": {"type": "keyword"},
        "url": URL,
        "float": {"type": "double"},
        "boolean": {"type": "boolean"},
        "timestamp": {"type": "date"},
        "date": {"type": "date"},
        "json": {"type": "object", "enabled": False},
    }
    return simple[t]


def mapping_for(kind: KindSpec) -> dict[str, Any]:
    """A kind's strict mapping: the key first, where it came from and when, the fields, lineage."""
    properties: dict[str, Any] = {kind.key_field: field_mapping(kind.fields[kind.key_field])}
    properties |= {"source": {"type": "keyword"}, "crawled_at": {"type": "date"}}
    properties |= {name: field_mapping(f) for name, f in kind.fields.items()}
    return {
        "dynamic": "strict",
        "_meta": {META: declaration(kind)},
        "properties": {**properties, "kafka": KAFKA_LINEAGE},
    }


# One shard is plenty per kind at this scale; replicas follow the cluster size (0 on one node).
INDEX_SETTINGS = {"number_of_shards": 1, "auto_expand_replicas": "0-1", "refresh_interval": "1s"}


MAX_VERSION = (1 << 63) - 1
CONFLICT = re.compile(r"current version \[(\d+)\] is higher or equal to the one provided \[(\d+)\]")


def millis(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


def external_version(crawled_at: datetime, offset: int) -> int:
    """A version that orders records by (crawl time in ms, offset's low bits); a valid positive long."""
    ms = min(max(millis(crawled_at), 0), MAX_MS)
    return (ms << OFFSET_BITS) | (offset & ((1 << OFFSET_BITS) - 1))


def _order(decoded: Decoded) -> tuple[int, int]:
    return millis(decoded.item.crawled_at), decoded.record.offset


def possible_tie(ours: int, reason: str) -> int | None:
    """The stored version, when a refusal of `ours` may come from the tie-break's wrap: the stored
    version is of the same millisecond, or of the next one (where a settled tie lifts a version)."""
    m = CONFLICT.search(reason)
    if m is None:
        return None
    current = int(m[1])
    return current if 0 <= (current >> OFFSET_BITS) - (ours >> OFFSET_BITS) <= 1 else None


def _error_text(error: Any) -> tuple[str, str]:
    if isinstance(error, dict):
        kind = str(error.get("type", "error"))
        reason = str(error.get("reason", ""))
        cause = error.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            reason = f"{reason}: {cause.get('type')}: {cause.get('reason')}"
        return kind, reason
    return "error", str(error)


class OpenSearchSink(SinkTask):
    name = "opensearch"

    def __init__(
        self,
        settings: OpenSearchSettings,
        index_prefix: str = "crawl-",
        timeout_s: float = 30.0,
        kinds: Iterable[KindSpec] | None = None,
    ) -> None:
        self.settings = settings
        self.index_prefix = index_prefix
        self.kinds = {k.kind: k for k in (current().kinds.values() if kinds is None else kinds)}
        self.client = OpenSearch(
            hosts=[settings.url], timeout=timeout_s, max_retries=0, retry_on_timeout=False
        )

    def index_for(self, kind: str) -> str:
        return index_name(self.index_prefix, kind)

    # -- lifecycle

    def start(self) -> None:
        """Create, or extend additively, the template and index of every declared kind.

        An index records the declaration it was prepared from in its mapping's `_meta`; a change
        that cannot be applied safely (crawlstore.config.evolution) stops the sink, unchanged.
        """
        try:
            existing = {kind: self._mapping(self.index_for(kind)) for kind in self.kinds}
            self._refuse_unsafe_changes(existing)
            for kind in self.kinds.values():
                index, mapping = self.index_for(kind.kind), mapping_for(kind)
                self.client.indices.put_index_template(
                    name=index,
                    body={
                        "index_patterns": [index],
                        "priority": 200,
                        "template": {"settings": INDEX_SETTINGS, "mappings": mapping},
                        "_meta": {"owner": "crawlstore consumers", "schema": kind.schema_version},
                    },
                )
                found = existing[kind.kind]
                if found is not None:
                    self._extend_mapping(index, mapping, found)
                else:
                    self.client.indices.create(
                        index=index, body={}, params={"ignore": 400}
                    )  # lost a race: fine
        except OSConnectionError as exc:
            raise TransientError(f"OpenSearch unreachable: {exc}") from exc
        except TransportError as exc:
            if exc.status_code in RETRY_STATUS:
                raise TransientError(f"OpenSearch not ready: {exc}") from exc
            raise FatalError(f"cannot set up the OpenSearch indices: {exc}") from exc
        log.info("opensearch sink ready: indices %s", ", ".join(map(self.index_for, self.kinds)))

    def _mapping(self, index: str) -> dict[str, Any] | None:
        """The index's current mapping, or None when there is no such index."""
        if not self.client.indices.exists(index=index):
            return None
        found: dict[str, Any] = self.client.indices.get_mapping(index=index)
        for entry in found.values():
            mapping: dict[str, Any] = entry.get("mappings", {})
            return mapping
        return {}

    def _refuse_unsafe_changes(self, existing: Mapping[str, dict[str, Any] | None]) -> None:
        refused = []
        for name, kind in self.kinds.items():
            recorded = (existing[name] or {}).get("_meta", {}).get(META)
            if recorded is None or recorded == declaration(kind):
                continue  # a new index, one prepared before declarations were recorded, or unchanged
            index = self.index_for(name)
            rows = int(self.client.count(index=index)["count"])
            refused += [f"index {index}: {p}" for p in unsafe_changes(recorded, declaration(kind), rows)]
        if refused:
            problems = "; ".join(refused)
            raise FatalError(f"the declared kinds cannot be applied to OpenSearch: {problems}. {ADVICE}")

    def _extend_mapping(self, index: str, mapping: dict[str, Any], found: dict[str, Any]) -> None:
        """Record the declaration and add the fields the index lacks (additions never conflict).

        A field the index already maps differently (made by someone else or an older version)
        keeps its mapping, with a warning; a change of the declared type is refused above.
        """
        have = found.get("properties", {})
        added = {k: v for k, v in mapping["properties"].items() if k not in have}
        body = {"dynamic": mapping["dynamic"], "_meta": mapping["_meta"], "properties": added}
        self.client.indices.put_mapping(index=index, body=body)
        if added:
            log.info("index %s: added field(s) %s", index, ", ".join(added))
        differing = [
            f"{k} is {have[k].get('type')}, the declaration says {v.get('type')}"
            for k, v in mapping["properties"].items()
            if k in have and have[k].get("type") != v.get("type")
        ]
        if differing:
            # Made by someone else or an earlier version. Documents that do not fit are dead-lettered
            # one by one, and the breaker stops us if that is all of them.
            log.warning(
                "index %s has a mapping that conflicts with the sink's (%s); it keeps its own",
                index,
                "; ".join(differing),
            )

    def open(
        self,
        partitions: Collection[TopicPartition],
        committed: Mapping[TopicPartition, int | None],
        topic_ids: Mapping[str, str] | None = None,
    ) -> dict[TopicPartition, int]:
        # Kafka's committed offsets are the truth: replays are no-ops, so re-reading is harmless.
        # (Kafka drops a deleted topic's committed offsets: a re-created one is read from its start.)
        return {}

    def prepare(self, batch: Batch) -> None:
        batch.prepared = self.payload(batch.items)

    def put(self, batch: Batch) -> list[Rejection]:
        refused: list[Rejection] = []
        self._bulk(batch.items, refused, batch.prepared)
        return refused

    def flush(self, batch: Batch) -> None:
        """Nothing to do: a successful bulk is durable (translog) and replays are no-ops."""

    # -- bulk

    def payload(self, items: Sequence[Decoded]) -> bytes:
        """The `_bulk` body: per item an index action (id, external version) and the document."""
        indices = {kind: json.dumps(self.index_for(kind)).encode() for kind in self.kinds}
        lines: list[bytes] = []
        for decoded in items:
            item = decoded.item
            lines.append(
                ACTION
                % (
                    indices[item.kind],
                    json.dumps(item.key).encode(),
                    external_version(item.crawled_at, decoded.record.offset),
                )
            )
            lines.append(decoded.document())
        lines.append(b"")
        return b"\n".join(lines)

    def _bulk(self, items: Sequence[Decoded], refused: list[Rejection], payload: bytes | None = None) -> None:
        if not items:
            return
        if payload is None:
            payload = self.payload(items)
        try:
            response = self.client.bulk(
                body=payload, params={"filter_path": "errors,items.*.status,items.*.error"}
            )
        except OSConnectionError as exc:
            raise TransientError(f"OpenSearch unreachable: {exc}") from exc
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            if status in RETRY_STATUS or status >= 500:
                raise TransientError(f"OpenSearch answered {status}: {exc.error}") from exc
            if status in (401, 403):
                raise FatalError(f"OpenSearch refused the sink's credentials: {exc}") from exc
            # The request as a whole was refused (e.g. 413 too large, 400 unparseable): halve it
            # until the record that causes it is alone.
            if len(items) == 1:
                log.warning(
                    "%s: OpenSearch refused the request (%s): to the DLQ", items[0].record.where, status
                )
                refused.append(
                    Rejection(
                        items[0].record, StoreRejected(f"opensearch_{status}", str(exc)[:2000]), STAGE_SINK
                    )
                )
                return
            middle = len(items) // 2
            self._bulk(items[:middle], refused)
            self._bulk(items[middle:], refused)
            return
        if not response.get("errors"):
            return
        self._item_errors(items, response.get("items", []), refused)

    def _item_errors(
        self, items: Sequence[Decoded], results: list[dict[str, Any]], refused: list[Rejection]
    ) -> None:
        if len(results) != len(items):
            raise TransientError(f"bulk answered {len(results)} items for {len(items)} actions")
        retry: list[str] = []
        ties: list[tuple[Decoded, int]] = []
        missing_index = False
        for decoded, entry in zip(items, results, strict=True):
            result = next(iter(entry.values()))
            status = int(result.get("status", 0))
            if status in (200, 201):
                continue
            kind, reason = _error_text(result.get("error"))
            if status == 409:  # this record or a newer one is already there, unless a tie wrapped
                stored_version = possible_tie(
                    external_version(decoded.item.crawled_at, decoded.record.offset), reason
                )
                if stored_version is not None:
                    ties.append((decoded, stored_version))
                continue
            if status in RETRY_STATUS or status >= 500 or kind in TRANSIENT_ITEM_ERRORS:
                retry.append(f"{decoded.record.where}: {status} {kind}")
            elif kind == "index_not_found_exception":
                missing_index = True
                retry.append(f"{decoded.record.where}: index missing")
            else:
                log.warning(
                    "%s: OpenSearch refused the document (%s %s: %s): to the DLQ",
                    decoded.record.where,
                    status,
                    kind,
                    reason[:300],
                )
                refused.append(
                    Rejection(decoded.record, StoreRejected(f"opensearch_{kind}", reason[:2000]), STAGE_SINK)
                )
        if ties:
            self._ties(ties)
        if missing_index:
            self.start()  # someone deleted an index: recreate it with our mapping, then retry
        if retry:
            # Documents that did land are 409s next time: retrying the whole batch is safe.
            raise TransientError(f"{len(retry)} documents to retry, e.g. {retry[0]}")

    def _ties(self, ties: list[tuple[Decoded, int]]) -> None:
        """Records refused by a version of (about) their millisecond: compare each with the stored
        document in full, (crawl time in ms, offset), when both come from one partition (offsets
        order nothing else), and write the later record just above the stored version. Of several
        such records of one document in a batch, the latest is the one to compare."""
        latest: dict[tuple[str, str], tuple[Decoded, int]] = {}
        for decoded, stored_version in ties:
            ref = (self.index_for(decoded.item.kind), decoded.item.key)
            seen = latest.get(ref)
            if seen is None or _order(decoded) > _order(seen[0]):
                latest[ref] = (decoded, max(stored_version, seen[1]) if seen else stored_version)
        refs = [{"_index": i, "_id": k, "_source": ["crawled_at", "kafka"]} for i, k in latest]
        try:
            docs = self.client.mget(body={"docs": refs})["docs"]
            lines: list[bytes] = []
            for (decoded, stored_version), doc in zip(latest.values(), docs, strict=True):
                source = doc.get("_source") or {}
                lineage = source.get("kafka") or {}
                record = decoded.record
                stored = (millis(datetime.fromisoformat(source["crawled_at"])), int(lineage["offset"]))
                ours = _order(decoded)
                same_partition = (lineage.get("topic"), lineage.get("partition")) == (
                    record.topic,
                    record.partition,
                )
                # A later crawl wins whatever its partition (a lifted version can reach into its
                # millisecond); within one millisecond, offsets order only one partition's records.
                if ours[0] > stored[0] or (same_partition and ours > stored):
                    index, key = json.dumps(doc["_index"]).encode(), json.dumps(doc["_id"]).encode()
                    lines += [ACTION % (index, key, min(stored_version + 1, MAX_VERSION)), decoded.document()]
            if not lines:
                return
            response = self.client.bulk(body=b"\n".join([*lines, b""]), params={"filter_path": "errors"})
        except (OSConnectionError, TransportError) as exc:
            raise TransientError(f"OpenSearch, settling version ties: {exc}") from exc
        if response.get("errors"):
            raise TransientError("a document written to settle a version tie changed meanwhile: retry")
        log.info(
            "%d record(s) of the same millisecond as the stored one written past the tie-break",
            len(lines) // 2,
        )

    def stop(self) -> None:
        self.client.close()
