"""A `braid run` killed with SIGKILL at each stage boundary, then a plain run: the lake
ends equal, key for key and value for value, to one that never crashed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lakes import assert_same_lake, run

pytestmark = pytest.mark.integration

# Stage boundaries (see tasks/faults.py): extraction lands tables in modality order, so
# audio's is the first to land and video's the last; fused lands after all of them. The
# kill after extraction runs on a Dask cluster, so it also leaves a staged batch plan.
# `make test`: the last feature table landed before fusion, and fused itself; the rest
# (after extraction on a Dask cluster, the first table) in `make test-all`.
CRASH_POINTS = [pytest.param("extracted", "dask", marks=pytest.mark.slow),
                pytest.param("landed:audio", "inline", marks=pytest.mark.slow),
                ("landed:video", "inline"),
                ("landed:fused", "inline")]  # fmt: skip
EXTRACTION = {"dask": ["--inline-max-objects", "0", "--dask-workers", "1"],
              "inline": ["--inline-max-objects", "100"]}  # fmt: skip


@pytest.mark.parametrize(("point", "extraction"), CRASH_POINTS)
def test_a_run_killed_at_a_stage_boundary_is_repaired_by_the_next_plain_run(
    point: str, extraction: str, source: Path, clean_lake: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    env = {**os.environ, "BRAID_CRASH_AT": point}
    killed = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "run", str(source), "--lake", str(lake),
         *EXTRACTION[extraction]],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    staged = list((lake / "_staging").glob("*/*")) if (lake / "_staging").is_dir() else []
    assert bool(staged) == (extraction == "dask")  # what a crash mid-run leaves behind
    run(source, lake)
    assert_same_lake(lake, clean_lake)
    assert not any((lake / "_staging").glob("*"))  # removed by the next run
