"""`braid` as a user runs it: a real process, the embedded Prefect API, a real Dask cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BRAID = [sys.executable, "-m", "deployments.cli"]
N_SAMPLES = 8
BAD_REASONS = {
    "empty.dat": ("discover", "empty object"),
    "truncated.jpg": ("decode", "truncated"),
    "bomb.png": ("decode", "100000x100000"),
    "noise.wav": ("sniff", "unrecognised content"),
    "latin1.txt": ("sniff", "not UTF-8"),
    "nostreams.mp4": ("decode", "no video stream"),
    "image.mp3": ("sniff", "mislabelled"),
    "notes.jpg": ("sniff", "mislabelled"),
}


def braid(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)  # the embedded API, as `braid run` uses by default
    result = subprocess.run([*BRAID, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"braid {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result


def sql(query: str, lake: Path, home: Path) -> list[dict]:
    return json.loads(
        braid("sql", query, "--lake", str(lake), "--format", "json", home=home).stdout
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    home, samples, lake = root / "prefect", root / "samples", root / "lake"
    braid("samples", str(samples), "--n", str(N_SAMPLES), home=home)
    first = braid("run", str(samples), "--lake", str(lake), home=home)
    return home, samples, lake, first


@pytest.mark.integration
def test_run_lands_every_modality_and_prints_a_summary(demo) -> None:
    home, _, lake, first = demo
    assert "total" in first.stdout and "samples fused" in first.stdout
    rows = sql(
        "select modality, count(*) as n from objects where status = 'landed' group by all",
        lake,
        home,
    )
    assert {r["modality"]: r["n"] for r in rows} == {
        m: N_SAMPLES for m in ("image", "text", "audio", "video", "timeseries")
    }
    dims = sql(
        "select 'image' as t, min(len(embedding)) as lo, max(len(embedding)) as hi from image_features "
        "union all select 'text', min(len(embedding)), max(len(embedding)) from text_features "
        "union all select 'audio', min(len(embedding)), max(len(embedding)) from audio_features "
        "union all select 'fused', min(len(embedding)), max(len(embedding)) from fused",
        lake,
        home,
    )
    assert {r["t"]: (r["lo"], r["hi"]) for r in dims} == {
        "image": (32, 32), "text": (384, 384), "audio": (32, 32), "fused": (496, 496)
    }  # fmt: skip
    assert "cpu-seconds: discover" in first.stdout
    costs = sql(
        "select stage, count(distinct object_id) as objects, bool_and(cpu_s >= 0) as ok "
        "from costs group by all order by stage",
        lake,
        home,
    )
    by_stage = {r["stage"]: (r["objects"], r["ok"]) for r in costs}
    # Every object that reached extraction has a decode cost; every embedded one an embed cost.
    assert by_stage["decode"] == (5 * N_SAMPLES + 3, True)  # + truncated, bomb, no-streams
    assert by_stage["embed"] == (5 * N_SAMPLES, True)
    assert {"discover", "validate", "land", "fuse"} <= set(by_stage)
    for table in ("image_features", "text_features", "audio_features", "fused"):
        rows = sql(f"select embedding from {table}", lake, home)
        assert all(abs(np.linalg.norm(r["embedding"]) - 1) < 1e-4 for r in rows), table


@pytest.mark.integration
def test_every_bad_file_is_quarantined_with_stage_and_reason(demo) -> None:
    home, _, lake, _ = demo
    rows = sql("select uri, stage, reason from quarantine", lake, home)
    found = {Path(r["uri"]).name: (r["stage"], r["reason"]) for r in rows}
    assert set(found) == set(BAD_REASONS)
    for name, (stage, phrase) in BAD_REASONS.items():
        assert found[name][0] == stage, name
        assert phrase in found[name][1], (name, found[name][1])
        assert "\n" not in found[name][1]


@pytest.mark.integration
def test_search_finds_the_sample_whose_caption_matches(demo) -> None:
    home, _, lake, _ = demo
    caption = sql(
        "select sample_id, preview from text_features order by sample_id limit 1", lake, home
    )[0]
    result = braid(
        "search", caption["preview"], "--lake", str(lake), "-k", "3", "--format", "json", home=home
    )
    hits = json.loads(result.stdout)
    assert len(hits) == 3
    assert hits[0]["sample_id"] == caption["sample_id"]
    assert hits[0]["score"] > 0.99
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


@pytest.mark.integration
def test_rerun_lands_nothing_new(demo) -> None:
    home, samples, lake, _ = demo
    before = sql(
        "select (select count(*) from objects) o, (select count(*) from fused) f", lake, home
    )
    parts_before = sorted(p.name for p in lake.rglob("*.parquet"))
    again = braid("run", str(samples), "--lake", str(lake), home=home)
    assert f"0 new objects, {5 * N_SAMPLES + len(BAD_REASONS)} already in the lake" in again.stdout
    assert (
        sql("select (select count(*) from objects) o, (select count(*) from fused) f", lake, home)
        == before
    )
    assert sorted(p.name for p in lake.rglob("*.parquet")) == parts_before
    assert not [p for p in lake.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.integration
def test_run_failures_exit_non_zero_with_one_clear_line(tmp_path) -> None:
    missing = braid(
        "run", str(tmp_path / "nope"), "--lake", str(tmp_path / "lake"), home=tmp_path, check=False
    )
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    model = braid(
        "run",
        str(tmp_path),
        "--image-model",
        str(tmp_path / "no-model"),
        home=tmp_path,
        check=False,
    )
    assert model.returncode == 1
    assert "cannot load image model" in model.stderr and "Traceback" not in model.stderr
    bad_args = braid("run", str(tmp_path), "--batch-size", "0", home=tmp_path, check=False)
    assert bad_args.returncode == 2 and "must be at least 1" in bad_args.stderr
    bad_inline = braid(
        "run", str(tmp_path), "--inline-max-objects", "-1", home=tmp_path, check=False
    )
    assert bad_inline.returncode == 2 and "must be at least 0" in bad_inline.stderr
    no_lake = braid(
        "sql", "select 1", "--lake", str(tmp_path / "nolake"), home=tmp_path, check=False
    )
    assert no_lake.returncode == 1 and "no lake at" in no_lake.stderr
    bad_sql = braid(
        "sql",
        "select * from nowhere",
        "--lake",
        str(tmp_path / "nolake"),
        home=tmp_path,
        check=False,
    )
    assert bad_sql.returncode == 1 and "Traceback" not in bad_sql.stderr
