"""One writer per lake: a second holder waits or gives up, a dead holder's lock is stale."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from tasks.lake.lock import LOCK_FILE, LakeBusy, lake_lock, remove_stale_staging, staging_dir


def test_a_second_writer_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    with lake_lock(tmp_path, "run-a"), pytest.raises(LakeBusy, match=r"run run-a \(pid \d+"):
        with lake_lock(tmp_path, "run-b", timeout_s=0.2, on_wait=lambda _: None):
            pass


def test_a_second_writer_waits_and_says_for_whom(tmp_path: Path) -> None:
    told: list[str] = []
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with lake_lock(tmp_path, "run-a"):
            held.set()
            time.sleep(0.5)
            order.append("a done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    with lake_lock(tmp_path, "run-b", on_wait=told.append, poll_s=0.05):
        order.append("b in")
    thread.join()
    assert order == ["a done", "b in"]
    assert len(told) == 1 and "run run-a" in told[0] and "waiting" in told[0]


def _die_holding(lake: str) -> None:
    import os

    with lake_lock(lake, "crashed-run"):
        os._exit(1)  # as a SIGKILL would: no release written, the kernel drops the lock


def test_a_lock_left_by_a_dead_process_is_taken_and_named_stale(tmp_path: Path) -> None:
    process = multiprocessing.get_context("spawn").Process(target=_die_holding, args=(str(tmp_path),))
    process.start()
    process.join(30)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["run_id"] == "crashed-run"
    stale: list[str] = []
    with lake_lock(tmp_path, "next-run", timeout_s=0, on_stale=stale.append):
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["run_id"] == "next-run"
    assert len(stale) == 1 and "crashed-run" in stale[0]
    assert json.loads((tmp_path / LOCK_FILE).read_text())["released"] is True
    # Released properly: the next holder has nothing stale to report.
    with lake_lock(tmp_path, "third-run", timeout_s=0, on_stale=stale.append):
        pass
    assert len(stale) == 1


def test_stale_staging_is_removed_but_the_runs_own_is_kept(tmp_path: Path) -> None:
    for run in ("dead-1", "dead-2", "mine"):
        folder = staging_dir(tmp_path, run)
        folder.mkdir(parents=True)
        (folder / "local.plan.refs.parquet").write_bytes(b"x")
    assert sorted(remove_stale_staging(tmp_path, "mine")) == ["dead-1", "dead-2"]
    assert [p.name for p in (tmp_path / "_staging").iterdir()] == ["mine"]
    assert remove_stale_staging(tmp_path / "nowhere", "mine") == []
