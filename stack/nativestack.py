#!/usr/bin/env python3
"""The native stack: Kafka, PostgreSQL, OpenSearch, HDFS and Airflow as local processes on 127.0.0.1.

The same topology as docker-compose.yml for machines without a Docker engine (CI, laptops).
Standard library only, so it runs before the project's virtualenv exists. This file is the
command line; the parts are in stack/native/ (base, environment, install, postgres, kafka, services,
supervision).

    python3 stack/nativestack.py up | down | status | logs [SERVICE] [-f] | install | clean
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the native package, also when loaded by path
from native import base, environment, install, kafka, postgres, services, supervision
from native.base import (
    CONF,
    DATA,
    LOGS,
    PY,
    ROOT,
    RUN,
    STACK,
    STATE,
    SUPERVISOR,
    Service,
    StackError,
    pg_bin,
    pid_of,
    port_open,
    read_env_file,
    run,
    say,
    tail,
)
from native.supervision import RUNNING_STATES

__all__ = ["base", "environment", "install", "kafka", "postgres", "services", "supervision"]  # for tests


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


def init_pipeline(env: dict[str, str]) -> None:
    """Topics with their -dlq twins and the sql/ migrations: the same one-shot init as compose."""
    say("init: topics and sql/ migrations ...")
    run([str(PY), "-m", "crawlstore.init"], LOGS / "init.log", env={**os.environ, **env})
    print(tail(LOGS / "init.log", 12))


def cmd_up(names: list[str]) -> None:
    t0 = time.monotonic()
    install.install()
    env = environment.stack_env()
    os.environ.update({"POSTGRES_PORT": env["POSTGRES_PORT"]})
    environment.write_env_file(env)
    SUPERVISOR.ensure(services.programs(env), {**os.environ, **env})
    targets = [services.BY_NAME[n] for n in names] if names else services.SERVICES
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
    for svc in reversed(services.SERVICES):
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
    "kafka-ui": "http://127.0.0.1:8088 (topics, groups; records: /topic/NAME)",
    "consumers": "/health, /metrics on :9101 pg, :9102 os, :9103 hdfs",
}


def cmd_status(quiet_exit: bool = False) -> int:
    env = environment.stack_env() if (STATE / "secrets.env").exists() else read_env_file(STACK / "native.env")
    env.setdefault("POSTGRES_PORT", "5432")
    info, restarts = SUPERVISOR.info(), SUPERVISOR.restarts()
    down = 0
    print(f"{'service':<12}{'state':<10}{'restarts':<10}{'where':<62}log")
    for svc in services.SERVICES:
        running = svc.running() if pg_bin() or svc.name != "postgres" else False
        ready = running and svc.ready(env) if "OPENSEARCH_URL" in env else running
        state = "ready" if ready else ("starting" if running else "stopped")
        down += state != "ready"
        count = sum(restarts.get(p, 0) for p in svc.processes)
        brokers = "127.0.0.1:9092" if kafka.kafka_brokers() == 1 else "127.0.0.1:9092,:9094,:9096"
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
        else [LOGS / f"{p}.log" for p in (services.BY_NAME[name].processes or [name])]
        if name in services.BY_NAME
        else [LOGS / f"{name}.log"]
    )
    if follow:
        os.execvp("tail", ["tail", "-n", str(lines), "-F", *map(str, files)])
    for f in files:
        print(f"==> {f.relative_to(ROOT)} <==\n{tail(f, lines)}\n")


def cmd_clean() -> None:
    cmd_down()
    data, _ = postgres.pg_dirs()
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
        "services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(services.BY_NAME)} (default: all)"
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
            unknown = set(args.services) - set(services.BY_NAME)
            if unknown:
                parser.error(f"unknown service(s) {sorted(unknown)}; known: {', '.join(services.BY_NAME)}")
        if args.command == "up":
            if args.kafka_brokers:
                services.use_kafka_brokers(args.kafka_brokers)
            cmd_up(args.services)
        elif args.command == "down":
            cmd_down(args.services)
        elif args.command == "status":
            return cmd_status()
        elif args.command == "logs":
            cmd_logs(args.service, args.follow, args.lines)
        elif args.command == "install":
            install.install()
        elif args.command == "clean":
            cmd_clean()
        elif args.command == "env":
            print(environment.write_env_file(environment.stack_env()))
    except StackError as exc:
        print(f"[stack] ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
