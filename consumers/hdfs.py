"""HDFS sink over WebHDFS: per-partition files, committed by rename, named by offsets.

put() writes each partition's records of the batch to temp files (one per day of the records'
timestamps, cut so their offset ranges are contiguous); flush() renames them, in offset order, to
`<day directory>/<topic>+<partition>+<first>+<last>.<format>`, the day directory and the format
(JSON Lines, or Parquet typed from the kind: consumers.parquet) from the topic's layout in the
configuration (`<root>/<topic>/dt=<day>` and JSON Lines by default). The names are the source of
truth: on assignment the next offset of each partition is "last + 1" of its newest file, so a
crash between a rename and the Kafka commit re-reads nothing that is already in a file, and a
crash before the rename leaves only a temp file, deleted when the partition is opened again.

Kafka's committed offset counts too, as a floor: it is only ever committed after the renames,
and it is ahead of the files when a batch's last records were all dead-lettered (no file holds
them). Each line (row) is the item plus `kafka` lineage (topic, partition, offset, timestamp).
"""

from __future__ import annotations

import bisect
import json
import logging
import posixpath
import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

from kafka.structs import TopicPartition

from consumers import parquet
from consumers.batching import Batch, Decoded, Rejection
from consumers.errors import FatalError, StoreRejected, TransientError
from consumers.hdfs_files import (
    CommittedFile,
    Layout,
    Run,
    aside_name,
    next_offset,
    parse_file_name,
    safe_root,
    safe_segment,
    split_runs,
    temp_dir,
    topic_id_path,
)
from consumers.sink import SinkTask
from consumers.webhdfs import WebHdfs
from crawlstore.config import Config, current
from crawlstore.dlq import STAGE_SINK
from crawlstore.settings import HdfsSettings

log = logging.getLogger(__name__)


def record_day(decoded: Decoded) -> date:
    """The day of the record's timestamp (crawl time by contract), UTC; crawled_at if it has none."""
    ts = decoded.record.timestamp_ms
    if ts is None or ts < 0:
        day: date = decoded.item.crawled_at.astimezone(UTC).date()
        return day
    return datetime.fromtimestamp(ts / 1000, tz=UTC).date()


