#!/usr/bin/env python3
"""The native stack: Kafka, PostgreSQL, OpenSearch, HDFS and Airflow as local processes on 127.0.0.1.

The same topology as docker-compose.yml for machines without a Docker engine (CI, laptops).
Standard library only, so it runs before the project's virtualenv exists.

    python3 stack/nativestack.py up | down | status | logs [SERVICE] [-f] | install | clean
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import shlex
import shutil
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, also when loaded by path
from supervision import RUNNING_STATES, SUPERVISOR_VERSION, Program, Supervisor

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "stack"
STATE = ROOT / ".stack"
LIB, LOGS, RUN, DATA, CONF = (STATE / d for d in ("lib", "logs", "run", "data", "conf"))
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
SUPERVISOR = Supervisor(ROOT, STATE / "supervisor", RUN, LOGS)
UV_VERSION = "0.13.9"
APT_PACKAGES = ["postgresql", "docker-compose", "kcat"]
HADOOP_OPENS = [
    f"--add-opens=java.base/{p}=ALL-UNNAMED"
    for p in (
        *("java.io", "java.lang", "java.lang.reflect", "java.math", "java.net", "java.text", "java.util"),
        *("java.util.concurrent", "java.util.zip", "sun.security.util", "sun.security.x509", "sun.net.util"),
    )
]


def say(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


class StackError(RuntimeError):
    """A service could not be installed or started; the message names it and its log."""


# --------------------------------------------------------------------------- environment


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    if path.exists():
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key] = shlex.split(value)[0] if value else ""
    return env


def ensure_secrets() -> dict[str, str]:
    """Generate the stack's passwords and keys once; they never leave .stack/ (mode 0600)."""
    path = STATE / "secrets.env"
    current = read_env_file(path)
    wanted: dict[str, Callable[[], str]] = {
        "POSTGRES_PASSWORD": lambda: secrets.token_hex(16),
        "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_hex(12),
        "AIRFLOW__API_AUTH__JWT_SECRET": lambda: secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": lambda: secrets.token_hex(32),
        "AIRFLOW__CORE__FERNET_KEY": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    changed = False
    for key, make in wanted.items():
        if key not in current:
            current[key] = make()
            changed = True
    if changed:
        STATE.mkdir(parents=True, exist_ok=True)
        write_secret(path, "".join(f"{k}={shlex.quote(v)}\n" for k, v in current.items()))
    return current


def stack_env() -> dict[str, str]:
    """The whole environment of the native stack: settings, secrets, Airflow config."""
    env = read_env_file(STACK / "native.env")
    if kafka_brokers() > 1:  # three copies of every record, two needed for a write
        env.update(KAFKA_BOOTSTRAP_SERVERS=stack_kafka().bootstrap, KAFKA_REPLICATION_FACTOR="3")
    env.update(ensure_secrets())
    pg = f"{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}"
    airflow_home = STATE / "airflow"
    env.update(
        {
            "CRAWLSTORE_DATA_DIR": str(DATA / "runs"),
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow" / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "airflow" / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{env['AIRFLOW_API_URL']}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{env['AIRFLOW_ADMIN_USER']}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}/airflow",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(LOGS / "airflow-tasks"),
            "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps(
                {"conn_type": "kafka", "extra": {"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"]}}
            ),
            "AIRFLOW_CONN_POSTGRES_DEFAULT": f"postgres://{pg}/{env['POSTGRES_DB']}",
            "AIRFLOW_CONN_OPENSEARCH_DEFAULT": json.dumps(
                {"conn_type": "http", "host": env["OPENSEARCH_URL"]}
            ),
            "AIRFLOW_CONN_WEBHDFS_DEFAULT": json.dumps(
                {"conn_type": "http", "host": env["WEBHDFS_URL"], "login": env["HDFS_USER"]}
            ),
        }
    )
    return env


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read, never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: narrow it before writing
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_env_file(env: dict[str, str]) -> Path:
    path = STATE / "env"
    lines = ["# Generated by `make up`: the native stack's environment. Load: set -a; . .stack/env; set +a"]
    lines += [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    write_secret(path, "\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- install


def run(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None, **kw: object) -> None:
    """Run a command; on failure raise with the command and the tail of its log."""
    if log is None:
        result = subprocess.run(cmd, check=False, env=env, **kw)  # type: ignore[call-overload]
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            result = subprocess.run(  # type: ignore[call-overload]
                cmd, check=False, env=env, stdout=out, stderr=subprocess.STDOUT, **kw
            )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log else ""
        raise StackError(f"command failed ({result.returncode}): {shlex.join(cmd)}\n{tail}\nlog: {log}")


def file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def install_system() -> None:
    missing = []
    if pg_bin() is None:
        missing.append("postgresql")
    if shutil.which("docker-compose") is None:
        missing.append("docker-compose")
    if shutil.which("kcat") is None:
        missing.append("kcat")
    jdk17 = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    if not jdk17.exists() and not os.environ.get("STACK_JAVA_HOME"):
        missing.append("openjdk-17-jdk-headless")  # Hadoop 3.4 needs 17, not a newer JDK
    if shutil.which("mvn") is None:
        missing.append("maven")
    if not missing:
        return
    if os.geteuid() != 0:
        raise StackError(
            f"missing system packages {missing}: install them (apt-get install {' '.join(missing)})"
        )
    say(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], LOGS / "install.log", env=env)
    run(["apt-get", "install", "-y", "-qq", *missing], LOGS / "install.log", env=env)


def java() -> str:
    for candidate in (os.environ.get("STACK_JAVA_HOME"), "/usr/lib/jvm/java-17-openjdk-amd64"):
        if candidate and Path(candidate, "bin", "java").exists():
            return str(Path(candidate, "bin", "java"))
    return shutil.which("java") or "java"


def install_jars() -> None:
    """Each JVM service gets its own lib/ from its own pom: their dependency trees clash."""
    for svc in ("kafka", "opensearch", "hdfs"):
        pom = STACK / "maven" / svc / "pom.xml"
        target = LIB / svc
        stamp = target / ".pom.sha256"
        if stamp.exists() and stamp.read_text() == file_digest(pom):
            continue
        say(f"fetching {svc} jars from Maven Central (cached in ~/.m2) ...")
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.monotonic()
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={target}",
            ],
            LOGS / "install.log",
        )
        stamp.write_text(file_digest(pom))
        say(f"  {svc}: {len(list(target.glob('*.jar')))} jars in {time.monotonic() - t0:.0f}s")


