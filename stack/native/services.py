"""The native stack's services besides PostgreSQL and Kafka (OpenSearch, HDFS, Airflow, the demo
site, the consumers), every supervised program, and the table of services `nativestack.py` drives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from native.base import (
    CONF,
    DATA,
    KAFKA_UI_VENV,
    LIB,
    LOGS,
    PY,
    STACK,
    SUPERVISOR,
    VENV,
    Service,
    group_running,
    group_stopper,
    http_get,
    java,
    render,
    run,
    say,
    write_secret,
)
from native.kafka import choose_kafka_brokers, kafka_service, stack_kafka
from native.postgres import pg_program, pg_ready, pg_running, pg_start, pg_stop
from native.supervision import Program

HADOOP_OPENS = [
    f"--add-opens=java.base/{p}=ALL-UNNAMED"
    for p in (
        *("java.io", "java.lang", "java.lang.reflect", "java.math", "java.net", "java.text", "java.util"),
        *("java.util.concurrent", "java.util.zip", "sun.security.util", "sun.security.x509", "sun.net.util"),
    )
]


# OpenSearch -----------------------------------------------------------------------------


def opensearch_start(env: dict[str, str]) -> None:
    render("opensearch.yml.in", DATA / "opensearch" / "node_1" / "config" / "opensearch.yml")
    SUPERVISOR.start("opensearch")


def opensearch_program() -> Program:
    runner = ["-cp", f"{LIB / 'opensearch'}/*", "org.codelibs.opensearch.runner.OpenSearchRunner"]
    args = ["-basePath", str(DATA / "opensearch"), "-numOfNode", "1", "-baseHttpPort", "9199"]
    return Program(
        "opensearch",
        [java(), "-Xms512m", "-Xmx1g", *runner, *args, "-clusterName", "crawlstore", "-printOnFailure"],
        stop_wait_s=60,
    )


def opensearch_ready(env: dict[str, str]) -> bool:
    status, _ = http_get(f"{env['OPENSEARCH_URL']}/_cluster/health?wait_for_status=yellow&timeout=1s")
    return status == 200


# HDFS -----------------------------------------------------------------------------------


def hdfs_conf() -> Path:
    conf = CONF / "hdfs"
    render("core-site.xml.in", conf / "core-site.xml")
    render("hdfs-site.xml.in", conf / "hdfs-site.xml")
    shutil.copy(STACK / "conf" / "hdfs-log4j.properties", conf / "log4j.properties")
    return conf


def hdfs_java(conf: Path, main: str) -> list[str]:
    return [
        java(),
        "-Xmx512m",
        *HADOOP_OPENS,
        "-Djava.net.preferIPv4Stack=true",
        "-cp",
        f"{conf}:{LIB / 'hdfs'}/*",
        main,
    ]


def hdfs_start(env: dict[str, str]) -> None:
    conf = hdfs_conf()
    if not (DATA / "hdfs" / "name" / "current" / "VERSION").exists():
        run(
            [
                *hdfs_java(conf, "org.apache.hadoop.hdfs.server.namenode.NameNode"),
                "-format",
                "-force",
                "-nonInteractive",
            ],
            LOGS / "hdfs-namenode.log",
        )
    SUPERVISOR.start("hdfs-namenode")
    SUPERVISOR.start("hdfs-datanode")


def hdfs_programs() -> list[Program]:
    conf = CONF / "hdfs"
    return [
        Program("hdfs-namenode", hdfs_java(conf, "org.apache.hadoop.hdfs.server.namenode.NameNode")),
        Program("hdfs-datanode", hdfs_java(conf, "org.apache.hadoop.hdfs.server.datanode.DataNode")),
    ]


def hdfs_ready(env: dict[str, str]) -> bool:
    base = f"{env['WEBHDFS_URL']}/jmx?qry=Hadoop:service=NameNode,name="
    status, body = http_get(base + "FSNamesystemState")
    if status != 200 or '"NumLiveDataNodes" : 0' in body or "NumLiveDataNodes" not in body:
        return False
    status, body = http_get(base + "NameNodeInfo")
    return status == 200 and '"Safemode" : ""' in body


# Airflow --------------------------------------------------------------------------------


def airflow_start(env: dict[str, str]) -> None:
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    write_secret(passwords, json.dumps({env["AIRFLOW_ADMIN_USER"]: env["AIRFLOW_ADMIN_PASSWORD"]}))
    airflow = str(VENV / "bin" / "airflow")
    full_env = {**os.environ, **env}
    stamp = home / ".migrated"
    version = subprocess.run(
        [str(PY), "-c", "import airflow; print(airflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not stamp.exists() or stamp.read_text() != version:
        say("airflow: migrating the metadata database (first start) ...")
        run([airflow, "db", "migrate"], LOGS / "airflow-migrate.log", env=full_env)
        stamp.write_text(version)
    for name in AIRFLOW_COMMANDS:
        SUPERVISOR.start(name)


AIRFLOW_COMMANDS = {
    "airflow-api-server": ["api-server", "--host", "127.0.0.1", "--port", "8080"],
    # The log servers bind every interface (host hard-coded); with LocalExecutor the API server
    # reads task logs from local files, so the native stack runs without them.
    "airflow-scheduler": ["scheduler", "--skip-serve-logs"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer", "--skip-serve-logs"],
}


def airflow_programs() -> list[Program]:
    # Each exits when its metadata database goes away (PostgreSQL restarted): it is restarted, with
    # backoff while the database stays away (start_retries=30: about 8 minutes).
    airflow = str(VENV / "bin" / "airflow")
    return [Program(name, [airflow, *args], start_retries=30) for name, args in AIRFLOW_COMMANDS.items()]


def airflow_ready(env: dict[str, str]) -> bool:
    status, body = http_get(f"{env['AIRFLOW_API_URL']}/api/v2/monitor/health")
    if status != 200:
        return False
    health = json.loads(body)
    return all(health.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler"))


# Demo site ------------------------------------------------------------------------------


def demo_site_start(env: dict[str, str]) -> None:
    SUPERVISOR.start("demo-site")


def demo_site_program(env: dict[str, str]) -> Program:
    port = env["DEMO_SITE_URL"].rsplit(":", 1)[1].strip("/")
    return Program("demo-site", [str(PY), "-m", "demo.site", "serve", "--host", "127.0.0.1", "--port", port])


def demo_site_ready(env: dict[str, str]) -> bool:
    return http_get(f"{env['DEMO_SITE_URL']}/robots.txt")[0] == 200


# Kafka UI -------------------------------------------------------------------------------

KAFKA_UI_PORT = 8088


def kafka_ui_program(env: dict[str, str]) -> Program:
    # kaskade served in the browser (stack/kafka-ui/serve.py), from its own virtualenv; it joins
    # no consumer group. Its sessions die with it (their own process groups, PR_SET_PDEATHSIG).
    serve = [str(KAFKA_UI_VENV / "bin" / "python"), str(STACK / "kafka-ui" / "serve.py")]
    args = ["--bootstrap-servers", env["KAFKA_BOOTSTRAP_SERVERS"], "--port", str(KAFKA_UI_PORT)]
    return Program("kafka-ui", [*serve, *args, "--host", "127.0.0.1"], stop_wait_s=15)


def kafka_ui_start(env: dict[str, str]) -> None:
    SUPERVISOR.start("kafka-ui")


def kafka_ui_ready(env: dict[str, str]) -> bool:
    return http_get(f"http://127.0.0.1:{KAFKA_UI_PORT}/")[0] == 200


# Consumers ------------------------------------------------------------------------------

SINK_PORTS = {"postgres": 9101, "opensearch": 9102, "hdfs": 9103}
CONSUMERS = [f"consumer-{sink}" for sink in SINK_PORTS]


def consumers_start(env: dict[str, str]) -> None:
    for name in CONSUMERS:
        SUPERVISOR.start(name)


def consumer_programs() -> list[Program]:
    # Exit 1 (configuration), 2 (a fatal error, such as offsets going backwards) and 3 (circuit
    # breaker open) are decisions: the consumer stays stopped and `status` shows why. A crash or a
    # kill is restarted.
    return [
        Program(
            f"consumer-{sink}",
            [str(PY), "-m", "consumers", sink],
            env={"CONSUMER_METRICS_PORT": str(port)},
            final_exits=(0, 1, 2, 3),
            stop_wait_s=40,
        )
        for sink, port in SINK_PORTS.items()
    ]


def programs(env: dict[str, str]) -> list[Program]:
    return [
        pg_program(),
        *stack_kafka().programs(),
        opensearch_program(),
        *hdfs_programs(),
        *airflow_programs(),
        demo_site_program(env),
        kafka_ui_program(env),
        *consumer_programs(),
    ]


def consumers_ready(env: dict[str, str]) -> bool:
    return all(http_get(f"http://127.0.0.1:{port}/health")[0] == 200 for port in SINK_PORTS.values())


SERVICES = [
    Service("postgres", [5432], pg_start, pg_ready, pg_stop, pg_running, 90, processes=["postgres"]),
    kafka_service(),
    Service(
        "opensearch",
        [9200, 9300],
        opensearch_start,
        opensearch_ready,
        group_stopper("opensearch"),
        group_running("opensearch"),
        processes=["opensearch"],
    ),
    Service(
        "hdfs",
        [8020, 9870, 9864, 9866, 9867],
        hdfs_start,
        hdfs_ready,
        group_stopper("hdfs-datanode", "hdfs-namenode"),
        group_running("hdfs-namenode", "hdfs-datanode"),
        log="hdfs-namenode.log",
        processes=["hdfs-namenode", "hdfs-datanode"],
    ),
    Service(
        "airflow",
        [8080],
        airflow_start,
        airflow_ready,
        group_stopper(*AIRFLOW_COMMANDS),
        group_running(*AIRFLOW_COMMANDS),
        240,
        log="airflow-api-server.log",
        processes=list(AIRFLOW_COMMANDS),
    ),
    Service(
        "demo-site",
        [8000],
        demo_site_start,
        demo_site_ready,
        group_stopper("demo-site"),
        group_running("demo-site"),
        30,
        processes=["demo-site"],
    ),
    Service(
        "kafka-ui",
        [KAFKA_UI_PORT],
        kafka_ui_start,
        kafka_ui_ready,
        group_stopper("kafka-ui"),
        group_running("kafka-ui"),
        30,
        processes=["kafka-ui"],
    ),
    Service(
        "consumers",
        list(SINK_PORTS.values()),
        consumers_start,
        consumers_ready,
        group_stopper(*CONSUMERS),
        group_running(*CONSUMERS),
        90,
        log="consumer-postgres.log",
        processes=CONSUMERS,
        after_init=True,
    ),
]
BY_NAME = {s.name: s for s in SERVICES}


def use_kafka_brokers(nodes: int) -> None:
    """Switch the stack to a Kafka of `nodes` brokers (refused with data), and its service to match."""
    choose_kafka_brokers(nodes)
    SERVICES[SERVICES.index(BY_NAME["kafka"])] = BY_NAME["kafka"] = kafka_service()