class HdfsSink(SinkTask):
    name = "hdfs"

    def __init__(
        self,
        settings: HdfsSettings,
        root: str = "/crawlstore/topics",
        datanode_url: str | None = None,
        client: WebHdfs | None = None,
        uploads: int = 4,
        *,
        config: Config | None = None,
    ) -> None:
        self.root = safe_root(root)
        self.config = config or current()
        self._layouts: dict[str, Layout] = {}
        self.fs = client or WebHdfs(settings.webhdfs_url, settings.user, datanode_url)
        self.next: dict[TopicPartition, int] = {}
        self._staged: list[tuple[TopicPartition, Run, str, str]] = []
        self._schemas: dict[TopicPartition, Any] = {}  # Parquet schema per partition of the batch
        self._dirs: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=uploads, thread_name_prefix="hdfs-upload")

    def start(self) -> None:
        self.fs.mkdirs(self.root)
        log.info("hdfs sink ready: committed files under %s", self.root)

    def layout(self, topic: str) -> Layout:
        """Where the topic's files go and in which format (the configuration's `topics/`)."""
        layout = self._layouts.get(topic)
        if layout is None:
            spec, name = self.config.hdfs_layout(topic)
            try:
                layout = Layout.of(spec.path, self.root, topic, name, spec.format)
            except ValueError as exc:
                raise FatalError(f"topic {topic!r} cannot be laid out as {spec.path!r}: {exc}") from exc
            self._layouts[topic] = layout
        return layout

    def committed_files(self, topic: str) -> dict[str, CommittedFile]:
        """Every committed file of a topic by path (either format), from the directory listing."""
        files: dict[str, CommittedFile] = {}
        layout = self.layout(topic)
        for day in self.fs.list(layout.base) or []:
            if day.get("type") != "DIRECTORY" or not layout.is_day_dir(day.get("pathSuffix", "")):
                continue
            folder = f"{layout.base}/{day['pathSuffix']}"
            for entry in self.fs.list(folder) or []:
                parsed = parse_file_name(entry.get("pathSuffix", ""))
                if parsed is not None and parsed.topic == topic:
                    files[f"{folder}/{entry['pathSuffix']}"] = parsed
        return files

    def stored_offsets(self, partition: TopicPartition, offsets: Collection[int]) -> set[int]:
        """Read from the `kafka` lineage of the committed files whose range covers an offset asked.

        A file's name bounds the offsets it accounts for, its lines say which ones it holds (a
        replay writes the offsets of a DLQ out of order across runs, so "after the newest file"
        does not answer this).
        """
        wanted, lookup = sorted(offsets), set(offsets)
        found: set[int] = set()
        for path, committed in self.committed_files(partition.topic).items():
            i = bisect.bisect_left(wanted, committed.first)
            if committed.partition != partition.partition or i == len(wanted) or wanted[i] > committed.last:
                continue
            content = self.fs.read(path)
            if committed.format == "parquet":
                lineages = parquet.lineage(content)
            else:
                lineages = [json.loads(line).get("kafka") or {} for line in content.splitlines()]
            for lineage in lineages:
                if lineage.get("partition") == partition.partition and lineage.get("offset") in lookup:
                    found.add(int(lineage["offset"]))
        return found

    def open(
        self,
        partitions: Collection[TopicPartition],
        committed: Mapping[TopicPartition, int | None],
        topic_ids: Mapping[str, str] | None = None,
    ) -> dict[TopicPartition, int]:
        start: dict[TopicPartition, int] = {}
        by_topic: dict[str, list[TopicPartition]] = defaultdict(list)
        for tp in partitions:
            try:
                by_topic[safe_segment(tp.topic)].append(tp)
            except ValueError as exc:
                raise FatalError(f"topic {tp.topic!r} cannot be a directory name: {exc}") from exc
        for topic, tps in by_topic.items():
            files = list(self.committed_files(topic).values())
            for tp in tps:
                # Leftovers of a crash between write and rename: never committed, never counted.
                self.fs.delete(temp_dir(self.root, topic, tp.partition), recursive=True)
                new_id = (topic_ids or {}).get(tp.topic)
                if new_id is not None and self._topic_id(tp, new_id):
                    start[tp] = self.next[tp] = 0
                    continue
                from_files = next_offset(files, topic, tp.partition)
                known = [o for o in (from_files, committed.get(tp)) if o is not None]
                if known:
                    start[tp] = self.next[tp] = max(known)
                else:
                    self.next.pop(tp, None)
                log.info(
                    "%s[%d]: %d committed files, next offset from files %s, Kafka %s",
                    topic,
                    tp.partition,
                    sum(1 for f in files if f.partition == tp.partition),
                    from_files,
                    committed.get(tp),
                )
        return start

    def _topic_id(self, tp: TopicPartition, new_id: str) -> bool:
        """Keep the partition's topic id in `<root>/+topics/<topic>/<partition>`; True when it was
        another id (the topic was deleted and re-created): the old log's files are then renamed
        aside (`<name>.old-<id>.<format>`, still readable, no longer the resume position)."""
        marker = topic_id_path(self.root, tp.topic, tp.partition)
        try:
            old_id = self.fs.read(marker).decode().strip()
        except FileNotFoundError:
            old_id = None
        if old_id == new_id:
            return False
        renamed = 0
        if old_id is not None:
            for path, f in self.committed_files(tp.topic).items():
                if f.partition == tp.partition:
                    self.fs.rename(path, aside_name(path, old_id))
                    renamed += 1
        self.fs.create(marker, new_id.encode())
        if old_id is None:
            return False
        log.warning(
            "TOPIC RE-CREATED: %s[%d] has id %s, its files were written from id %s: %d file(s) renamed "
            "aside (*.old-%s.*), reading the new log from its start",
            tp.topic,
            tp.partition,
            new_id,
            old_id,
            renamed,
            old_id[:8],
        )
        return True

    def put(self, batch: Batch) -> list[Rejection]:
        self._staged = []
        by_tp: dict[TopicPartition, list[Decoded]] = defaultdict(list)
        for decoded in batch.items:
            by_tp[decoded.tp].append(decoded)
        uploads: list[tuple[TopicPartition, Run, str, str]] = []
        rejected: list[Rejection] = []
        self._schemas = {}
        for tp, span in sorted(batch.ranges.items()):
            layout = self.layout(tp.topic)
            entries, bad = self._entries(layout, tp, by_tp.get(tp, []))
            rejected += bad
            for run in split_runs(entries, span.first, span.last):
                if run.last < self.next.get(tp, 0):
                    continue  # renamed by an earlier attempt of this very batch
                committed = CommittedFile(tp.topic, tp.partition, run.first, run.last, layout.format)
                temp = f"{temp_dir(self.root, tp.topic, tp.partition)}/{uuid.uuid4().hex}.{layout.format}"
                uploads.append((tp, run, temp, layout.final_path(run.day, committed)))
        # Uploads are independent (only the renames are ordered), and each WebHDFS CREATE waits
        # on the NameNode for a while: run them side by side.
        futures = [self._pool.submit(self._upload, tp, run, temp) for tp, run, temp, _ in uploads]
        self._staged = uploads
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error
        return rejected

    def _entries(
        self, layout: Layout, tp: TopicPartition, items: list[Decoded]
    ) -> tuple[list[tuple[int, date, Any]], list[Rejection]]:
        """(offset, day, line or row) of each record the file format takes; why the others not."""
        rejected: list[Rejection] = []
        dated: list[tuple[Decoded, date]] = []
        for d in items:
            try:
                dated.append((d, record_day(d)))
            except (ValueError, OverflowError, OSError):  # e.g. year 10000: no day directory names it
                error = StoreRejected(
                    "hdfs_timestamp",
                    f"Kafka timestamp {d.record.timestamp_ms} ms is outside the years 1-9999 "
                    "that a day directory can name",
                )
                rejected.append(Rejection(d.record, error, STAGE_SINK))
        if layout.format != "parquet":
            return [(d.record.offset, day, d.document() + b"\n") for d, day in dated], rejected
        if not dated:
            return [], rejected
        try:  # the declared kind of the topic; for a topic joined by pattern, its first record's
            kind = self.config.kind_of_topic(tp.topic)
        except KeyError:
            kind = dated[0][0].item.spec
        self._schemas[tp] = schema = parquet.arrow_schema(kind)
        same = []
        for d, day in dated:
            if d.item.spec.kind == kind.kind:
                same.append((d, day))
            else:
                error = StoreRejected("parquet_kind", f"a {d.item.spec.kind} among {kind.kind}s")
                rejected.append(Rejection(d.record, error, STAGE_SINK))
        rows = [parquet.row(d) for d, _ in same]
        bad = parquet.unconvertible(rows, schema)
        rejected += [Rejection(same[i][0].record, error, STAGE_SINK) for i, error in bad.items()]
        entries = [
            (d.record.offset, day, r)
            for i, ((d, day), r) in enumerate(zip(same, rows, strict=True))
            if i not in bad
        ]
        return entries, rejected

    def _upload(self, tp: TopicPartition, run: Run, temp: str) -> None:
        schema = self._schemas.get(tp)
        content = parquet.encode(run.lines, schema) if schema is not None else b"".join(run.lines)
        self.fs.create(temp, content)

    def flush(self, batch: Batch) -> None:
        for tp, run, temp, final in self._staged:
            parent = posixpath.dirname(final)
            if parent not in self._dirs:
                self.fs.mkdirs(parent)
                self._dirs.add(parent)
            if not self.fs.rename(temp, final):
                if not self.fs.exists(final):
                    # Our temp file is gone (someone opened the partition and cleaned its temp
                    # folder): write the batch again; the runs renamed so far are remembered.
                    raise TransientError(f"rename {temp} -> {final} failed: the temp file is gone")
                # The same offsets are already committed (our own rename whose answer got lost,
                # or a former owner's): same partition and offsets, same records. Keep one.
                log.warning("%s exists already; dropping the duplicate temp file", final)
                self.fs.delete(temp)
            self.next[tp] = run.last + 1
        for tp, nxt in batch.next_offsets().items():
            self.next[tp] = max(self.next.get(tp, 0), nxt)
        self._staged = []

    def abort(self) -> None:
        staged, self._staged = self._staged, []
        for _, _, temp, _ in staged:
            try:
                self.fs.delete(temp)
            except Exception as exc:  # best effort: open() deletes leftovers anyway
                log.debug("could not delete %s: %r", temp, exc)

    def close(self, partitions: Collection[TopicPartition]) -> None:
        self.abort()
        for tp in partitions:
            self.next.pop(tp, None)

    def stop(self) -> None:
        self.abort()
        self._pool.shutdown(wait=True)
        self.fs.close()
