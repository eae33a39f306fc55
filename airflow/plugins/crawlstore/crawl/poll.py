"""Polling a JSON API source (`poll:` in its YAML): ask for what is new every few seconds.

Each poll asks for the window since the previous one up to now (less `lag_s`, for APIs that
show a record some time after its own timestamp), so consecutive windows meet exactly: the
`{data_interval_start}` / `{data_interval_end}` placeholders of the start URL get its ends.
The end of the last published window is kept in `<data dir>/<source>/poll_state.json`, so the
next run (or a retry) goes on from there; a gap longer than `window_s` is caught up in windows
of that size, one after the other. A window is saved as pending before its items are published
and as done after: a failure in between asks for exactly that window again first, and its
publish (exactly once per window, crawlstore.producer.publish_once) sends nothing twice.

Fetching uses requests (one process, no Scrapy start-up per poll); the records go through the
same extraction and normalisation as the json_api spider's, and robots.txt is obeyed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import requests

from crawlstore.crawl.extract import api_records, dig
from crawlstore.crawl.normalise import normalise
from crawlstore.crawl.settings import USER_AGENT
from crawlstore.sources import Source, resolve_start_url

log = logging.getLogger(__name__)
MAX_PAGES = 100


class PollFailed(RuntimeError):
    """The API cannot be polled: forbidden by robots.txt, or answers with something else than records."""


@dataclass
class PollState:
    """Where the previous poll ended (the start of the next window), kept on disk."""

    path: Path

    def load(self) -> datetime | None:
        """The end of the last published window; None (with a warning) when there is none to trust."""
        if not self.path.exists():
            return None
        try:
            until = datetime.fromisoformat(json.loads(self.path.read_text())["until"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("poll state %s is unreadable (%r): polling starts from now", self.path, exc)
            return None
        if until.tzinfo is None:
            log.warning("poll state %s has no time zone (%s): taken as UTC", self.path, until.isoformat())
            until = until.replace(tzinfo=UTC)
        return until

    def pending(self) -> tuple[datetime, datetime] | None:
        """A window whose publish began and did not finish (the run failed or was killed)."""
        try:
            start, end = json.loads(self.path.read_text())["pending"]
            return datetime.fromisoformat(start), datetime.fromisoformat(end)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def begin(self, start: datetime, end: datetime) -> None:
        self._write({"until": start.isoformat(), "pending": [start.isoformat(), end.isoformat()]})

    def save(self, until: datetime) -> None:
        self._write({"until": until.isoformat()})

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.path)


def windows(since: datetime, until: datetime, widest: timedelta) -> Iterator[tuple[datetime, datetime]]:
    """[since, until) cut into consecutive windows no wider than `widest`."""
    while since < until:
        end = min(until, since + widest)
        yield since, end
        since = end


@dataclass
class Poller:
    source: Source
    session: requests.Session = field(default_factory=requests.Session)
    robots: RobotFileParser | None = None

    def __post_init__(self) -> None:
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"

    def allowed(self, url: str) -> bool:
        if self.robots is None:
            parts = urlsplit(url)
            self.robots = RobotFileParser()
            response = self.session.get(f"{parts.scheme}://{parts.netloc}/robots.txt", timeout=30)
            # As Scrapy treats it: no robots.txt (4xx) allows everything.
            self.robots.parse(response.text.splitlines() if response.status_code < 400 else [])
        return self.robots.can_fetch(USER_AGENT, url)

    def fetch(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The normalised items of one window (every page of it)."""
        params = {"data_interval_start": since.isoformat(), "data_interval_end": until.isoformat()}
        url: str | None = resolve_start_url(self.source, params)
        selectors = self.source.selectors
        items: list[dict[str, Any]] = []
        pages = 0
        while url and pages < MAX_PAGES:
            if not self.allowed(url):
                raise PollFailed(f"robots.txt forbids {url}")
            response = self.session.get(url, timeout=60)
            if response.status_code != 200:
                raise PollFailed(f"{url} answered HTTP {response.status_code}: {response.text[:300]!r}")
            try:
                data = response.json()
                found, not_objects = api_records(
                    data, self.source.field_selectors, selectors.get("records", "")
                )
            except ValueError as exc:
                raise PollFailed(f"response from {url} {exc}") from exc
            if not_objects:
                log.error("%d record(s) of %s are not JSON objects", not_objects, url)
            now = datetime.now(UTC)
            items += [
                normalise(self.source.kind, raw, page_url=url, source=self.source.name, crawled_at=now)
                for raw in found
            ]
            pages += 1
            following = dig(data, selectors["next_page"]) if "next_page" in selectors else None
            url = urljoin(url, following) if isinstance(following, str) and following else None
        if url:  # never publish part of a window as if it were all of it
            raise PollFailed(
                f"window {since.isoformat()} .. {until.isoformat()} has more than {MAX_PAGES} pages"
            )
        return items


def poll(
    source: Source,
    state: PollState,
    duration_s: float,
    handle: Callable[[list[dict[str, Any]], datetime, datetime], dict[str, Any]],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Poll for `duration_s`; `handle(items, since, until)` validates and publishes each window's
    items (raising stops the run, and the same window is asked for again first by the next one)."""
    assert source.poll is not None
    every, widest = float(source.poll["every_s"]), timedelta(seconds=int(source.poll["window_s"]))
    lag = timedelta(seconds=float(source.poll.get("lag_s", 0)))
    poller = Poller(source)
    deadline = time.monotonic() + duration_s
    since = state.load() or clock() - lag - timedelta(seconds=every)
    if since > clock():
        log.warning("poll state says %s, later than now: nothing is asked for until then", since.isoformat())
    totals: dict[str, Any] = {"polls": 0, "items": 0, "valid": 0, "invalid": 0, "published": 0}
    started = time.monotonic()
    pending = state.pending()
    while True:
        tick = time.monotonic()
        due = [pending] if pending else []
        due += windows(pending[1] if pending else since, (clock() - lag).replace(microsecond=0), widest)
        pending = None
        for start, end in due:
            items = poller.fetch(start, end)
            state.begin(start, end)
            outcome = handle(items, start, end)
            state.save(end)
            since = end
            totals["polls"] += 1
            totals["items"] += len(items)
            for key in ("valid", "invalid", "published"):
                totals[key] += int(outcome.get(key, 0))
            log.info(
                "poll %d of %s: window %s .. %s, %d item(s), %d valid, %d invalid, %d published "
                "(run: %d published in %.0f s, %.0f s left)",
                totals["polls"],
                source.name,
                start.isoformat(),
                end.isoformat(),
                len(items),
                outcome.get("valid", 0),
                outcome.get("invalid", 0),
                outcome.get("published", 0),
                totals["published"],
                time.monotonic() - started,
                max(0.0, deadline - time.monotonic()),
            )
        if time.monotonic() + every > deadline:
            break
        time.sleep(max(0.0, tick + every - time.monotonic()))
    totals["until"] = since.isoformat()
    return totals