def uv() -> str:
    found = shutil.which("uv")
    if found is None:
        say(f"installing uv {UV_VERSION} (fast resolver) ...")
        run([sys.executable, "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"], LOGS / "install.log")
        found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    return found


def install_python() -> None:
    """The project's virtualenv: pinned requirements under the lock's constraints, project editable."""
    req, dev, lock = ROOT / "requirements.txt", ROOT / "requirements-dev.txt", ROOT / "constraints.txt"
    stamp = VENV / ".requirements.sha256"
    digest = file_digest(req, dev, lock, ROOT / "pyproject.toml")
    if stamp.exists() and stamp.read_text() == digest:
        return
    say("installing Python packages into .venv (requirements-dev.txt under constraints.txt) ...")
    t0 = time.monotonic()
    if not PY.exists():
        run([uv(), "venv", "-q", "-p", "3.11", str(VENV)], LOGS / "install.log")
    run(
        [uv(), "pip", "install", "-q", "-p", str(PY), "-r", str(dev), "-c", str(lock), "-e", str(ROOT)],
        LOGS / "install.log",
    )
    stamp.write_text(digest)
    say(f"  python packages ready in {time.monotonic() - t0:.0f}s")


def install_supervisor() -> None:
    """supervisord in a virtualenv of its own: a tool of the stack, not a dependency of the project."""
    if SUPERVISOR.installed():
        return
    say(f"installing supervisord {SUPERVISOR_VERSION} (the stack's process supervisor) ...")
    python = SUPERVISOR.venv / "bin" / "python"
    if not python.exists():
        run([uv(), "venv", "-q", "-p", "3.11", str(SUPERVISOR.venv)], LOGS / "install.log")
    pin = f"supervisor=={SUPERVISOR_VERSION}"
    run([uv(), "pip", "install", "-q", "-p", str(python), pin], LOGS / "install.log")
    SUPERVISOR.mark_installed()


