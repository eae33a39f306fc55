"""Fixtures for the consumer integration tests: the real services of the native stack.

Every service fixture waits for its service with a bounded retry and fails with a message naming
the service and the command that starts it. Tests get their own topics (`test.<uuid>` with
3 partitions plus the `-dlq` twin), consumer groups, keys and index prefixes, and clean up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import psycopg2
import pyarrow.parquet as pq
import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, UnknownTopicOrPartitionError
from kafka.structs import TopicPartition

from crawlstore.config.loader import DEFAULT_DIR
from crawlstore.items import Item, item_type
from crawlstore.messages import Record, encode_item
from crawlstore.settings import PostgresSettings
from crawlstore.topics import dlq_topic

ProductItem = item_type("product")
ReadingItem = item_type("reading")

ROOT = Path(__file__).resolve().parents[2]
# Crawl times must be recent: the message timestamp is the crawl time, and the topics' 7-day
# retention would delete records with older timestamps within minutes.
BASE_TIME = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SERVICE_WAIT_S = 90.0
T = TypeVar("T")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Outage and supervision tests stop or kill shared services: run them after every other test
    # (but before whole-stack restarts).
    items.sort(
        key=lambda i: (
            i.get_closest_marker("stack_lifecycle") is not None,
            i.module is not None
            and i.module.__name__.endswith(("test_consumers_outage", "test_supervision")),
        )
    )


def wait_for(what: str, probe: Callable[[], T], timeout_s: float, hint: str = "") -> T:
    """Call probe until it returns without raising; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            return probe()
        except Exception as exc:
            last = exc
            time.sleep(1.0)
    pytest.fail(
        f"{what} not ready after {timeout_s:.0f}s: {last!r}" + (f"\n{hint}" if hint else ""), pytrace=False
    )


