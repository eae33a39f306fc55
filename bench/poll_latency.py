"""How soon a polled reading is queryable: measurement time to PostgreSQL row and OpenSearch document.

Not a test: a measurement on the native stack with its running consumers. Polls the demo sensor
API as the `demo_sensors_live` source does (every 10 s, each poll validated and published at
once) for --seconds, while a watcher asks OpenSearch every 0.25 s which of the window's readings
it can find. Then prints, per store, the distribution of (queryable - measured_at): PostgreSQL
from the row's `landed_at`, OpenSearch from when the watcher first found the document.

    set -a; . .stack/env; set +a
    .venv/bin/python bench/poll_latency.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import requests

from consumers.opensearch import index_name
from consumers.settings import ConsumerSettings
from crawlstore import pipeline
from crawlstore.crawl.poll import PollState
from crawlstore.publish import connection_producer  # noqa: F401 (its Airflow import before the clock starts)
from crawlstore.settings import OpenSearchSettings, PostgresSettings
from demo.site import readings

SOURCE = "demo_sensors_live"


def distribution(name: str, seconds: list[float], expected: int) -> None:
    if not seconds:
        print(f"{name:<11} none of {expected} found")
        return
    q = statistics.quantiles(seconds, n=100) if len(seconds) > 1 else seconds * 99
    print(
        f"{name:<11} {len(seconds)}/{expected} readings   min {min(seconds):5.2f} s   p50 {q[49]:5.2f} s   "
        f"p90 {q[89]:5.2f} s   max {max(seconds):5.2f} s   within 15 s: {sum(s <= 15 for s in seconds)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120, help="how long to poll")
    args = parser.parse_args()
    os.environ["CRAWLSTORE_DATA_DIR"] = data = tempfile.mkdtemp(prefix="poll-bench-")
    start = datetime.now(UTC).replace(microsecond=0)
    (Path(data) / SOURCE).mkdir()
    PollState(Path(data) / SOURCE / "poll_state.json").save(start)
    index = index_name(ConsumerSettings().opensearch_index_prefix, "reading")
    os_url = OpenSearchSettings().url
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            query = {"query": {"range": {"measured_at": {"gte": start.isoformat()}}}, "_source": False}
            hits = requests.post(f"{os_url}/{index}/_search?size=10000", json=query, timeout=10).json()
            now = time.time()
            for hit in hits.get("hits", {}).get("hits", []):
                seen.setdefault(hit["_id"], now)
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    totals = pipeline.poll(SOURCE, "bench_poll_latency", duration_s=args.seconds)
    until = datetime.fromisoformat(totals["until"])
    valid = {r.label: r.slot for r in readings(start, until) if not r.invalid}
    time.sleep(5)  # the last poll's records: the consumers' batch wait and OpenSearch's refresh
    done.set()
    watcher.join()
    with psycopg2.connect(**PostgresSettings().connect_kwargs()) as conn, conn.cursor() as cur:
        cur.execute("SELECT reading_id, landed_at FROM readings WHERE reading_id = ANY(%s)", (sorted(valid),))
        landed = dict(cur.fetchall())
    conn.close()
    print(
        f"\npolled {totals['polls']} time(s) over {args.seconds:.0f} s: window {start:%H:%M:%S} .. "
        f"{until:%H:%M:%S}, {totals['items']} reading(s), {totals['published']} valid published"
    )
    print("time from a reading's measurement to being queryable:")
    distribution(
        "PostgreSQL", [(landed[k] - valid[k]).total_seconds() for k in valid if k in landed], len(valid)
    )
    distribution("OpenSearch", [seen[k] - valid[k].timestamp() for k in valid if k in seen], len(valid))


if __name__ == "__main__":
    main()
