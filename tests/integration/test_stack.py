"""The native stack's own commands: `up` on a running stack changes nothing; `down` stops everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = [sys.executable, str(ROOT / "stack" / "nativestack.py")]
SERVICES = ("postgres", "kafka", "opensearch", "hdfs", "airflow", "demo-site", "consumers")

pytestmark = [pytest.mark.integration, pytest.mark.stack_lifecycle]


def stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STACK, *args], capture_output=True, text=True, timeout=600, check=False)


def pids() -> dict[str, str]:
    return {p.stem: p.read_text() for p in (ROOT / ".stack" / "run").glob("*.pid")}


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
    assert pids() == before

    try:
        down = stack("down")
        assert down.returncode == 0, down.stderr
        status = stack("status")
        assert status.returncode == 3
        assert status_states() == dict.fromkeys(SERVICES, "stopped")
        assert list((ROOT / ".stack" / "run").glob("*.pid")) == []
        leftovers = subprocess.run(
            ["pgrep", "-f", f"{ROOT}/.stack/lib|{ROOT}/.venv/bin/airflow"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert leftovers == []
    finally:
        restored = stack("up")
    assert restored.returncode == 0, restored.stderr
    assert status_states() == dict.fromkeys(SERVICES, "ready")
