"""The native stack's own commands: `up` on a running stack changes nothing; `down` stops everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = [sys.executable, str(ROOT / "stack" / "nativestack.py")]
SUPERVISORD_CONF = ROOT / ".stack" / "run" / "supervisord.conf"
SUPERVISORCTL = ROOT / ".stack" / "supervisor" / "bin" / "supervisorctl"
SERVICES = ("postgres", "kafka", "opensearch", "hdfs", "airflow", "demo-site", "kafka-ui", "consumers")

pytestmark = [pytest.mark.integration, pytest.mark.stack_lifecycle]


def stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STACK, *args], capture_output=True, text=True, timeout=600, check=False)


def pids() -> dict[str, int]:
    """Every supervised program's PID (0 when not running), as supervisord reports it."""
    listing = subprocess.run(
        [str(SUPERVISORCTL), "-c", str(SUPERVISORD_CONF), "pid", "all"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return dict(enumerate(map(int, listing)))


def status_states() -> dict[str, str]:
    out = stack("status").stdout.splitlines()[1:]
    return {line.split()[0]: line.split()[1] for line in out}


def test_up_twice_changes_nothing_and_down_stops_everything(stack_env: dict[str, str]) -> None:
    before = pids()
    again = stack("up")
    assert again.returncode == 0, again.stderr
    for service in SERVICES:
        assert f"{service}: already running" in again.stdout
    assert "created" not in again.stdout  # topics all existed
    assert 0 not in before.values() and len(before) == 14, before
    assert pids() == before

    try:
        down = stack("down")
        assert down.returncode == 0, down.stderr
        status = stack("status")
        assert status.returncode == 3
        assert status_states() == dict.fromkeys(SERVICES, "stopped")
        assert not (ROOT / ".stack" / "run" / "supervisor.sock").exists()  # supervisord is gone too
        leftovers = subprocess.run(
            ["pgrep", "-f", f"{ROOT}/.stack/(lib|supervisor|kafka-ui)|{ROOT}/.venv/bin/(airflow|python -m)"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert leftovers == []
    finally:
        restored = stack("up")
    assert restored.returncode == 0, restored.stderr
    assert status_states() == dict.fromkeys(SERVICES, "ready")
