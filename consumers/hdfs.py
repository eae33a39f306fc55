"""HDFS sink over WebHDFS: per-partition files, committed by rename, named by offsets.

put() writes each partition's records of the batch to temp files (one per day of the records'
timestamps, cut so their offset ranges are contiguous); flush() renames them, in offset order, to
`<day directory>/<topic>+<partition>+<first>+<last>.<format>`, the day directory and the format
(JSON Lines, or Parquet typed from the kind: consumers.parquet) from the topic's layout in the
configuration (`<root>/<topic>/dt=<day>` and JSON Lines by default). The names are the source of
truth: on assignment the next offset of each partition is "last + 1" of its newest file, so a
crash between a rename and the Kafka commit re-reads nothing that is already in a file, and a
crash before the rename leaves only a temp file, deleted when the partition is opened again.

Opening a partition claims it first (consumers.hdfs_claims): a consumer that lost the partition
while frozen can then no longer upload or rename anything for it (Fenced), and the new owner
reads the files after the last rename the old one made. Overlapping files (left by a version
without claims, or copied in by hand) are resolved before the next offset is read from the names:
a file within earlier ones is deleted, one that starts inside them is cut (consumers.hdfs_files
`overlaps`), so each offset is in one file.

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
from consumers.errors import FatalError, Fenced, StoreRejected, TransientError
from consumers.hdfs_claims import claim, guest_folder
from consumers.hdfs_files import (
    CommittedFile,
    Layout,
    Overlap,
    Run,
    aside_name,
    next_offset,
    overlaps,
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


def describe_tp(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


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
        guest: str | None = None,
    ) -> None:
        self.root = safe_root(root)
        # A guest (the DLQ replay) writes past offsets beside the owner: it claims nothing.
        self.guest = safe_segment(guest) if guest is not None else None
        self.staging: dict[TopicPartition, str] = {}  # where each opened partition's uploads go
        self.config = config or current()
        self._layouts: dict[str, Layout] = {}
        self.fs = client or WebHdfs(settings.webhdfs_url, settings.user, datanode_url)
        self.next: dict[TopicPartition, int] = {}
        self._staged: list[tuple[TopicPartition, Run, str, str]] = []
        self._schemas: dict[TopicPartition, Any] = {}  # Parquet schema per partition of the batch
        self._dirs: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=uploads, thread_name_prefix="hdfs-upload")

    def start(self) -> None:
        self._mkdirs(self.root)
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
        try:
            return self._open(partitions, committed, topic_ids)
        except (FileNotFoundError, FileExistsError) as exc:
            # Another consumer claimed or resolved the partition at the same moment: open again.
            raise TransientError(f"opening {', '.join(map(describe_tp, partitions))}: {exc}") from exc

    def _open(
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
            for tp in tps:
                # Claiming deletes what earlier owners staged: never committed, never counted.
                base = temp_dir(self.root, topic, tp.partition)
                guest = self.guest
                self.staging[tp] = guest_folder(self.fs, base, guest) if guest else claim(self.fs, tp, base)
            if self.guest is not None:
                continue  # a guest writes what the caller says, and leaves the committed files be
            listed = self.committed_files(topic)
            for tp in tps:
                new_id = (topic_ids or {}).get(tp.topic)
                if new_id is not None and self._topic_id(tp, new_id):
                    start[tp] = self.next[tp] = 0
                    continue
                files = self._resolve_overlaps(
                    tp, {path: f for path, f in listed.items() if f.partition == tp.partition}
                ).values()
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
                    len(files),
                    from_files,
                    committed.get(tp),
                )
        return start

    def _resolve_overlaps(
        self, tp: TopicPartition, files: dict[str, CommittedFile]
    ) -> dict[str, CommittedFile]:
        """Make the partition's files account for each offset once (see `overlaps`); the files after."""
        for fix in overlaps(files):
            del files[fix.path]
            if fix.keep_from is None:
                self.fs.delete(fix.path)
                log.warning("OVERLAP: %s holds only offsets earlier files hold: deleted", fix.path)
                continue
            target = self._cut(tp, fix)
            files[target] = CommittedFile(
                tp.topic, tp.partition, fix.keep_from, fix.file.last, fix.file.format
            )
        return files

    def _cut(self, tp: TopicPartition, fix: Overlap) -> str:
        """Rewrite the file without the offsets below keep_from, under the name saying so; then
        delete the original (a crash in between leaves both: the next open deletes the original)."""
        assert fix.keep_from is not None
        content = self.fs.read(fix.path)
        if fix.file.format == "parquet":
            kept = parquet.without_offsets_below(content, fix.keep_from)
        else:
            lines = content.splitlines(keepends=True)
            kept = b"".join(line for line in lines if json.loads(line)["kafka"]["offset"] >= fix.keep_from)
        temp = f"{self.staging[tp]}/{uuid.uuid4().hex}.{fix.file.format}"
        self._create(tp, temp, kept)
        target = fix.trimmed_path()
        if not self.fs.rename(temp, target):
            raise TransientError(f"rename {temp} -> {target} failed")
        self.fs.delete(fix.path)
        log.warning(
            "OVERLAP: %s shares offsets %d-%d with earlier files: rewritten as %s",
            fix.path,
            fix.file.first,
            fix.keep_from - 1,
            target,
        )
        return target

    def _create(self, tp: TopicPartition, temp: str, content: bytes) -> None:
        """Upload into the partition's staging folder, never re-creating it: gone means fenced."""
        try:
            self.fs.create(temp, content, create_parent=self.guest is not None)
        except FileNotFoundError as exc:
            raise Fenced([tp], f"{describe_tp(tp)}: the staging folder is gone: {exc}") from exc

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
                if tp not in self.staging:
                    raise Fenced([tp], f"{describe_tp(tp)} is not open in the HDFS sink")
                committed = CommittedFile(tp.topic, tp.partition, run.first, run.last, layout.format)
                temp = f"{self.staging[tp]}/{uuid.uuid4().hex}.{layout.format}"
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
        self._create(tp, temp, content)

    def flush(self, batch: Batch) -> None:
        for tp, run, temp, final in self._staged:
            parent = posixpath.dirname(final)
            if parent not in self._dirs:
                self._mkdirs(parent)
                self._dirs.add(parent)
            if not self.fs.rename(temp, final):
                if self.fs.exists(final):
                    # The same offsets are committed already (our own rename whose answer got
                    # lost): same partition and offsets, same records. Keep one.
                    log.warning("%s exists already; dropping the duplicate temp file", final)
                    self.fs.delete(temp)
                elif self.fs.exists(temp):
                    self._dirs.discard(parent)  # someone deleted the day folder: make it again
                    raise TransientError(f"rename {temp} -> {final} failed: {parent} is gone")
                else:
                    # Another consumer claimed the partition and deleted our staging folder: it
                    # resumes after our last rename. The runs renamed so far are committed.
                    raise Fenced([tp], f"{describe_tp(tp)}: {temp} is gone, the partition was claimed")
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

    def _mkdirs(self, path: str) -> None:
        try:
            self.fs.mkdirs(path)
        except FileExistsError as exc:
            raise FatalError(f"cannot make the folder {path}: a file is in the way ({exc})") from exc

    def close(self, partitions: Collection[TopicPartition]) -> None:
        self.abort()
        for tp in partitions:
            self.next.pop(tp, None)
            self.staging.pop(tp, None)

    def stop(self) -> None:
        self.abort()
        self._pool.shutdown(wait=True)
        self.fs.close()