def install() -> None:
    for d in (LIB, LOGS, RUN, DATA, CONF):
        d.mkdir(parents=True, exist_ok=True)
    install_system()
    install_jars()
    install_python()
    install_supervisor()


# --------------------------------------------------------------------------- processes


def pid_of(name: str) -> int | None:
    """The PID of one of the stack's programs while supervisord has it running."""
    info = SUPERVISOR.info().get(name)
    return info["pid"] if info and info["statename"] == "RUNNING" else None


def program_running(name: str) -> bool:
    """Running, starting, or waiting to be restarted: supervisord has it in hand."""
    info = SUPERVISOR.info().get(name)
    return info is not None and info["statename"] in RUNNING_STATES


def stop_program(name: str) -> bool:
    return SUPERVISOR.stop(name)


def http_get(url: str, timeout: float = 3.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


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


# --------------------------------------------------------------------------- services


def render(template: str, target: Path, **values: object) -> Path:
    text = string.Template((STACK / "conf" / template).read_text()).safe_substitute(STATE=STATE, **values)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


@dataclass
class Service:
    name: str
    ports: list[int]
    start: Callable[[dict[str, str]], None]
    ready: Callable[[dict[str, str]], bool]
    stop: Callable[[], bool]
    running: Callable[[], bool]
    timeout: float = 180.0
    log: str = ""
    processes: list[str] = field(default_factory=list)
    after_init: bool = False  # needs the topics and tables that init creates

    @property
    def log_file(self) -> Path:
        return LOGS / (self.log or f"{self.name}.log")


# PostgreSQL ---------------------------------------------------------------------------


def pg_as_owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def pg_superuser() -> str:
    return "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")


def pg_dirs() -> tuple[Path, Path]:
    """Data and socket dirs; as root they belong to the postgres user, who may not reach the checkout."""
    data, sock = DATA / "postgres", RUN / "postgres"
    if os.geteuid() != 0:
        return data, sock
    if data.is_symlink() or not data.exists():
        probe = subprocess.run([*pg_as_owner(), "test", "-x", str(STATE)], check=False)
        if probe.returncode != 0:  # e.g. a clone under /root: keep the cluster outside, link it in
            outside = Path("/var/lib/crawlstore-native") / hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
            outside.mkdir(parents=True, exist_ok=True)
            if not data.is_symlink():
                data.symlink_to(outside / "data")
            if not sock.is_symlink():
                sock.symlink_to(outside / "run")
            data, sock = outside / "data", outside / "run"
    return data.resolve(), sock.resolve()


def pg_ctl(*args: str) -> subprocess.CompletedProcess[bytes]:
    bindir = pg_bin()
    if bindir is None:
        raise StackError("PostgreSQL is not installed (apt-get install postgresql)")
    data, _ = pg_dirs()
    return subprocess.run(
        [*pg_as_owner(), str(bindir / "pg_ctl"), "-D", str(data), *args], capture_output=True, check=False
    )


def pg_running() -> bool:
    return program_running("postgres")


# Server settings, passed on every start (docker-compose.yml's postgres command has the same).
# PostgreSQL's defaults are sized for a small shared host: with max_wal_size=1GB the sinks' writes
# forced a checkpoint, and full-page images of every page touched after it, every 30-60 s.
PG_SETTINGS = {
    "max_connections": "200",  # Airflow, the consumers and their replicas
    "shared_buffers": "512MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
}


