"""A run's folder stays inside its source's folder, whatever the run id (Airflow run ids are free text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from crawlstore import pipeline

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "run_id", ["..", ".", "", "../..", "a/../..", "/etc", "manual__2026-12-01T10:00:00+00:00"]
)
def test_a_run_folder_is_always_a_child_of_its_source_folder(
    run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRAWLSTORE_DATA_DIR", str(tmp_path))
    source = pipeline.get_source("demo_shop")
    folder = pipeline.run_dir(source, run_id)
    assert folder.resolve().parent == (tmp_path / source.name).resolve()
    assert folder.is_dir()
