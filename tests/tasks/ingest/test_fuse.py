"""Fusion: one unit vector per sample, a slot per modality, and a mask of what is present."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from tasks.common import MODALITIES
from tasks.ingest.fuse import fuse_from_lake, fuse_samples, load_sample_embeddings
from tasks.lake import store as lake
from tasks.lake.tables import FUSED, MEMBERS, TABLES, feature_table
from tasks.media.identity import ModelSet, SlotModel

SLOT_DIMS = {"image": 3, "text": 4, "audio": 2, "video": 3, "timeseries": 2}
MODEL_SET = ModelSet(
    tuple(SlotModel(m, f"model-{m}", "rev", 1, d, f"key-{m}") for m, d in SLOT_DIMS.items()),
    "set-1",
)


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
    frame = embeddings(rows)
    prints = {s: f"fp-{s}" for s in frame["sample_id"].unique()}
    fused = fuse_samples(frame, MODEL_SET, prints, "run-1")
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
    assert (s1["model_set"], s1["input_fingerprint"]) == ("set-1", "fp-s1")
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


def test_embedding_of_another_length_is_kept_for_the_suite_to_fail() -> None:
    # 5 floats in a 3-float slot: fusion does not hide it; the fused suite fails the row.
    row = fuse([("s", "image", "i", [1, 0, 0, 0, 0]), ("s", "text", "t", [1, 0, 0, 0])])["s"]
    assert row["modalities"] == ["image", "text"]
    assert len(row["image_embedding"]) == 5


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
    fused = fuse_samples(embeddings([]), MODEL_SET, {}, "run-1")
    assert fused.height == 0
    assert fused.schema == pl.Schema(FUSED)


def test_embeddings_are_loaded_through_members_under_the_sets_model_keys(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    rows = [
        ("image", "i1", "key-image", [1.0, 0.0, 0.0]),
        ("image", "i2", "old-key", [0.0, 1.0]),  # landed by a model no longer configured
        ("text", "t1", "key-text", [0.0, 1.0, 0.0, 0.0]),
        ("text", "t2", "key-text", [1.0, 0.0, 0.0, 0.0]),
        ("audio", "a3", "key-audio", [1.0, 0.0]),
    ]
    for modality, object_id, model_key, vector in rows:
        table = feature_table(modality)
        frame = lake.rows_frame(
            [{"object_id": object_id, "model_key": model_key, "embedding": vector,
              "embedding_dim": len(vector), "landed_at": now}],
            TABLES[table].schema,
        )  # fmt: skip
        lake.write_part(tmp_path, table, frame, object_id)
    # t1 is one file's bytes in two samples: a member of both.
    members = [("s1/i1.jpg", "s1", "i1"), ("s1/i2.jpg", "s1", "i2"), ("s1/t.txt", "s1", "t1"),
               ("s2/t.txt", "s2", "t1"), ("s2/u.txt", "s2", "t2"), ("s3/a.wav", "s3", "a3")]  # fmt: skip
    lake.write_part(
        tmp_path,
        "members",
        lake.rows_frame(
            [{"uri": u, "sample_id": s, "object_id": o, "landed_at": now} for u, s, o in members],
            MEMBERS,
        ),
        "members",
    )

    with duckdb.connect() as con:
        lake.create_views(con, tmp_path, TABLES)
        loaded = load_sample_embeddings(con, ["s1", "s2"], MODEL_SET)
        prints = {"s1": "a", "s2": "b", "s3": "c"}
        # In steps of one sample (what bounds a large run's memory): the same rows.
        stepped = fuse_from_lake(con, prints, MODEL_SET, "run-2", step=1)
        whole = fuse_from_lake(con, prints, MODEL_SET, "run-2", step=100)

    assert loaded.select("sample_id", "modality", "object_id").rows() == [
        ("s1", "image", "i1"),
        ("s1", "text", "t1"),
        ("s2", "text", "t1"),
        ("s2", "text", "t2"),
    ]
    fused = fuse_samples(loaded, MODEL_SET, {"s1": "a", "s2": "b"}, "run-2")
    assert fused["modalities"].to_list() == [["image", "text"], ["text"]]
    assert stepped.drop("landed_at").equals(whole.drop("landed_at"))
    assert stepped["sample_id"].to_list() == ["s1", "s2", "s3"]
    assert (
        stepped.filter(pl.col("sample_id") != "s3")
        .drop("landed_at", "input_fingerprint")
        .equals(fused.drop("landed_at", "input_fingerprint"))
    )