def pg_start(env: dict[str, str]) -> None:
    bindir = pg_bin()
    assert bindir is not None
    data, sock = pg_dirs()
    log = LOGS / "postgres.log"
    for d in (data.parent, sock):
        d.mkdir(parents=True, exist_ok=True)
    log.touch()
    if os.geteuid() == 0:
        for p in (data.parent, sock, log):
            shutil.chown(p, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        say("postgres: initdb (first start) ...")
        run(
            [
                *pg_as_owner(),
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                pg_superuser(),
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            LOGS / "postgres-init.log",
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# native stack\nlisten_addresses = '127.0.0.1'\nport = {env['POSTGRES_PORT']}\n"
                f"unix_socket_directories = '{sock}'\n"
            )
    if pg_ctl("status").returncode == 0:  # started by pg_ctl (an older version of this script)
        pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
    SUPERVISOR.start("postgres")
    deadline = time.monotonic() + 60
    while not pg_ready(env):
        if time.monotonic() > deadline or not pg_running():
            raise StackError(f"postgres failed to start; see {log}:\n{tail(log)}")
        time.sleep(0.5)
    pg_bootstrap(env)


def psql_super(sql: str, db: str = "postgres") -> str:
    bindir = pg_bin()
    assert bindir is not None
    _, sock = pg_dirs()
    out = subprocess.run(
        [
            *pg_as_owner(),
            str(bindir / "psql"),
            "-h",
            str(sock),
            "-p",
            os.environ.get("POSTGRES_PORT", "5432"),
            "-U",
            pg_superuser(),
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atq",
        ],
        input=sql,  # on stdin, not the command line: it may hold a password (visible in ps)
        capture_output=True,
        check=False,
        text=True,
    )
    if out.returncode != 0:
        raise StackError(f"postgres bootstrap failed: {out.stderr.strip()}")
    return out.stdout.strip()


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def pg_bootstrap(env: dict[str, str]) -> None:
    """The application role and its two databases (pipeline data, Airflow metadata).

    psql runs these as the superuser over the local socket, where bind parameters are not
    available; every value is quoted instead, though all come from our own settings.
    """
    user, password = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]
    role = sql_ident(user)
    if psql_super(f"SELECT 1 FROM pg_roles WHERE rolname = {sql_literal(user)}") != "1":
        psql_super(f"CREATE ROLE {role} LOGIN PASSWORD {sql_literal(password)}")
    else:
        psql_super(f"ALTER ROLE {role} PASSWORD {sql_literal(password)}")
    for db in (env["POSTGRES_DB"], "airflow"):
        if psql_super(f"SELECT 1 FROM pg_database WHERE datname = {sql_literal(db)}") != "1":
            psql_super(f"CREATE DATABASE {sql_ident(db)} OWNER {role}")


def pg_ready(env: dict[str, str]) -> bool:
    bindir = pg_bin()
    if bindir is None:
        return False
    out = subprocess.run(
        [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", env["POSTGRES_PORT"]], check=False
    )
    return out.returncode == 0


def pg_stop() -> bool:
    return stop_program("postgres")


def pg_program() -> Program:
    bindir = pg_bin()
    data, _ = pg_dirs()
    settings = [arg for name, value in PG_SETTINGS.items() for arg in ("-c", f"{name}={value}")]
    return Program(
        "postgres",
        [str(bindir / "postgres" if bindir else "postgres"), "-D", str(data), *settings],
        user="postgres" if os.geteuid() == 0 else None,
        stop_signal="INT",  # PostgreSQL's fast shutdown
        stop_wait_s=60,
    )


# Kafka ----------------------------------------------------------------------------------


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
        *consumer_programs(),
    ]


def consumers_ready(env: dict[str, str]) -> bool:
    return all(http_get(f"http://127.0.0.1:{port}/health")[0] == 200 for port in SINK_PORTS.values())


def group_stopper(*names: str) -> Callable[[], bool]:
    return lambda: any([stop_program(n) for n in names])


def group_running(*names: str) -> Callable[[], bool]:
    return lambda: all(program_running(n) for n in names)


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


# --------------------------------------------------------------------------- commands


def wait_ready(services: list[Service], env: dict[str, str]) -> None:
    t0 = time.monotonic()
    pending = {s.name: s for s in services}
    last_report = 0.0
    while pending:
        for name, svc in list(pending.items()):
            if svc.ready(env):
                say(f"{name}: ready after {time.monotonic() - t0:.0f}s")
                del pending[name]
            elif svc.processes and not svc.running():
                raise StackError(f"{name} exited during start-up; see {svc.log_file}:\n{tail(svc.log_file)}")
            elif time.monotonic() - t0 > svc.timeout:
                raise StackError(
                    f"{name} did not answer within {svc.timeout:.0f}s; see {svc.log_file}:\n"
                    f"{tail(svc.log_file)}"
                )
        if pending and time.monotonic() - last_report > 10:
            say(f"waiting for {', '.join(pending)} ({time.monotonic() - t0:.0f}s)")
            last_report = time.monotonic()
        time.sleep(1)


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log yet)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def init_pipeline(env: dict[str, str]) -> None:
    """Topics with their -dlq twins and the sql/ migrations: the same one-shot init as compose."""
    say("init: topics and sql/ migrations ...")
    run([str(PY), "-m", "crawlstore.init"], LOGS / "init.log", env={**os.environ, **env})
    print(tail(LOGS / "init.log", 12))


