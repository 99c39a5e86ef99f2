"""The incremental engine on a real Prefect API and real DuckDB: model changes, crashes at
every stage boundary, shared bytes, two runs on one lake, staging left by crashed runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from lakes import run, table

from deployments.cli import main
from tasks.common import Models
from tasks.lake import store
from tasks.lake.models import model_sets
from tasks.lake.tables import TABLES
from tasks.media.identity import resolve_model_set

pytestmark = pytest.mark.integration


def test_a_rerun_plans_nothing_and_writes_nothing(source: Path, clean_lake: Path) -> None:
    files = sorted(p for p in clean_lake.rglob("*.parquet"))
    again = run(source, clean_lake)
    assert (again["new"], again["samples_fused"]) == (0, 0)
    assert again["known"] == 11  # 10 objects and the empty file, all filed
    assert sorted(p for p in clean_lake.rglob("*.parquet")) == files


def test_a_model_change_recomputes_only_its_modalities_and_keeps_fused_consistent(
    source: Path,
    clean_lake: Path,
    tmp_path: Path,
    tiny_image_model: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(clean_lake, lake)
    changed = run(source, lake, image_model=tiny_image_model)
    assert {m: c["landed"] for m, c in changed["modalities"].items()} == {"image": 2, "video": 2}
    assert changed["samples_fused"] == 2
    new_set = resolve_model_set(Models(image=tiny_image_model))
    assert changed["model_set"] == new_set.key
    with duckdb.connect(str(lake / store.CATALOG_FILE), read_only=True) as con:
        # Old and new image rows side by side, queryable by model.
        per_model = con.sql(
            "SELECT model_id, count(*), any_value(embedding_dim) FROM image_features GROUP BY 1 "
            "ORDER BY 1"
        ).fetchall()
        assert sorted(per_model) == sorted(
            [("braid/handcrafted-image-v1", 2, 32), (tiny_image_model, 2, 48)]
        )
        # fused: the current set only, one FLOAT[d] column, cosine works.
        dim = new_set.fused_dim
        types = dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE fused)").fetchall())
        assert types["embedding"] == f"FLOAT[{dim}]"
        assert types["image_embedding"] == "FLOAT[48]"
        rows = con.sql(
            "SELECT sample_id, model_set, has_image, has_video, "
            "array_cosine_similarity(embedding, embedding) FROM fused ORDER BY 1"
        ).fetchall()
        assert [r[1:4] for r in rows] == [(new_set.key, True, True)] * 2
        assert all(r[4] == pytest.approx(1.0, abs=1e-5) for r in rows)
        # The old set's rows stay in fused_all.
        sets = con.sql("SELECT model_set, count(*) FROM fused_all GROUP BY 1 ORDER BY 2").fetchall()
        assert len(sets) == 2 and all(n == 2 for _, n in sets)
    # Back to the first models: nothing to compute, the first set is current again.
    back = run(source, lake)
    assert (back["new"], back["samples_fused"]) == (0, 0)
    assert_same_lake_table(lake, clean_lake, "fused")

    # braid models: both sets, the current one first; --prune removes the other one's rows.
    listed = model_sets(lake)
    assert listed["model_set"].unique(maintain_order=True).to_list() == [
        back["model_set"],
        new_set.key,
    ]
    image = listed.filter(pl.col("modality") == "image").select(
        "model_set", "feature_rows", "fused_rows"
    )
    assert image.rows() == [(back["model_set"], 2, 2), (new_set.key, 2, 2)]
    assert main(["models", "--lake", str(lake), "--prune"]) == 0
    assert "would prune" in capsys.readouterr().out
    assert table(lake, "fused_all").height == 4  # a dry run removes nothing
    assert main(["models", "--lake", str(lake), "--prune", "--yes"]) == 0
    assert "pruned rows" in capsys.readouterr().out
    assert table(lake, "fused_all").height == 2
    with duckdb.connect(str(lake / store.CATALOG_FILE), read_only=True) as con:
        assert con.sql("SELECT DISTINCT model_id FROM image_features").fetchall() == [
            ("braid/handcrafted-image-v1",)
        ]
    assert run(source, lake)["new"] == 0  # the kept set is whole


def assert_same_lake_table(lake: Path, expected: Path, name: str) -> None:
    got, want = table(lake, name), table(expected, name)
    assert got.height == want.height
    assert got["sample_id"].to_list() == want["sample_id"].to_list()
    assert got["model_set"].to_list() == want["model_set"].to_list()


def test_the_same_bytes_in_two_samples_fill_a_slot_in_both(source: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    first, second = sorted(p for p in source.iterdir() if p.name != "_bad")
    shutil.copytree(first, shared / "a")
    shutil.copytree(second, shared / "b")
    caption = next((shared / "a").glob("*.txt"))
    for old in (shared / "b").glob("*.txt"):
        old.unlink()
    shutil.copy(caption, shared / "b" / "same-caption.txt")
    lake = tmp_path / "lake"
    summary = run(shared, lake)
    assert summary["duplicates"] == 1
    with store.connect(lake, TABLES) as con:
        rows = con.sql(
            "SELECT sample_id, has_text, text_embedding FROM fused ORDER BY sample_id"
        ).fetchall()
        texts = con.execute("SELECT count(*) FROM text_features").fetchone()
    assert [(s, has) for s, has, _ in rows] == [("a", True), ("b", True)]
    np.testing.assert_allclose(rows[0][2], rows[1][2])
    assert texts == (1,)  # extracted once


def test_two_runs_at_once_on_one_lake_do_the_work_once(source: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    command = [sys.executable, "-m", "deployments.cli", "run", str(source), "--lake", str(lake),
               "--inline-max-objects", "100"]  # fmt: skip
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    assert any("is being written by run" in out for out in outputs), outputs
    with duckdb.connect() as con:
        for name in ("objects", "text_features", "fused"):
            files = store.sql_paths(store.parts(lake, name))
            raw = con.execute(f"SELECT count(*) FROM read_parquet([{files}])").fetchone()
            view = con.execute(
                f"SELECT count(DISTINCT {TABLES[name].key[0]}) FROM read_parquet([{files}])"
            ).fetchone()
            assert raw == view, name  # no row written twice


def test_staging_left_by_a_crashed_run_is_removed(source: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    left = lake / "_staging" / "crashed-run"
    left.mkdir(parents=True)
    (left / "local.plan.refs.parquet").write_bytes(b"half a file")
    run(source, lake)
    assert list((lake / "_staging").iterdir()) == []


def test_pending_finds_every_write_a_run_would_make(
    source: Path, clean_lake: Path, tmp_path: Path, tiny_image_model: str
) -> None:
    """`braid run` asks ``pending`` before starting Prefect, and starts no flow run when it
    finds nothing: so it must see each thing a run would write, crash repairs included."""
    from tasks.common import Limits
    from tasks.ingest.discover import discover
    from tasks.ingest.plan import pending

    lake = tmp_path / "lake"
    shutil.copytree(clean_lake, lake)
    wanted = resolve_model_set(Models())
    found = discover(str(source), set(), Limits())

    assert pending(found, str(lake), wanted).nothing
    assert pending(found, str(lake), wanted).known == 11

    fresh = pending(found, str(tmp_path / "no-lake"), wanted)
    assert fresh.extract == {m: 2 for m in ("audio", "image", "text", "timeseries", "video")}
    assert fresh.rejected == 1 and fresh.fuse == 0 and "no catalog" in fresh.reasons[0]

    other = pending(found, str(lake), resolve_model_set(Models(image=tiny_image_model)))
    assert other.extract == {"image": 2, "video": 2}  # video frames go through the image model
    assert other.reasons == ["the lake's current model set is another"]

    (source_copy := tmp_path / "source").mkdir()
    shutil.copytree(source, source_copy, dirs_exist_ok=True)
    (source_copy / "sample-0000" / "note.txt").write_text("one more caption", encoding="utf-8")
    more = pending(discover(str(source_copy), set(), Limits()), str(lake), wanted)
    assert more.extract == {"text": 1} and not more.reasons

    part = next((lake / "fused").glob("*.parquet"))  # a run that crashed before the catalog
    stamp = (lake / store.CATALOG_FILE).stat().st_mtime_ns + 1_000_000_000
    os.utime(part, ns=(stamp, stamp))
    assert pending(found, str(lake), wanted).reasons == [
        "the catalog is older than a table's parts"
    ]
    (lake / store.CATALOG_FILE).touch()
    (lake / "_staging" / "crashed-run").mkdir(parents=True)
    assert pending(found, str(lake), wanted).reasons == ["a crashed run left staging behind"]


def test_braid_run_with_nothing_to_do_starts_no_flow_run(source: Path, clean_lake: Path) -> None:
    again = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "run", str(source), "--lake", str(clean_lake)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing new or stale" in again.stdout
    assert "0 new objects, 11 already in the lake" in again.stdout
    assert "Beginning flow run" not in again.stderr + again.stdout


def test_a_rerun_with_nothing_to_do_boots_no_api_server(
    source: Path, clean_lake: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Over a lake with a catalog the check comes first, so a no-op re-run never pays for
    booting Prefect's temporary API (the server process costs about 7 CPU s)."""
    from deployments import cli, local_api

    def refuse() -> None:
        raise AssertionError("a temporary API server was started for a run with nothing to do")

    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # else no temporary API is wanted
    monkeypatch.setattr(local_api, "TemporaryApi", refuse)
    assert cli.main(["run", str(source), "--lake", str(clean_lake)]) == 0
    assert "nothing new or stale" in capsys.readouterr().out


def _photo(folder: Path, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "photo.png")


def test_a_run_frees_its_encoders_after_extraction_unless_asked_to_keep_them(
    tmp_path: Path, tiny_image_model: str
) -> None:
    from tasks.media.encoders import load_encoder

    source, lake = tmp_path / "source", tmp_path / "lake"
    _photo(source / "s0", 0)
    held = load_encoder(tiny_image_model, "image")
    first = run(source, lake, image_model=tiny_image_model)
    assert first["modalities"]["image"]["landed"] == 1
    # Freed after extraction (fusion needs no model): the next use loads it again.
    reloaded = load_encoder(tiny_image_model, "image")
    assert reloaded is not held
    _photo(source / "s1", 1)
    second = run(source, lake, image_model=tiny_image_model, keep_models=True)
    assert second["modalities"]["image"]["landed"] == 1
    assert load_encoder(tiny_image_model, "image") is reloaded  # kept for the next run
