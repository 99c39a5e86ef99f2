"""Fusion: one unit vector per sample, a slot per modality, and a mask of what is present."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from tasks import lake
from tasks.common import MODALITIES
from tasks.fuse import fuse_samples, load_sample_embeddings
from tasks.tables import FUSED, TABLES, feature_table

SLOT_DIMS = {"image": 3, "text": 4, "audio": 2, "video": 3, "timeseries": 2}
MODEL_IDS = {m: f"model-{m}" for m in MODALITIES}


def embeddings(rows: list[tuple[str, str, str, list[float]]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "sample_id": pl.String(),
            "modality": pl.String(),
            "object_id": pl.String(),
            "embedding": pl.List(pl.Float32()),
        },
        orient="row",
    )


def fuse(rows: list[tuple[str, str, str, list[float]]]) -> dict[str, dict]:
    fused = fuse_samples(embeddings(rows), SLOT_DIMS, MODEL_IDS, "run-1")
    assert fused.schema == pl.Schema(FUSED)
    return {row["sample_id"]: row for row in fused.iter_rows(named=True)}


def test_presence_flags_and_modalities_follow_the_sample() -> None:
    fused = fuse(
        [
            ("s1", "image", "i1", [1, 0, 0]),
            ("s1", "text", "t1", [0, 2, 0, 0]),
            ("s2", "audio", "a1", [3, 4]),
        ]
    )

    assert list(fused) == ["s1", "s2"]
    s1, s2 = fused["s1"], fused["s2"]
    assert s1["modalities"] == ["image", "text"]
    assert s2["modalities"] == ["audio"]
    assert [s1[f"has_{m}"] for m in MODALITIES] == [True, True, False, False, False]
    assert [s2[f"has_{m}"] for m in MODALITIES] == [False, False, True, False, False]
    assert (s1["object_ids"], s1["n_objects"]) == (["i1", "t1"], 2)
    assert s1["model_id"] == ";".join(f"{m}=model-{m}" for m in MODALITIES)
    assert s1["flow_run_id"] == "run-1"


def test_fused_vector_is_the_slots_in_order_scaled_to_unit_length() -> None:
    row = fuse(
        [
            ("s", "text", "t", [0, 2, 0, 0]),
            ("s", "image", "i", [1, 0, 0]),
        ]
    )["s"]

    vector = np.asarray(row["embedding"])
    assert row["embedding_dim"] == len(vector) == sum(SLOT_DIMS.values()) == 14
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    half = 1 / np.sqrt(2)
    expected = np.zeros(14)
    expected[0] = expected[4] = half  # first of the image slot [0:3], second of text [3:7]
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    # The per-modality columns are the unit slots; missing ones are null.
    assert row["image_embedding"] == [1, 0, 0]
    assert row["text_embedding"] == [0, 1, 0, 0]
    assert row["audio_embedding"] is None


def test_two_objects_of_one_modality_are_mean_pooled() -> None:
    row = fuse(
        [
            ("s", "image", "i1", [1, 0, 0]),
            ("s", "image", "i2", [0, 1, 0]),
        ]
    )["s"]

    half = 1 / np.sqrt(2)
    np.testing.assert_allclose(row["image_embedding"], [half, half, 0], atol=1e-6)
    np.testing.assert_allclose(row["embedding"][:3], [half, half, 0], atol=1e-6)
    assert row["modalities"] == ["image"]
    assert (row["object_ids"], row["n_objects"]) == (["i1", "i2"], 2)


def test_embedding_of_the_wrong_dimension_counts_as_missing() -> None:
    fused = fuse(
        [
            ("s", "image", "i", [1, 0, 0, 0, 0]),  # 5 floats in a 3-float slot: another model's
            ("s", "text", "t", [1, 0, 0, 0]),
            ("only-wrong", "audio", "a", [1, 0, 0]),
        ]
    )

    row = fused["s"]
    assert row["modalities"] == ["text"]
    assert row["has_image"] is False
    assert row["image_embedding"] is None
    assert row["embedding"][:3] == [0, 0, 0]
    assert np.linalg.norm(row["embedding"]) == pytest.approx(1.0, abs=1e-6)
    # A sample with nothing usable is not fused at all.
    assert "only-wrong" not in fused


def test_samples_that_share_modalities_compare_by_them() -> None:
    fused = fuse(
        [
            ("a", "image", "ai", [1, 0, 0]),
            ("a", "text", "at", [1, 0, 0, 0]),
            ("b", "image", "bi", [1, 0, 0]),
            ("b", "text", "bt", [0, 1, 0, 0]),
        ]
    )
    a, b = (np.asarray(fused[s]["embedding"]) for s in ("a", "b"))
    # Same image, orthogonal texts: the mean of 1 and 0.
    assert float(a @ b) == pytest.approx(0.5, abs=1e-6)


def test_no_embeddings_fuse_to_an_empty_table() -> None:
    fused = fuse_samples(embeddings([]), SLOT_DIMS, MODEL_IDS, "run-1")
    assert fused.height == 0
    assert fused.schema == pl.Schema(FUSED)


def test_embeddings_are_loaded_from_the_lake_for_the_configured_models(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    rows = [
        ("image", "i1", "s1", "model-image", [1.0, 0.0, 0.0]),
        ("image", "i2", "s1", "old-model", [0.0, 1.0]),  # landed by a model no longer configured
        ("text", "t1", "s1", "model-text", [0.0, 1.0, 0.0, 0.0]),
        ("text", "t2", "s2", "model-text", [1.0, 0.0, 0.0, 0.0]),
        ("audio", "a3", "s3", "model-audio", [1.0, 0.0]),
    ]
    for modality, object_id, sample_id, model_id, vector in rows:
        table = feature_table(modality)
        frame = lake.rows_frame(
            [
                {
                    "object_id": object_id,
                    "sample_id": sample_id,
                    "model_id": model_id,
                    "embedding": vector,
                    "embedding_dim": len(vector),
                    "landed_at": now,
                }
            ],
            TABLES[table].schema,
        )
        lake.write_part(tmp_path, table, frame, object_id)

    with duckdb.connect() as con:
        lake.create_views(con, tmp_path, TABLES)
        loaded = load_sample_embeddings(con, ["s1", "s2"], MODEL_IDS)

    assert loaded.select("sample_id", "modality", "object_id").rows() == [
        ("s1", "image", "i1"),
        ("s1", "text", "t1"),
        ("s2", "text", "t2"),
    ]
    fused = fuse_samples(loaded, SLOT_DIMS, MODEL_IDS, "run-2")
    assert fused["modalities"].to_list() == [["image", "text"], ["text"]]
