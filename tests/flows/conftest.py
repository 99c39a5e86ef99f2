"""Flows run against a real Prefect API: one temporary server for the whole session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_api() -> Iterator[str]:
    """A session-wide Prefect test server; Dask worker processes report to it too."""
    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = url  # inherited by the local cluster's workers
        try:
            yield url
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


@pytest.fixture(scope="session")
def dask_address(prefect_api: str) -> Iterator[str]:
    """A Dask cluster shared by flow tests, passed by address as a user's existing cluster would be.

    Started after the Prefect API so its worker processes inherit PREFECT_API_URL.
    """
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def source(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two samples of every modality and one bad file, copied so tests may add to them."""
    root = tmp_path_factory.mktemp("source")
    for folder in sorted(p for p in sample_dir.iterdir() if p.is_dir() and p.name != "_bad")[:2]:
        shutil.copytree(folder, root / folder.name)
    (root / "_bad").mkdir()
    (root / "_bad" / "empty.txt").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def clean_lake(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("clean-lake")
    from lakes import run

    run(source, lake)
    return lake