def eventually(what: str, check: Callable[[], bool], timeout_s: float = 120.0, every_s: float = 0.5) -> None:
    """Wait until check() is true (bounded), failing with `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for: {what}", pytrace=False)


def _up(service: str) -> str:
    return f"start it with: python3 stack/nativestack.py up {service}"


@pytest.fixture(scope="session")
def native_stack() -> ModuleType:
    """stack/nativestack.py as a module: its programs, its supervisord, its Kafka cluster layout."""
    spec = importlib.util.spec_from_file_location("nativestack", ROOT / "stack" / "nativestack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- services


@pytest.fixture(scope="session")
def kafka_servers(stack_env: dict[str, str]) -> str:
    servers = stack_env["KAFKA_BOOTSTRAP_SERVERS"]

    def probe() -> None:
        admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
        try:
            admin.list_topics()
        finally:
            admin.close()

    wait_for(f"Kafka at {servers}", probe, SERVICE_WAIT_S, _up("kafka"))
    return servers


@pytest.fixture(scope="session")
def pg_settings(stack_env: dict[str, str]) -> PostgresSettings:
    settings = PostgresSettings()

    def probe() -> None:
        with (
            psycopg2.connect(**{**settings.connect_kwargs(), "connect_timeout": 3}) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT count(*) FROM products, readings, kafka_offsets WHERE false")
        conn.close()

    wait_for(
        f"PostgreSQL at {settings.host}:{settings.port} with the sql/ tables",
        probe,
        SERVICE_WAIT_S,
        _up("postgres") + " (it applies the sql/ migrations too)",
    )
    return settings


@pytest.fixture(scope="session")
def opensearch_url(stack_env: dict[str, str]) -> str:
    url = stack_env["OPENSEARCH_URL"].rstrip("/")

    def probe() -> None:
        r = requests.get(
            f"{url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "2s"}, timeout=5
        )
        r.raise_for_status()

    wait_for(f"OpenSearch at {url}", probe, SERVICE_WAIT_S, _up("opensearch"))
    return url


@dataclass(frozen=True)
class WebHdfs:
    url: str
    user: str

    def op(self, method: str, path: str, op: str, **params: Any) -> requests.Response:
        return requests.request(
            method,
            f"{self.url}/webhdfs/v1{path}",
            params={"op": op, "user.name": self.user, **params},
            timeout=30,
        )

    def list(self, path: str) -> list[dict[str, Any]]:
        r = self.op("GET", path, "LISTSTATUS")
        if r.status_code == 404:
            return []
        r.raise_for_status()
        statuses: list[dict[str, Any]] = r.json()["FileStatuses"]["FileStatus"]
        return statuses

    def read(self, path: str) -> bytes:
        r = requests.get(
            f"{self.url}/webhdfs/v1{path}", params={"op": "OPEN", "user.name": self.user}, timeout=60
        )
        r.raise_for_status()
        return r.content

    def delete(self, path: str) -> None:
        self.op("DELETE", path, "DELETE", recursive="true")

    def files(self, root: str, topic: str) -> dict[str, bytes]:
        """Every committed file of a topic: path -> content. A consumer may rename a file between
        the listing and the read (a re-created topic's old files go aside): then list again."""
        for _ in range(5):
            try:
                return self._files(root, topic)
            except requests.HTTPError as exc:
                if exc.response is None or exc.response.status_code != 404:
                    raise
        return self._files(root, topic)

    def _files(self, root: str, topic: str) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for day in self.list(f"{root}/{topic}"):
            if day["type"] != "DIRECTORY":
                continue
            for f in self.list(f"{root}/{topic}/{day['pathSuffix']}"):
                path = f"{root}/{topic}/{day['pathSuffix']}/{f['pathSuffix']}"
                out[path] = self.read(path)
        return out


@pytest.fixture(scope="session")
def webhdfs(stack_env: dict[str, str]) -> WebHdfs:
    hdfs = WebHdfs(stack_env["WEBHDFS_URL"].rstrip("/"), stack_env["HDFS_USER"])

    def probe() -> None:
        hdfs.op("GET", "/", "LISTSTATUS").raise_for_status()
        jmx = requests.get(
            f"{hdfs.url}/jmx", params={"qry": "Hadoop:service=NameNode,name=FSNamesystemState"}, timeout=5
        ).json()["beans"][0]
        if jmx["NumLiveDataNodes"] < 1:
            raise RuntimeError("no live DataNode")

    wait_for(f"HDFS (WebHDFS at {hdfs.url}) with a live DataNode", probe, SERVICE_WAIT_S, _up("hdfs"))
    return hdfs


# ---------------------------------------------------------------------------- topics and records


@pytest.fixture
def make_topic(kafka_servers: str) -> Iterator[Callable[..., str]]:
    """Create `test.<uuid>` (3 partitions) and its `-dlq` twin; all are deleted afterwards."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_servers)
    created: list[str] = []

    def make(name: str | None = None, partitions: int = 3, with_dlq: bool = True) -> str:
        name = name or f"test.{uuid.uuid4().hex[:12]}"
        topics = [NewTopic(name, partitions, 1)] + ([NewTopic(dlq_topic(name), 1, 1)] if with_dlq else [])
        admin.create_topics(topics)
        created.extend(t.name for t in topics)
        return name

    yield make
    for name in created:
        with contextlib.suppress(UnknownTopicOrPartitionError, KafkaError):
            admin.delete_topics([name])
    admin.close()


@pytest.fixture
def topic(make_topic: Callable[..., str]) -> str:
    return make_topic()


def product(key: str, i: int = 0, crawled_at: datetime | None = None, **fields: Any) -> ProductItem:
    values: dict[str, Any] = {
        "source": "testshop",
        "crawled_at": crawled_at or BASE_TIME + timedelta(seconds=i),
        "product_id": key,
        "name": f"Product {key}",
        "brand": "Acme",
        "category": "tools",
        "price": Decimal("19.99") + i,
        "currency": "EUR",
        "url": f"https://shop.example/p/{key}",
        "rating": 4.5,
        "review_count": i,
    }
    values.update(fields)
    return ProductItem.model_validate(values)


def reading(key: str, i: int = 0, crawled_at: datetime | None = None, **fields: Any) -> ReadingItem:
    measured = BASE_TIME - timedelta(days=1) + timedelta(minutes=i)
    values: dict[str, Any] = {
        "source": "sensors",
        "crawled_at": crawled_at or BASE_TIME + timedelta(seconds=i),
        "reading_id": key,
        "device_id": "dev-1",
        "sensor1": i * 0.5,
        "sensor2": -1.25,
        "motor1": 1e6,
        "is_fail": i % 7 == 0,
        "measured_at": measured,
    }
    values.update(fields)
    return ReadingItem.model_validate(values)


def decoded(items: list[Item], topic: str, partition: int, first: int) -> list[Any]:
    """The items as a consumer decodes them from topic[partition], at offsets first, first + 1, ..."""
    from consumers.batching import Decoded, decode

    out = []
    for offset, item in enumerate(items, start=first):
        m = encode_item(item, topic, "test-run")
        entry = decode(Record(topic, partition, offset, m.key, m.value, m.timestamp_ms, tuple(m.headers)))
        assert isinstance(entry, Decoded), entry
        out.append(entry)
    return out


def batch_of(entries: list[Any]) -> Any:
    """A consumer's batch of decoded records, for driving a sink directly."""
    from consumers.batching import Batch

    batch = Batch()
    for entry in entries:
        batch.add_item(entry, time.monotonic())
    return batch


@dataclass
class Sent:
    """What the test produced, as the consumer will see it."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int | None
    partition: int = -1
    offset: int = -1
    item: Item | None = None


@pytest.fixture
def producer(kafka_servers: str) -> Iterator[Callable[..., list[Sent]]]:
    """produce(topic, items_or_sents): send with acks=all, return what was sent with partition/offset."""
    client = KafkaProducer(
        bootstrap_servers=kafka_servers, acks="all", linger_ms=5, max_request_size=4_000_000
    )

    def produce(topic: str, records: list[Item | Sent], run_id: str = "test-run") -> list[Sent]:
        sent: list[Sent] = []
        futures = []
        for rec in records:
            if isinstance(rec, Sent):
                s = rec
            else:
                out = encode_item(rec, topic, run_id)
                s = Sent(out.key, out.value, out.headers, out.timestamp_ms, item=rec)
            futures.append(
                client.send(topic, key=s.key, value=s.value, headers=s.headers, timestamp_ms=s.timestamp_ms)
            )
            sent.append(s)
        client.flush(timeout=60)
        for s, f in zip(sent, futures, strict=True):
            meta = f.get(timeout=30)
            s.partition, s.offset = meta.partition, meta.offset
        return sent

    yield produce
    client.close()


@pytest.fixture
def read_topic(kafka_servers: str) -> Callable[[str], list[Any]]:
    """Every record currently in a topic (all partitions), e.g. a DLQ."""

    def read(name: str) -> list[Any]:
        consumer = KafkaConsumer(
            bootstrap_servers=kafka_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            parts = consumer.partitions_for_topic(name) or set()
            tps = [TopicPartition(name, p) for p in sorted(parts)]
            if not tps:
                return []
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            out: list[Any] = []
            deadline = time.monotonic() + 60
            while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    out.extend(records)
            return out
        finally:
            consumer.close()

    return read


# ---------------------------------------------------------------------------- consumer processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ConsumerProcess:
    """`python -m consumers <sink>` as a real child process, its log in a file."""

    sink: str
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    history: list[int] = field(default_factory=list)

    def start(self) -> ConsumerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "consumers", self.sink],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            r = requests.get(f"{self.url}/health", timeout=2)
            return r.status_code, r.json()
        except (requests.RequestException, ValueError):
            return 0, {}

    def metrics(self) -> dict[str, float]:
        """Prometheus samples, keyed by name plus labels as printed."""
        out: dict[str, float] = {}
        try:
            text = requests.get(f"{self.url}/metrics", timeout=2).text
        except requests.RequestException:
            return out
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def metric(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.split("{", 1)[0] == name)

    def wait_healthy(self, timeout_s: float = 90.0) -> None:
        def check() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.sink} consumer exited with {self.proc.returncode}:\n{self.log_tail()}",
                    pytrace=False,
                )
            return self.health()[0] == 200

        eventually(f"{self.sink} consumer healthy (assigned and consuming)", check, timeout_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM and wait: a graceful stop flushes, commits and exits 0."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        self.history.append(code)
        return code

    def kill(self) -> None:
        """kill -9: no flush, no commit, no goodbye."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.history.append(self.proc.wait(timeout=30))

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@pytest.fixture
def run_consumer(tmp_path: Path, stack_env: dict[str, str]) -> Iterator[Callable[..., ConsumerProcess]]:
    """Start `python -m consumers <sink>` on a test topic with a unique group; killed at teardown."""
    procs: list[ConsumerProcess] = []

    def start(
        sink: str,
        *,
        topics: str | None = None,
        pattern: str | None = None,
        group: str | None = None,
        start: bool = True,
        config_dir: Path | None = None,
        **env: Any,
    ) -> ConsumerProcess:
        port = free_port()
        settings = {
            "CONSUMER_GROUP": group or f"test-{sink}-{uuid.uuid4().hex[:8]}",
            "CONSUMER_METRICS_PORT": str(port),
            "CONSUMER_BATCH_MAX_WAIT_MS": "300",
            "CONSUMER_BATCH_IDLE_MS": "300",
            "CONSUMER_PROGRESS_INTERVAL_S": "5",
            "CONSUMER_RETRY_MAX_MS": "3000",
            "CONSUMER_METADATA_MAX_AGE_MS": "2000",
            **{
                k.upper() if k.upper().startswith("CONSUMER_") else f"CONSUMER_{k.upper()}": str(v)
                for k, v in env.items()
            },
        }
        if topics:
            settings["CONSUMER_TOPICS"] = topics
        if pattern:
            settings["CONSUMER_TOPIC_PATTERN"] = pattern
        full_env = {k: v for k, v in stack_env.items() if not k.startswith("CONSUMER_")}
        full_env.update(settings)
        full_env["PYTHONUNBUFFERED"] = "1"
        if config_dir is not None:  # item kinds and sources from another configuration folder
            full_env["CRAWLSTORE_CONFIG_DIR"] = str(config_dir)
        proc = ConsumerProcess(sink, full_env, tmp_path / f"{sink}-{len(procs)}.log", port)
        procs.append(proc)
        return proc.start() if start else proc

    yield start
    for proc in procs:
        if proc.alive():
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGKILL)
            proc.proc.wait(timeout=30)
    groups = [p.env["CONSUMER_GROUP"] for p in procs if p.sink == "postgres"]
    if groups:  # the PostgreSQL sink keeps its offsets in kafka_offsets
        with psycopg2.connect(**PostgresSettings().connect_kwargs()) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM kafka_offsets WHERE consumer_group = ANY(%s)", (groups,))
        conn.close()


