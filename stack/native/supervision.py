"""The native stack's processes run under supervisord (PyPI `supervisor`, in its own virtualenv).

supervisord is every service's parent: it reaps them (a killed process cannot pass for alive as a
zombie), restarts one that exits unexpectedly (with backoff while it keeps failing at start-up),
and logs every exit and restart in .stack/logs/supervisord.log. Exits a program declares final
(a consumer's circuit breaker, for one) are left stopped.

Standard library only: the stack script talks to supervisord over XML-RPC on a Unix socket.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shlex
import socket
import subprocess
import tempfile
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPERVISOR_VERSION = "4.3.0"

# supervisord's process states (supervisor.states.ProcessStates)
RUNNING_STATES = {"STARTING", "RUNNING", "BACKOFF"}


@dataclass
class Program:
    """One long-running process, as a supervisord [program:] section."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to supervisord's (no secrets: in the conf)
    user: str | None = None
    final_exits: tuple[int, ...] = (0,)  # exit codes that mean "stopped on purpose": not restarted
    start_s: int = 3  # running this long counts as started; a quicker exit is retried with backoff
    start_retries: int = 10  # backoff 1 s, 2 s, ... 10 s: about a minute of failed starts, then FATAL
    stop_signal: str = "TERM"
    stop_wait_s: int = 30

    def section(self, cwd: Path, logs: Path) -> str:
        lines = [
            f"[program:{self.name}]",
            "command=" + shlex.join(self.argv).replace("%", "%%"),
            f"directory={cwd}",
            "autostart=false",
            "autorestart=unexpected",
            "exitcodes=" + ",".join(map(str, self.final_exits)),
            f"startsecs={self.start_s}",
            f"startretries={self.start_retries}",
            f"stopsignal={self.stop_signal}",
            f"stopwaitsecs={self.stop_wait_s}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (self.name + '.log')}",
            "stdout_logfile_maxbytes=100MB",
            "stdout_logfile_backups=2",
        ]
        if self.user:
            lines.append(f"user={self.user}")
        if self.env:
            lines.append("environment=" + ",".join(f'{k}="{v}"' for k, v in sorted(self.env.items())))
        return "\n".join(lines) + "\n"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__()
        self._path, self._timeout = path, timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self._path, self._timeout)


class Supervisor:
    """supervisord for one checkout: its conf, socket and log live under .stack/."""

    def __init__(self, root: Path, venv: Path, run: Path, logs: Path) -> None:
        self.root, self.venv, self.run, self.logs = root, venv, run, logs
        self.conf = run / "supervisord.conf"
        self.socket = run / "supervisor.sock"
        if len(str(self.socket)) > 100:  # a Unix socket's path has at most 107 bytes
            digest = hashlib.sha256(str(run).encode()).hexdigest()[:12]
            self.socket = Path(tempfile.gettempdir()) / f"crawlstore-supervisor-{digest}.sock"
        self.log = logs / "supervisord.log"

    # ------------------------------------------------------------------ install and start

    def installed(self) -> bool:
        stamp = self.venv / ".version"
        return stamp.exists() and stamp.read_text() == SUPERVISOR_VERSION

    def mark_installed(self) -> None:
        (self.venv / ".version").write_text(SUPERVISOR_VERSION)

    def write_conf(self, programs: list[Program]) -> None:
        head = f"""; written by stack/nativestack.py on every `up`: edit the Program list there, not this file
[unix_http_server]
file={self.socket}
chmod=0700

[supervisord]
logfile={self.log}
logfile_maxbytes=20MB
logfile_backups=2
pidfile={self.run / "supervisord.pid"}
directory={self.root}
childlogdir={self.logs}
{"user=root" if os.geteuid() == 0 else ""}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.socket}

"""
        self.conf.write_text(head + "\n".join(p.section(self.root, self.logs) for p in programs))

    def ensure(self, programs: list[Program], env: dict[str, str]) -> None:
        """Start supervisord with `env` as every program's environment, or apply a changed conf."""
        self.write_conf(programs)
        if self.alive():
            self.apply_conf()
            return
        self.socket.unlink(missing_ok=True)
        subprocess.run(
            [str(self.venv / "bin" / "supervisord"), "-c", str(self.conf)],
            env=env,
            cwd=self.root,
            check=True,
        )
        deadline = time.monotonic() + 30
        while not self.alive():
            if time.monotonic() > deadline:
                raise RuntimeError(f"supervisord did not answer on {self.socket}; see {self.log}")
            time.sleep(0.2)

    def apply_conf(self) -> None:
        """What `supervisorctl update` does: add new programs, replace changed ones, drop removed."""
        [[added, changed, removed]] = self.rpc().supervisor.reloadConfig()
        for name in changed + removed:
            self.rpc().supervisor.stopProcessGroup(name)
            self.rpc().supervisor.removeProcessGroup(name)
        for name in changed + added:
            self.rpc().supervisor.addProcessGroup(name)

    # ------------------------------------------------------------------ talking to it

    def rpc(self, timeout: float = 120.0) -> Any:
        return xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(self.socket, timeout))

    def alive(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self.rpc(timeout=3).supervisor.getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error):
            return False

    def info(self) -> dict[str, dict[str, Any]]:
        """Each program's state as supervisord reports it (empty when supervisord is not running)."""
        if not self.alive():
            return {}
        return {p["name"]: p for p in self.rpc().supervisor.getAllProcessInfo()}

    def start(self, name: str) -> None:
        state = self.info().get(name, {}).get("statename")
        if state not in RUNNING_STATES:
            self.rpc().supervisor.startProcess(name, False)

    def stop(self, name: str) -> bool:
        """Stop one program (and its process group); False if it was not running."""
        if self.info().get(name, {}).get("statename") not in RUNNING_STATES:
            return False
        try:
            self.rpc().supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as exc:  # NOT_RUNNING: it exited meanwhile
            if "NOT_RUNNING" not in exc.faultString:
                raise
        return True

    def shutdown(self) -> None:
        if self.alive():
            self.rpc().supervisor.shutdown()
            deadline = time.monotonic() + 60
            while self.socket.exists() and time.monotonic() < deadline:
                time.sleep(0.2)

    def restarts(self) -> dict[str, int]:
        """Unexpected exits per program since supervisord started (each one was followed by a restart)."""
        if not self.log.exists():
            return {}
        text = self.log.read_text(errors="replace")
        text = text[text.rfind("supervisord started with pid") :]
        counts: dict[str, int] = {}
        for name in re.findall(r" exited: (\S+) \(.*not expected\)", text):
            counts[name] = counts.get(name, 0) + 1
        return counts
