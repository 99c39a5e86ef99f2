"""`make soak` at 500 files: one real `braid run` over seeded mutants of every format and
the hand-made hostile cases; nothing crashes or hangs, every distinct content is in the
lake (landed or quarantined), no non-finite value lands, the tree stays under 2 GiB."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from benchmarks import soak

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return soak.soak(tmp_path_factory.mktemp("soak"), files=500, seed=0, timeout_s=600)


def test_the_soak_meets_every_target(summary: dict) -> None:
    assert summary["met"] == {k: True for k in soak.TARGETS}, summary
    assert summary["landed"] > 0 and summary["quarantined"] > 0
    assert summary["landed"] + summary["quarantined"] == (
        summary["distinct_contents"] + summary["refused_entries"]
    )


def test_the_hostile_cases_are_quarantined_with_their_reasons(summary: dict) -> None:
    assert summary["refused_entries"] == 4  # two links out, a link to a folder, a FIFO
    all_reasons = " | ".join(reason for _, reason, _ in summary["reasons"])
    for expected in (
        "a symbolic link to a path outside the source",
        "a symbolic link to a folder: not followed",
        "not a regular file: a FIFO",
        "over the limit of N (max_image_pixels)",
        "(max_csv_columns)",
        "video lasts",
        "text has N characters",
    ):
        assert expected in all_reasons, expected


def test_the_corpus_is_seeded(tmp_path: Path) -> None:
    seeds = {".txt": [b"a caption\n"], ".csv": [b"timestamp,x\n1,2\n"], ".wav": [bytes(64)]}
    for folder in ("a", "b"):
        soak.write_mutants(tmp_path / folder, seeds, 30, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*"))
    for path in files:
        if (tmp_path / "a" / path).is_file():
            assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()


def test_expected_objects_counts_contents_once_and_refuses_what_braid_must(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.txt").write_bytes(b"same")
    (tmp_path / "s" / "b.txt").write_bytes(b"same")
    (tmp_path / "s" / "c.bin").write_bytes(np.arange(9, dtype=np.uint8).tobytes())
    os.symlink("/etc/hostname", tmp_path / "s" / "out.txt")
    os.symlink(tmp_path / "s" / "a.txt", tmp_path / "s" / "in.txt")
    os.mkfifo(tmp_path / "s" / "pipe")
    contents, refused = soak.expected_objects(tmp_path)
    assert len(contents) == 2 and refused == 2
    assert stat.S_ISFIFO(os.lstat(tmp_path / "s" / "pipe").st_mode)
