"""What every part of the native stack shares: its paths, its supervisord, running commands,
probing ports and URLs, rendering config templates, and the Service record. Standard library only."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import socket
import string
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from native.supervision import RUNNING_STATES, Supervisor

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "stack"
STATE = ROOT / ".stack"
LIB, LOGS, RUN, DATA, CONF = (STATE / d for d in ("lib", "logs", "run", "data", "conf"))
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
SUPERVISOR = Supervisor(ROOT, STATE / "supervisor", RUN, LOGS)
KAFKA_UI_VENV = STATE / "kafka-ui"
CHROMIUM = "/usr/bin/chromium"  # Debian's package, driven by the browser tests


def say(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


class StackError(RuntimeError):
    """A service could not be installed or started; the message names it and its log."""


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    if path.exists():
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key] = shlex.split(value)[0] if value else ""
    return env


def write_secret(path: Path, text: str) -> None:
    """Write a file only its owner can read, never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: narrow it before writing
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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


def java() -> str:
    for candidate in (os.environ.get("STACK_JAVA_HOME"), "/usr/lib/jvm/java-17-openjdk-amd64"):
        if candidate and Path(candidate, "bin", "java").exists():
            return str(Path(candidate, "bin", "java"))
    return shutil.which("java") or "java"


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log yet)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


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


def group_stopper(*names: str) -> Callable[[], bool]:
    return lambda: any([stop_program(n) for n in names])


def group_running(*names: str) -> Callable[[], bool]:
    return lambda: all(program_running(n) for n in names)
