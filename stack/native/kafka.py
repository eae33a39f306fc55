"""Kafka of the native stack: a KRaft cluster of 1 or 3 combined broker+controller nodes."""

from __future__ import annotations

import base64
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from native.base import (
    CONF,
    DATA,
    LIB,
    LOGS,
    STACK,
    STATE,
    SUPERVISOR,
    Service,
    StackError,
    group_running,
    group_stopper,
    java,
    render,
    run,
)
from native.supervision import Program


def kafka_api_versions_ok(port: int = 9092) -> bool:
    """Ask the broker for its API versions (the first request every Kafka client sends)."""
    client = b"crawlstore-stack"
    body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (7).to_bytes(4, "big")
    body += len(client).to_bytes(2, "big") + client
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(len(body).to_bytes(4, "big") + body)
            head = s.recv(10)
    except OSError:
        return False
    return len(head) >= 10 and int.from_bytes(head[4:8], "big") == 7 and head[8:10] == b"\0\0"


def kafka_java(main: str, *args: str) -> list[str]:
    log4j = f"-Dlog4j.configuration=file:{STACK / 'conf' / 'kafka-log4j.properties'}"
    return [java(), "-cp", f"{LIB / 'kafka'}/*", log4j, main, *args]


@dataclass(frozen=True)
class KafkaCluster:
    """One KRaft cluster of combined broker+controller nodes on 127.0.0.1.

    Node n listens on base_port + 2(n-1) (broker) and the port after it (controller): the stack's
    three-broker cluster on 9092/9093, 9094/9095, 9096/9097.
    """

    nodes: int
    base_port: int
    data: Path
    conf: Path

    @property
    def names(self) -> list[str]:
        return ["kafka"] if self.nodes == 1 else [f"kafka-{n}" for n in range(1, self.nodes + 1)]

    def port(self, node: int) -> int:
        return self.base_port + 2 * (node - 1)

    @property
    def ports(self) -> list[int]:
        return [p for n in range(1, self.nodes + 1) for p in (self.port(n), self.port(n) + 1)]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port(n)}" for n in range(1, self.nodes + 1))

    def data_dir(self, node: int) -> Path:
        return self.data if self.nodes == 1 else self.data / f"node-{node}"

    def props(self, node: int) -> Path:
        name = "kafka.properties" if self.nodes == 1 else f"kafka-{node}.properties"
        voters = ",".join(f"{n}@127.0.0.1:{self.port(n) + 1}" for n in range(1, self.nodes + 1))
        return render(
            "kafka.properties.in",
            self.conf / name,
            NODES=self.nodes,
            NODE=node,
            VOTERS=voters,
            PORT=self.port(node),
            CONTROLLER_PORT=self.port(node) + 1,
            DATA=self.data_dir(node),
            RF=min(self.nodes, 3),
            ISR=2 if self.nodes >= 3 else 1,
        )

    def format(self, log: Path) -> None:
        """Format each node's log directory once, all with the same cluster id."""
        id_file = self.data.parent / f"{self.data.name}.cluster-id"
        if not id_file.exists():
            old = self.data / "meta.properties"  # a 1-node cluster formatted before id_file existed
            found = (
                [ln.split("=", 1)[1] for ln in old.read_text().splitlines() if ln.startswith("cluster.id=")]
                if old.exists()
                else []
            )
            self.data.mkdir(parents=True, exist_ok=True)
            id_file.write_text(
                found[0] if found else base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
            )
        cluster_id = id_file.read_text().strip()
        for node in range(1, self.nodes + 1):
            if not (self.data_dir(node) / "meta.properties").exists():
                args = ["format", "-t", cluster_id, "-c", str(self.props(node)), "--ignore-formatted"]
                run(kafka_java("kafka.tools.StorageTool", *args), log)

    def programs(self) -> list[Program]:
        heap = ["-Xms512m", "-Xmx1g"] if self.nodes == 1 else ["-Xms256m", "-Xmx512m"]
        out = []
        for node, name in enumerate(self.names, start=1):
            argv = kafka_java("kafka.Kafka", str(self.conf / self.props(node).name))
            out.append(Program(name, [argv[0], *heap, "-XX:+UseG1GC", *argv[1:]], stop_wait_s=60))
        return out

    def ready(self) -> bool:
        return all(kafka_api_versions_ok(self.port(n)) for n in range(1, self.nodes + 1))


def kafka_brokers() -> int:
    """1 or 3, as the last `up --kafka-brokers` chose (default 1)."""
    path = STATE / "kafka-brokers"
    return int(path.read_text()) if path.exists() else 1


def stack_kafka(nodes: int | None = None) -> KafkaCluster:
    nodes = nodes or kafka_brokers()
    return KafkaCluster(nodes, 9092, DATA / ("kafka" if nodes == 1 else f"kafka-{nodes}"), CONF)


def choose_kafka_brokers(nodes: int) -> None:
    current = stack_kafka()
    if nodes == current.nodes:
        return
    if current.data.exists():
        raise StackError(
            f"the stack's Kafka has {current.nodes} broker(s) and data in {current.data}; the stores "
            f"hold offsets of that cluster. To switch to {nodes}: make clean (deletes all data), then "
            f"make up KAFKA_BROKERS={nodes}"
        )
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "kafka-brokers").write_text(str(nodes))


def kafka_start(env: dict[str, str]) -> None:
    cluster = stack_kafka()
    cluster.format(LOGS / "kafka.log")
    for name in cluster.names:
        SUPERVISOR.start(name)


def kafka_service() -> Service:
    cluster = stack_kafka()
    return Service(
        "kafka",
        cluster.ports,
        kafka_start,
        lambda e: cluster.ready(),
        group_stopper(*cluster.names),
        group_running(*cluster.names),
        log=f"{cluster.names[0]}.log",
        processes=cluster.names,
    )
