"""PostgreSQL of the native stack: initdb, the server under supervisord, the role and databases."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from native.base import (
    DATA,
    LOGS,
    ROOT,
    RUN,
    STATE,
    SUPERVISOR,
    StackError,
    pg_bin,
    program_running,
    run,
    say,
    stop_program,
    tail,
)
from native.supervision import Program


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
