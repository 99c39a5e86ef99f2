"""Flows run against a real Prefect API: one temporary server for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