def cmd_up(names: list[str]) -> None:
    t0 = time.monotonic()
    install()
    env = stack_env()
    os.environ.update({"POSTGRES_PORT": env["POSTGRES_PORT"]})
    write_env_file(env)
    SUPERVISOR.ensure(programs(env), {**os.environ, **env})
    targets = [BY_NAME[n] for n in names] if names else SERVICES
    start_services([s for s in targets if not s.after_init], env)
    if not names or "kafka" in names:
        init_pipeline(env)
    start_services([s for s in targets if s.after_init], env)
    say(f"stack up in {time.monotonic() - t0:.0f}s")
    cmd_status(quiet_exit=True)


def start_services(targets: list[Service], env: dict[str, str]) -> None:
    starting: list[Service] = []
    for svc in targets:
        if svc.running() and svc.ready(env):
            say(f"{svc.name}: already running")
            continue
        busy = [p for p in svc.ports if port_open(p)]
        ours = svc.running() or any(pid_of(p) for p in svc.processes)  # e.g. NameNode up, DataNode not
        if busy and not ours:
            raise StackError(f"{svc.name}: port(s) {busy} already in use by another process")
        say(f"{svc.name}: starting (log: {svc.log_file.relative_to(ROOT)})")
        svc.start(env)
        starting.append(svc)
        if svc.name == "postgres":  # Airflow's metadata and the migrations need it first
            wait_ready([svc], env)
            starting.remove(svc)
    wait_ready(starting, env)


def cmd_down(names: list[str] | None = None) -> None:
    for svc in reversed(SERVICES):
        if (not names or svc.name in names) and svc.stop():
            say(f"{svc.name}: stopped")
    if not names:
        leftovers = [n for n, p in SUPERVISOR.info().items() if p["statename"] in RUNNING_STATES]
        SUPERVISOR.shutdown()
        if leftovers:
            raise StackError(f"still running: {leftovers}")


URLS = {
    "postgres": "postgresql://crawlstore@127.0.0.1:5432/crawlstore",
    "kafka": "{bootstrap} (kcat -b 127.0.0.1:9092 -L)",
    "opensearch": "http://127.0.0.1:9200",
    "hdfs": "hdfs://127.0.0.1:8020, WebHDFS/UI http://127.0.0.1:9870",
    "airflow": "http://127.0.0.1:8080 (user admin, password in .stack/env)",
    "demo-site": "http://127.0.0.1:8000 (shop, sensors, coins)",
    "consumers": "/health, /metrics on :9101 pg, :9102 os, :9103 hdfs",
}


def cmd_status(quiet_exit: bool = False) -> int:
    env = stack_env() if (STATE / "secrets.env").exists() else read_env_file(STACK / "native.env")
    env.setdefault("POSTGRES_PORT", "5432")
    info, restarts = SUPERVISOR.info(), SUPERVISOR.restarts()
    down = 0
    print(f"{'service':<12}{'state':<10}{'restarts':<10}{'where':<62}log")
    for svc in SERVICES:
        running = svc.running() if pg_bin() or svc.name != "postgres" else False
        ready = running and svc.ready(env) if "OPENSEARCH_URL" in env else running
        state = "ready" if ready else ("starting" if running else "stopped")
        down += state != "ready"
        count = sum(restarts.get(p, 0) for p in svc.processes)
        brokers = "127.0.0.1:9092" if kafka_brokers() == 1 else "127.0.0.1:9092,:9094,:9096"
        where = URLS[svc.name].format(bootstrap=brokers)
        print(f"{svc.name:<12}{state:<10}{count:<10}{where:<62}{svc.log_file.relative_to(ROOT)}")
        for name in svc.processes:
            note = program_note(info.get(name), restarts.get(name, 0))
            if note:
                print(f"  {name}: {note}")
    return 0 if quiet_exit or down == 0 else 3