# ---------------------------------------------------------------------------- stores


@pytest.fixture
def pg(pg_settings: PostgresSettings) -> Iterator[Any]:
    """A PostgreSQL connection (autocommit) for assertions."""
    conn = psycopg2.connect(**pg_settings.connect_kwargs())
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def key_prefix(pg: Any) -> Iterator[str]:
    """A unique prefix for natural ids; the rows are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    yield prefix
    with pg.cursor() as cur:
        cur.execute("DELETE FROM products WHERE product_id LIKE %s", (prefix + "%",))
        cur.execute("DELETE FROM readings WHERE reading_id LIKE %s", (prefix + "%",))


def pg_rows(conn: Any, table: str, key_prefix: str) -> dict[str, dict[str, Any]]:
    key = "product_id" if table == "products" else "reading_id"
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} WHERE {key} LIKE %s", (key_prefix + "%",))
        cols = [c.name for c in cur.description]
        return {row[0]: dict(zip(cols, row, strict=True)) for row in cur.fetchall()}


def dlq_sources(records: list[Any]) -> set[tuple[int, int]]:
    """(partition, offset) of the originals, from the DLQ context headers."""
    out = set()
    for r in records:
        h = dict(r.headers)
        out.add((int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"])))
    return out


def os_search(url: str, index: str, size: int = 10_000) -> dict[str, dict[str, Any]]:
    query = {"size": size, "version": True, "seq_no_primary_term": True, "query": {"match_all": {}}}
    requests.post(f"{url}/{index}/_refresh", timeout=30)
    r = requests.get(f"{url}/{index}/_search", json=query, timeout=60)
    if r.status_code == 503:  # an index the consumer has just created: its shard is not active yet
        requests.get(f"{url}/_cluster/health/{index}", params={"wait_for_status": "yellow"}, timeout=60)
        r = requests.get(f"{url}/{index}/_search", json=query, timeout=60)
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {h["_id"]: h for h in r.json()["hits"]["hits"]}


def os_count(url: str, index: str) -> int:
    requests.post(f"{url}/{index}/_refresh", timeout=30)
    r = requests.get(f"{url}/{index}/_count", timeout=30)
    return int(r.json()["count"]) if r.status_code == 200 else 0


def jsonl_lines(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for content in files.values() for line in content.split(b"\n") if line]


@dataclass
class Store:
    """Where one sink's test records end up: extra consumer env, and the stored products read back.

    records(): one dict per stored row/document/line with the product's fields plus `key`,
    `partition` and `offset` (HDFS keeps every line, the others one entry per key).
    """

    sink: str
    env: dict[str, str]
    records: Callable[[], list[dict[str, Any]]]
    config_dir: Path | None = None  # a configuration of its own (hdfs_parquet: the topic as Parquet)


def parquet_config(folder: Path, topic: str) -> Path:
    """A copy of the bundled configuration where `topic` (a test topic) is written as Parquet."""
    shutil.copytree(DEFAULT_DIR, folder, dirs_exist_ok=True)
    (folder / "topics").mkdir(exist_ok=True)
    family = {
        "family": "under_test",
        "topics": topic.split(".", maxsplit=1)[0] + ".*",
        "hdfs": {"format": "parquet"},
    }
    (folder / "topics" / "under_test.yaml").write_text(json.dumps(family), encoding="utf-8")
    return folder


def parquet_rows(files: dict[str, bytes]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path, content in files.items():
        assert path.endswith(".parquet"), path
        rows += pq.read_table(io.BytesIO(content)).to_pylist()
    return rows


@pytest.fixture
def make_store(
    pg_settings: PostgresSettings,
    opensearch_url: str,
    webhdfs: WebHdfs,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Store]]:
    cleanups: list[Callable[[], None]] = []

    def make(sink: str, topic: str, key_prefix: str) -> Store:
        if sink == "postgres":

            def rows() -> list[dict[str, Any]]:
                with psycopg2.connect(**pg_settings.connect_kwargs()) as conn, conn.cursor() as cur:
                    cur.execute("SELECT * FROM products WHERE product_id LIKE %s", (key_prefix + "%",))
                    cols = [c.name for c in cur.description]
                    out = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
                conn.close()
                return [
                    {
                        **r,
                        "key": r["product_id"],
                        "partition": r["kafka_partition"],
                        "offset": r["kafka_offset"],
                    }
                    for r in out
                ]

            return Store(sink, {}, rows)
        if sink == "opensearch":
            prefix = f"test-{uuid.uuid4().hex[:10]}-"

            def docs() -> list[dict[str, Any]]:
                hits = os_search(opensearch_url, f"{prefix}products")
                return [
                    {
                        **h["_source"],
                        "key": h["_id"],
                        "partition": h["_source"]["kafka"]["partition"],
                        "offset": h["_source"]["kafka"]["offset"],
                        "_version": h["_version"],
                    }
                    for h in hits.values()
                ]

            def drop() -> None:
                for kind in ("products", "readings"):
                    requests.delete(f"{opensearch_url}/{prefix}{kind}", timeout=30)
                    requests.delete(f"{opensearch_url}/_index_template/{prefix}{kind}", timeout=30)

            cleanups.append(drop)
            return Store(sink, {"CONSUMER_OPENSEARCH_INDEX_PREFIX": prefix}, docs)
        base = f"/test/{uuid.uuid4().hex[:12]}"
        parquet = sink == "hdfs_parquet"
        config = parquet_config(tmp_path_factory.mktemp("config"), topic) if parquet else None

        def lines() -> list[dict[str, Any]]:
            files = webhdfs.files(f"{base}/topics", topic)
            return [
                {
                    **line,
                    "key": line["product_id"],
                    "partition": line["kafka"]["partition"],
                    "offset": line["kafka"]["offset"],
                }
                for line in (parquet_rows(files) if parquet else jsonl_lines(files))
            ]

        cleanups.append(lambda: webhdfs.delete(base))
        return Store("hdfs", {"CONSUMER_HDFS_ROOT": f"{base}/topics"}, lines, config)

    yield make
    for cleanup in cleanups:
        cleanup()


class Kit:
    """The helpers above, handed to tests as a fixture (conftest modules are not imported by tests)."""

    product = staticmethod(product)
    reading = staticmethod(reading)
    eventually = staticmethod(eventually)
    pg_rows = staticmethod(pg_rows)
    dlq_sources = staticmethod(dlq_sources)
    os_search = staticmethod(os_search)
    os_count = staticmethod(os_count)
    jsonl_lines = staticmethod(jsonl_lines)
    parquet_rows = staticmethod(parquet_rows)
    parquet_config = staticmethod(parquet_config)
    decoded = staticmethod(decoded)
    free_port = staticmethod(free_port)
    batch_of = staticmethod(batch_of)
    Sent = Sent
    Store = Store


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
