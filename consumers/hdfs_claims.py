"""Which consumer may commit a partition's HDFS files: numbered claims, and the staging folders they fence.

Kafka hands a partition to another member of the group when this one misses its session timeout
(frozen, swapped out, a long flush inside the revoke callback), and the member that lost it may
go on writing for a while before it notices. Kafka fences that member's offset commits (the
group generation); nothing fences its HDFS renames. So each owner of a partition stages its files
in a folder of its own, and a new owner deletes its predecessors' folders before it reads where
the partition stands:

    <root>/+tmp/<topic>/<partition>/<n>.claim   the n-th claim of the partition (who and when)
    <root>/+tmp/<topic>/<partition>/<n>/        that owner's uploads, until renamed into place

Claiming: list; create `<max + 1>.claim` if absent (one winner per number); create its folder;
list again. A higher number there means someone claimed the partition after us (Fenced), else
every other claim and folder is deleted. The owner uploads without creating parent folders, so
once its folder is gone it can neither upload into it nor rename out of it: every committed file
was renamed before the newest owner listed the partition's files, which is what it resumes after.

A guest (a DLQ replay, which writes offsets the consumer has passed, never the partition's
frontier) stages in `guest-<name>/` and claims nothing; owners leave guest folders alone.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Iterable
from typing import Any

from kafka.structs import TopicPartition

from consumers.errors import Fenced, TransientError
from consumers.webhdfs import WebHdfs

log = logging.getLogger(__name__)

CLAIM = re.compile(r"^(\d{1,18})\.claim$")
FOLDER = re.compile(r"^(\d{1,18})$")
GUEST = "guest-"
ATTEMPTS = 20


def claim_numbers(entries: Iterable[dict[str, Any]]) -> set[int]:
    """The claim numbers present in a staging folder listing (claim files and owner folders)."""
    numbers = set()
    for entry in entries:
        name = entry.get("pathSuffix", "")
        m = CLAIM.fullmatch(name) or (FOLDER.fullmatch(name) if entry.get("type") == "DIRECTORY" else None)
        if m:
            numbers.add(int(m[1]))
    return numbers


def claim(fs: WebHdfs, tp: TopicPartition, base: str) -> str:
    """Claim the partition whose staging area is `base`; returns the folder to upload into."""
    who = f"{socket.gethostname()} pid {os.getpid()} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    for _ in range(ATTEMPTS):
        number = max(claim_numbers(fs.list(base) or []), default=0) + 1
        try:
            fs.create(f"{base}/{number}.claim", who.encode(), overwrite=False)
        except FileExistsError:
            continue  # claimed by another consumer at the same moment: count again
        folder = f"{base}/{number}"
        fs.mkdirs(folder)
        entries = fs.list(base) or []
        newer = sorted(n for n in claim_numbers(entries) if n > number)
        if newer:
            raise Fenced([tp], f"{tp.topic}[{tp.partition}]: claim {number} overtaken by claim {newer[-1]}")
        stale = [
            e["pathSuffix"]
            for e in entries
            if e["pathSuffix"] not in {str(number), f"{number}.claim"}
            and not e["pathSuffix"].startswith(GUEST)
        ]
        for name in stale:
            fs.delete(f"{base}/{name}", recursive=True)
        log.info(
            "%s[%d]: claim %d (%d earlier claim(s) and staging folder(s) removed)",
            tp.topic,
            tp.partition,
            number,
            len(stale),
        )
        return folder
    raise TransientError(f"{tp.topic}[{tp.partition}]: no claim after {ATTEMPTS} attempts (busy)")


def guest_folder(fs: WebHdfs, base: str, guest: str) -> str:
    """A guest's staging folder, emptied of what an earlier run of the same guest left behind."""
    folder = f"{base}/{GUEST}{guest}"
    fs.delete(folder, recursive=True)
    fs.mkdirs(folder)
    return folder