def program_note(info: dict[str, object] | None, restarts: int, logs: Path = LOGS) -> str:
    """Why a program is not running, or how often it was restarted (empty when there is nothing to say)."""
    if info is None:
        return ""
    state, why = info["statename"], last_error(logs / f"{info['name']}.log")
    if state == "FATAL":
        return f"gave up restarting it (it kept exiting at start-up): {why}"
    if state == "EXITED" and info["exitstatus"]:
        return f"stopped by itself (exit {info['exitstatus']}), not restarted: {why}"
    if restarts:
        return f"restarted {restarts}x after unexpected exits (.stack/logs/supervisord.log)"
    return ""


def last_error(log: Path) -> str:
    """The last ERROR line of a program's log, which names the reason it stopped."""
    lines = [line for line in tail(log, 200).splitlines() if "ERROR" in line]
    return lines[-1].strip()[:300] if lines else f"see {log}"


def cmd_logs(name: str | None, follow: bool, lines: int) -> None:
    files = (
        sorted(LOGS.glob("*.log"))
        if name is None
        else [LOGS / f"{p}.log" for p in (BY_NAME[name].processes or [name])]
        if name in BY_NAME
        else [LOGS / f"{name}.log"]
    )
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", *map(str, files)])
    for f in files:
        print(f"==> {f.relative_to(ROOT)} <==\n{tail(f, lines)}\n")


def cmd_clean() -> None:
    cmd_down()
    data, _ = pg_dirs()
    for d in (DATA, RUN, CONF, STATE / "airflow", data.parent):
        shutil.rmtree(d, ignore_errors=True)
    say("data removed (jars in .stack/lib and the .venv are kept)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="install what is missing, start services, create topics, apply sql/")
    up.add_argument(
        "services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(BY_NAME)} (default: all)"
    )
    up.add_argument(
        "--kafka-brokers",
        type=int,
        choices=(1, 3),
        help="1 (default) or 3 Kafka brokers (replication 3, min.insync.replicas 2); kept for later ups",
    )
    down = sub.add_parser("down", help="stop every service of the stack (or only those named)")
    down.add_argument("services", nargs="*", metavar="SERVICE")
    sub.add_parser("status", help="show each service's state (exit 3 unless all are ready)")
    logs = sub.add_parser("logs", help="show the tail of the logs")
    logs.add_argument("service", nargs="?")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=40)
    sub.add_parser("install", help="install system packages, jars and Python packages only")
    sub.add_parser("clean", help="stop everything and delete the stack's data")
    sub.add_parser("env", help="print the stack's environment file path")
    args = parser.parse_args()
    try:
        if args.command in ("up", "down"):
            unknown = set(args.services) - set(BY_NAME)
            if unknown:
                parser.error(f"unknown service(s) {sorted(unknown)}; known: {', '.join(BY_NAME)}")
        if args.command == "up":
            if args.kafka_brokers:
                choose_kafka_brokers(args.kafka_brokers)
                SERVICES[SERVICES.index(BY_NAME["kafka"])] = BY_NAME["kafka"] = kafka_service()
            cmd_up(args.services)
        elif args.command == "down":
            cmd_down(args.services)
        elif args.command == "status":
            return cmd_status()
        elif args.command == "logs":
            cmd_logs(args.service, args.follow, args.lines)
        elif args.command == "install":
            install()
        elif args.command == "clean":
            cmd_clean()
        elif args.command == "env":
            print(write_env_file(stack_env()))
    except StackError as exc:
        print(f"[stack] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
