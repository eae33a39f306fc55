"""Names and paths of the HDFS sink's files (pure functions, no I/O).

Committed file: `<day directory>/<topic>+<partition>+<first>+<last>.<jsonl|parquet>`, as
Confluent's HDFS connector names them: the name says which offsets the file accounts for, so
the next offset of a partition is recovered from the names alone. The day directory comes from
the topic's layout (crawlstore.config `topics/`): `<root>/<topic>/dt=<YYYY-MM-DD>` unless a
family says otherwise, e.g. `/raw/{name}/{date}`. Temp files live under
`<root>/+tmp/<topic>/<partition>/` until they are renamed into place.

Only validated segments make it into a path: topic names are checked against Kafka's own
alphabet (and `.`/`..` refused), layouts are checked when the configuration loads, everything
else is a number or a date we formatted. Field values of the items never become path segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's topic alphabet and length limit
ROOT = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
FILE_NAME = re.compile(
    r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d+)\+(?P<last>\d+)"
    r"\.(?P<format>jsonl|parquet)$"
)
TMP = "+tmp"
DAY = r"\d{4}-\d{2}-\d{2}"


class UnsafePath(ValueError):
    """A value that would not stay inside its directory."""


def safe_segment(value: str) -> str:
    """`value` if it is one harmless path segment, else UnsafePath."""
    if not SEGMENT.fullmatch(value) or value in {".", ".."}:
        raise UnsafePath(f"not a safe path segment: {value!r}")
    return value


def safe_root(root: str) -> str:
    if not ROOT.fullmatch(root) or any(part in {".", ".."} for part in root.split("/")):
        raise UnsafePath(f"not a safe absolute directory: {root!r}")
    return root


@dataclass(frozen=True, order=True)
class CommittedFile:
    """A committed file's identity: its topic, partition and the offsets it accounts for."""

    topic: str
    partition: int
    first: int
    last: int
    format: str = "jsonl"

    def __post_init__(self) -> None:
        safe_segment(self.topic)
        if self.partition < 0 or self.first < 0 or self.last < self.first:
            raise ValueError(f"bad offsets in {self!r}")

    @property
    def name(self) -> str:
        return f"{self.topic}+{self.partition}+{self.first:010d}+{self.last:010d}.{self.format}"


def parse_file_name(name: str) -> CommittedFile | None:
    """The file a committed name describes, or None for anything else (foreign files are ignored)."""
    m = FILE_NAME.fullmatch(name)
    if not m:
        return None
    try:
        return CommittedFile(m["topic"], int(m["partition"]), int(m["first"]), int(m["last"]), m["format"])
    except ValueError:
        return None


@dataclass(frozen=True)
class Layout:
    """Where one topic's committed files go: `<base>/<day segment>/<file>`, in one format.

    `template` is a validated layout path (crawlstore.config.HdfsLayout): `{date}` sits in its
    last segment, so every day directory of the topic is a child of `base`.
    """

    topic: str
    base: str
    day_before: str
    day_after: str
    format: str = "jsonl"

    @classmethod
    def of(cls, template: str, root: str, topic: str, name: str, format: str = "jsonl") -> Layout:
        values = {"root": safe_root(root), "topic": safe_segment(topic), "name": safe_segment(name)}
        head, day = template.rsplit("/", 1)
        base = head.format(**values)
        safe_root(base)
        before, after = day.format(**values, date="\0").split("\0")
        return cls(topic, base, before, after, format)

    def day_dir(self, day: date) -> str:
        return f"{self.base}/{self.day_before}{day.isoformat()}{self.day_after}"

    def is_day_dir(self, segment: str) -> bool:
        return re.fullmatch(re.escape(self.day_before) + DAY + re.escape(self.day_after), segment) is not None

    def final_path(self, day: date, committed: CommittedFile) -> str:
        return f"{self.day_dir(day)}/{committed.name}"


def temp_dir(root: str, topic: str, partition: int) -> str:
    return f"{safe_root(root)}/{TMP}/{safe_segment(topic)}/{int(partition)}"


@dataclass(frozen=True)
class Overlap:
    """A committed file that shares offsets with an earlier one: delete it (keep_from None, all its
    offsets are in earlier files) or rewrite it as keep_from..last under that name."""

    path: str
    file: CommittedFile
    keep_from: int | None

    def trimmed_path(self) -> str:
        assert self.keep_from is not None
        f = self.file
        name = CommittedFile(f.topic, f.partition, self.keep_from, f.last, f.format).name
        return f"{self.path.rsplit('/', 1)[0]}/{name}"


def overlaps(files: Mapping[str, CommittedFile]) -> list[Overlap]:
    """What makes one partition's committed files account for each offset once.

    Files are taken by first offset: one whose range lies within what the files before it cover
    is deleted, one that starts inside it is cut to start after it. A cut whose result exists
    already (an earlier resolution stopped between writing it and deleting the original) deletes
    the original instead. Overlapping files read the same log, so either copy of an offset is it.
    """
    fixes: list[Overlap] = []
    ranges = {(f.first, f.last) for f in files.values()}
    covered = -1
    for path, f in sorted(files.items(), key=lambda pf: (pf[1].first, pf[1].last, pf[0])):
        if f.last <= covered:
            fixes.append(Overlap(path, f, None))
            continue
        if f.first <= covered:
            if (covered + 1, f.last) in ranges:
                fixes.append(Overlap(path, f, None))
                continue
            fixes.append(Overlap(path, f, covered + 1))
        covered = f.last
    return fixes


def topic_id_path(root: str, topic: str, partition: int) -> str:
    """Where the id of the topic a partition's files were written from is kept."""
    return f"{safe_root(root)}/+topics/{safe_segment(topic)}/{int(partition)}"


def aside_name(path: str, old_topic_id: str) -> str:
    """A committed file of a deleted topic's log, renamed so that it no longer names a position."""
    stem, dot, fmt = path.rpartition(".")
    return f"{stem}.old-{safe_segment(old_topic_id)[:8]}{dot}{fmt}"


def next_offset(files: Iterable[CommittedFile], topic: str, partition: int) -> int | None:
    """The offset after the last one any committed file of the partition accounts for."""
    lasts = [f.last for f in files if f.topic == topic and f.partition == partition]
    return max(lasts) + 1 if lasts else None


@dataclass
class Run:
    """Consecutive records of one partition with the same day: one file."""

    day: date
    first: int
    last: int
    lines: list[Any] = field(default_factory=list)  # JSON lines (bytes) or Parquet rows


def split_runs(entries: Sequence[tuple[int, date, Any]], span_first: int, span_last: int) -> list[Run]:
    """Cut a partition's records (offset, day, line or row) into files of one day each.

    The files' offset ranges are contiguous and together cover span_first..span_last, the offsets
    the batch consumed, dead-lettered ones included: renaming the files in order, a crash
    leaves a prefix, and "last offset + 1" of the newest name is exactly where to resume.
    """
    runs: list[Run] = []
    for offset, day, line in sorted(entries, key=lambda e: e[0]):
        if runs and runs[-1].day == day:
            runs[-1].lines.append(line)
            runs[-1].last = offset
            continue
        if runs:
            runs[-1].last = offset - 1
        runs.append(Run(day, span_first if not runs else offset, offset, [line]))
    if runs:
        runs[-1].last = span_last
    return runs
