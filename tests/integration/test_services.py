"""A round trip through each real service of the native stack."""

from __future__ import annotations

import uuid

import psycopg2
import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from opensearchpy import OpenSearch

pytestmark = pytest.mark.integration


def test_kafka_round_trip_over_three_partitions(stack_env: dict[str, str]) -> None:
    servers = stack_env["KAFKA_BOOTSTRAP_SERVERS"]
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=servers)
    admin.create_topics([NewTopic(topic, 3, 1)])
    try:
        producer = KafkaProducer(bootstrap_servers=servers, acks="all")
        sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(60)}
        for key, value in sent.items():
            producer.send(topic, key=key, value=value, headers=[("h", b"1")])
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=servers,
            group_id=f"test-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=10_000,
        )
        received = {}
        partitions = set()
        for message in consumer:
            received[message.key] = message.value
            partitions.add(message.partition)
            assert message.headers == [("h", b"1")]
            if len(received) == len(sent):
                break
        consumer.close()
        assert received == sent
        assert partitions == {0, 1, 2}
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_pipeline_topics_exist_with_their_dlq_twins(stack_env: dict[str, str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"])
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics()}
    finally:
        admin.close()
    for topic in ("crawl.products", "crawl.readings"):
        assert described.get(topic) == 3
        assert described.get(f"{topic}-dlq") == 1
        assert described.get(f"{topic}-dlq-parking") == 1


def _pg(stack_env: dict[str, str]) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host=stack_env["POSTGRES_HOST"],
        port=stack_env.get("POSTGRES_PORT", "5432"),
        dbname=stack_env["POSTGRES_DB"],
        user=stack_env["POSTGRES_USER"],
        password=stack_env["POSTGRES_PASSWORD"],
    )


def test_postgres_transaction_commits_and_rolls_back(stack_env: dict[str, str]) -> None:
    table = f"test_tx_{uuid.uuid4().hex[:8]}"
    conn = _pg(stack_env)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
            cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "kept"))
        with pytest.raises(psycopg2.errors.UniqueViolation), conn, conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (2, "rolled back"))
            cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, "duplicate"))
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, v FROM {table} ORDER BY id")
            assert cur.fetchall() == [(1, "kept")]
    finally:
        with conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()


def test_postgres_migrations_applied(stack_env: dict[str, str]) -> None:
    with _pg(stack_env) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM schema_migrations")
        assert "001_pipeline_tables" in {row[0] for row in cur.fetchall()}
        cur.execute("SELECT to_regclass('products'), to_regclass('readings'), to_regclass('kafka_offsets')")
        assert all(cur.fetchone())


def test_opensearch_index_and_search(stack_env: dict[str, str]) -> None:
    client = OpenSearch(stack_env["OPENSEARCH_URL"])
    index = f"test-roundtrip-{uuid.uuid4().hex[:8]}"
    client.indices.create(index=index, body={"settings": {"number_of_replicas": 0}})
    try:
        client.index(index=index, id="p-1", body={"name": "Walnut desk lamp", "price": 19.99})
        client.index(index=index, id="p-2", body={"name": "Steel chair", "price": 49.0})
        client.indices.refresh(index=index)
        hits = client.search(index=index, body={"query": {"match": {"name": "lamp"}}})["hits"]["hits"]
        assert [h["_id"] for h in hits] == ["p-1"]
        assert hits[0]["_source"]["price"] == 19.99
    finally:
        client.indices.delete(index=index)


def test_webhdfs_write_and_read_back(stack_env: dict[str, str]) -> None:
    base = f"{stack_env['WEBHDFS_URL']}/webhdfs/v1/tmp/test-{uuid.uuid4().hex[:8]}"
    user = {"user.name": stack_env["HDFS_USER"]}
    body = "line one\nzweite Zeile ü\n세 번째 줄\n".encode()
    # WebHDFS answers CREATE with a redirect to the DataNode, which takes the bytes.
    r = requests.put(
        f"{base}/file.txt",
        params={"op": "CREATE", "overwrite": "true", **user},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 307
    assert requests.put(r.headers["Location"], data=body, timeout=10).status_code == 201
    try:
        read = requests.get(f"{base}/file.txt", params={"op": "OPEN", **user}, timeout=10)
        assert read.status_code == 200
        assert read.content == body
        listing = requests.get(base, params={"op": "LISTSTATUS", **user}, timeout=10).json()
        entries = listing["FileStatuses"]["FileStatus"]
        assert [(e["pathSuffix"], e["length"]) for e in entries] == [("file.txt", len(body))]
    finally:
        requests.delete(base, params={"op": "DELETE", "recursive": "true", **user}, timeout=10)


def test_airflow_api_answers_with_a_token(stack_env: dict[str, str]) -> None:
    api = stack_env["AIRFLOW_API_URL"]
    token = requests.post(
        f"{api}/auth/token",
        json={
            "username": stack_env.get("AIRFLOW_ADMIN_USER", "admin"),
            "password": stack_env["AIRFLOW_ADMIN_PASSWORD"],
        },
        timeout=10,
    )
    assert token.status_code in (200, 201), token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    health = requests.get(f"{api}/api/v2/monitor/health", timeout=10).json()
    assert health["scheduler"]["status"] == "healthy"
    dags = requests.get(f"{api}/api/v2/dags", headers=headers, timeout=10)
    assert dags.status_code == 200
    errors = requests.get(f"{api}/api/v2/importErrors", headers=headers, timeout=10).json()
    assert errors["import_errors"] == [], errors
