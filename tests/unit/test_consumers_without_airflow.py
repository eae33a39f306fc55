"""The consumers (and the DLQ replay) run without Airflow: no module under consumers/ imports it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]

# Imports each module in turn in a fresh interpreter and names the first that pulls Airflow in.
PROBE = """
import importlib, json, sys
found = []
for name in sys.argv[1:]:
    importlib.import_module(name)
    if any(m == "airflow" or m.startswith("airflow.") for m in sys.modules):
        found.append(name)
        break
print(json.dumps({"imported": len(sys.argv) - 1, "airflow_by": found}))
"""


def consumer_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "consumers").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_no_consumer_module_imports_airflow() -> None:
    modules = consumer_modules()
    assert {"consumers.runtime", "consumers.replay.run", "consumers.replay.__main__"} <= set(modules)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"imported": len(modules), "airflow_by": []}


def test_the_probe_sees_airflow_when_a_module_imports_it() -> None:
    """The check above can fail: the Airflow hook of the publish task is caught."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "crawlstore.producer", "crawlstore.publish"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["airflow_by"] == ["crawlstore.publish"]
