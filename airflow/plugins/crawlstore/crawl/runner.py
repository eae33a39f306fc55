"""Run a crawl as a child process and report what it did.

Scrapy runs on Twisted's reactor, which cannot be restarted inside a long-lived process such
as an Airflow worker, so every crawl gets its own interpreter (Scrapy's "practices" advice).
Standard library only: importing this stays cheap for the DAG tasks.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import crawlstore
from crawlstore.sources import Source, resolve_start_url, with_start_url

logger = logging.getLogger(__name__)

# The child closes itself at the deadline; this long more for it to report before it is killed.
GRACE_S = 30.0
EXIT_FAILED = 3


class CrawlFailed(RuntimeError):
    """The crawl produced nothing usable: site unreachable, HTTP error, no items, timeout..."""

    def __init__(self, source: str, reason: str, message: str) -> None:
        super().__init__(f"crawl of {source} failed ({reason}): {message}")
        self.source = source
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class CrawlResult:
    """A finished crawl: the JSON Lines file and what it took to make it."""

    source: str
    output: Path
    item_count: int
    pages: int
    requests: int
    errors: int
    robots_forbidden: int
    item_pages_failed: int
    duration_s: float
    stats: Mapping[str, Any] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.item_count / self.duration_s if self.duration_s > 0 else 0.0


def partial_path(output: Path, pid: int) -> Path:
    """Where the child with `pid` writes before renaming to `output` (same directory)."""
    return output.with_name(f".{output.name}.{pid}.part")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Airflow puts the plugins folder on sys.path itself; a child interpreter needs it spelled out.
    package_root = str(Path(crawlstore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _relay_log(stream: IO[str], source: str, tail: deque[str]) -> None:
    """Pass the child's log lines on to this process's logging, keeping the last few."""
    for raw in stream:
        line = raw.rstrip("\n")
        tail.append(line)
        if " ERROR: " in line or " CRITICAL: " in line:
            level = logging.ERROR
        elif " WARNING: " in line:
            level = logging.WARNING
        else:
            level = logging.INFO
        logger.log(level, "[%s] %s", source, line)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (Scrapy closes gracefully), then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _summary(lines: Iterable[str]) -> dict[str, Any] | None:
    for line in reversed(list(lines)):
        if line.strip():
            try:
                data = json.loads(line)
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def crawl_command(
    source: Source,
    output: Path,
    *,
    max_pages: int | None = None,
    timeout_s: float = 600,
    settings: Mapping[str, Any] | None = None,
) -> list[str]:
    """The child's command line (`source` with its start URL resolved)."""
    cmd = [
        sys.executable,
        "-m",
        "crawlstore.crawl",
        source.name,
        "--output",
        str(output),
        "--source-json",
        source.to_json(),
        "--timeout",
        str(timeout_s),
    ]
    if max_pages is not None:
        cmd += ["--max-pages", str(max_pages)]
    for name, value in (settings or {}).items():
        cmd += ["-s", f"{name}={json.dumps(value)}"]
    return cmd


def run_crawl(
    source: Source,
    output: Path,
    *,
    max_pages: int | None = None,
    timeout_s: float = 600,
    params: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> CrawlResult:
    """Crawl `source` into `output` (JSON Lines) in a child process; CrawlFailed if it fails.

    `params` fill the start URL's lower-case placeholders (e.g. `data_interval_end`); upper-case
    ones come from the environment. `settings` override Scrapy settings for this run.
    `output` appears only when the crawl succeeded: the child writes a temporary file next to
    it and renames it at the end.
    """
    output = Path(output).resolve()
    try:
        resolved = with_start_url(source, resolve_start_url(source, params))
    except ValueError as exc:
        raise CrawlFailed(source.name, "config", str(exc)) from None
    if max_pages is not None and max_pages < 1:
        raise CrawlFailed(source.name, "config", f"max_pages must be at least 1, not {max_pages}")
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = crawl_command(resolved, output, max_pages=max_pages, timeout_s=timeout_s, settings=settings)
    logger.info("crawling %s (%s) into %s, max_pages=%s", source.name, resolved.start_url, output, max_pages)

    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=30)
    out_lines: list[str] = []
    readers = [
        threading.Thread(target=_relay_log, args=(proc.stderr, source.name, tail), daemon=True),
        threading.Thread(target=lambda: out_lines.extend(proc.stdout or ()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        proc.wait(timeout=timeout_s + GRACE_S)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise CrawlFailed(
            source.name, "timeout", f"no result within {timeout_s + GRACE_S:g} s; the crawl was killed"
        ) from None
    finally:
        if proc.poll() is None:  # interrupted here (e.g. the task was killed): don't orphan it
            _stop(proc)
        for reader in readers:
            reader.join(timeout=10)
        partial_path(output, proc.pid).unlink(missing_ok=True)

    summary = _summary(out_lines)
    if summary is None:
        last = "\n".join(tail) or "(no output)"
        raise CrawlFailed(
            source.name,
            "crashed",
            f"the crawl process exited with code {proc.returncode} "
            f"without a result; its last log lines:\n{last}",
        )
    if not summary.get("ok"):
        raise CrawlFailed(source.name, str(summary.get("reason")), str(summary.get("error")))
    result = CrawlResult(
        source=source.name,
        output=output,
        item_count=int(summary["item_count"]),
        pages=int(summary["pages"]),
        requests=int(summary["requests"]),
        errors=int(summary["errors"]),
        robots_forbidden=int(summary["robots_forbidden"]),
        item_pages_failed=int(summary["item_pages_failed"]),
        duration_s=float(summary["duration_s"]),
        stats=summary.get("stats", {}),
    )
    if result.errors or result.item_pages_failed:
        logger.warning(
            "crawl of %s logged %d error(s); %d item page(s) failed",
            source.name,
            result.errors,
            result.item_pages_failed,
        )
    logger.info(
        "crawled %d item(s) from %s: %d response(s) in %.1f s (%.0f items/s)",
        result.item_count,
        source.name,
        result.pages,
        result.duration_s,
        result.items_per_s,
    )
    return result
