"""The API's reader: it follows the lake as parts land, and never opens the catalog file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from deployments import paging
from deployments.reader import LakeReader
from tasks.lake.store import rows_frame, write_part
from tasks.lake.tables import TABLES


def test_reader_sees_new_parts_and_refuses_a_missing_lake(tmp_path: Path, tiny) -> None:
    lake = tiny.make(tmp_path / "lake", costs=False)
    reader = LakeReader(lake, check_every=0.0)
    with reader.connection() as con:
        assert paging.objects_page(con)["total"] == 9
    extra = {
        "object_id": "late", "uri": "/data/late.txt", "sample_id": "late", "modality": "text",
        "media_type": "text/plain", "size_bytes": 3, "discovered_at": tiny.T2, "status": "landed",
        "flow_run_id": "run-3", "landed_at": tiny.T2,
    }  # fmt: skip
    write_part(lake, "objects", rows_frame([extra], TABLES["objects"].schema), "run-3")
    with reader.connection() as con:
        assert paging.objects_page(con)["total"] == 10

    # Only Parquet parts are read, never the catalog file the pipeline rewrites.
    (lake / "braid.duckdb").write_bytes(b"not a database")
    with reader.connection() as con:
        assert paging.objects_page(con)["total"] == 10
    held = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if _link(fd)}
    assert str((lake / "braid.duckdb").resolve()) not in held

    shutil.rmtree(lake)
    assert not reader.ready()
    with pytest.raises(FileNotFoundError, match="no lake at"), reader.connection():
        pass


def _link(fd: str) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False
    return True


def test_reader_checks_for_new_parts_at_most_every_interval(tmp_path: Path, tiny) -> None:
    lake = tiny.make(tmp_path / "lake", costs=False)
    reader = LakeReader(lake, check_every=3600)
    with reader.connection() as con:
        assert paging.objects_page(con)["total"] == 9
    late = rows_frame([{"object_id": "late", "landed_at": tiny.T2}], TABLES["objects"].schema)
    write_part(lake, "objects", late, "run-3")
    with reader.connection() as con:  # the snapshot is reused within the interval
        assert paging.objects_page(con)["total"] == 9
    reader.check_every = 0.0
    with reader.connection() as con:
        assert paging.objects_page(con)["total"] == 10
