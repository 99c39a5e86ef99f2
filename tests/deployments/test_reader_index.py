"""The API's vector index answers searches exactly as the views do, and follows the lake as it lands."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from deployments.reader import LakeReader
from tasks.lake.store import rows_frame, write_part
from tasks.lake.tables import TABLES
from tasks.serve import serving, vectors

MODALITY_FILTERS = (None, "image", "text", "audio", "video", "timeseries")
TEXT_QUERIES = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.9], [1.0, 0.0])


def fused_row(sample: str, vector: list[float] | None, at: Any, modalities: list[str]) -> dict:
    return {
        "sample_id": sample,
        "embedding": vector,
        "embedding_dim": None if vector is None else len(vector),
        "modalities": modalities,
        **{f"has_{m}": m in modalities for m in ("image", "text", "audio", "video", "timeseries")},
        "model_set": "test-set",
        "flow_run_id": "run-3",
        "landed_at": at,
    }


def land_fused(lake: Path, rows: list[dict], part: str) -> Path:
    written = write_part(lake, "fused", rows_frame(rows, TABLES["fused"].schema), part)
    assert written is not None
    return written


def answers(con: Any, tiny: Any) -> dict[str, Any]:
    """Every search the tiny lake can answer, by the functions the API calls."""
    samples = [r[0] for r in con.execute("SELECT sample_id FROM objects").fetchall()]
    found: dict[str, Any] = {}
    for sample in sorted({*samples, "nobody"}):
        for modality in MODALITY_FILTERS:
            for k in (1, 2, 10):
                found[f"similar {sample} {modality} {k}"] = serving.similar_samples(
                    con, sample, k, modality
                )
    for query in TEXT_QUERIES:
        for modality in MODALITY_FILTERS:
            found[f"text {query} {modality}"] = serving.samples_near_text(
                con, query, tiny.TEXT_MODEL, 10, modality
            )
    return found


def view_answers(lake: Path, tiny: Any) -> dict[str, Any]:
    con = serving.open_snapshot(lake)
    try:
        assert not vectors.is_built(con)
        return answers(con, tiny)
    finally:
        con.close()


def indexed_answers(reader: LakeReader, tiny: Any) -> dict[str, Any]:
    with reader.connection(vectors=True) as con:
        assert vectors.is_built(con)
        return answers(con, tiny)


def test_the_index_answers_as_the_views_do(tiny_lake: Path, tiny) -> None:
    reader = LakeReader(tiny_lake, check_every=3600)
    indexed = indexed_answers(reader, tiny)
    assert indexed == view_answers(tiny_lake, tiny)
    assert [h["sample_id"] for h in indexed["similar s0 None 10"]] == ["s1", "s2", "s3"]
    assert [h["sample_id"] for h in indexed["text [1.0, 0.0, 0.0] None"]] == ["s0", "s3", "s2"]
    with reader.connection(vectors=True) as con:
        rows = con.execute(f"SELECT count(*) FROM {vectors.FUSED.vectors(3)}").fetchone()
        assert rows == (4,)
        (kind,) = con.execute(f"SELECT typeof(embedding) FROM {vectors.TEXT.vectors(3)}").fetchone()
        assert kind == "FLOAT[3]"
    # Without asking for vectors, no index: the views answer.
    plain = LakeReader(tiny_lake, check_every=3600)
    with plain.connection() as con:
        assert not vectors.is_built(con)
        assert serving.similar_samples(con, "s0", 3) == indexed["similar s0 None 10"]


def test_a_landed_part_is_merged_alone_and_supersedes_older_rows(tmp_path: Path, tiny) -> None:
    lake = tiny.make(tmp_path / "lake", costs=False)
    reader = LakeReader(lake, check_every=0.0)
    with reader.connection(vectors=True) as con:
        assert serving.similar_samples(con, "s0", 1)[0]["sample_id"] == "s1"
    assert reader.index.loaded["fused"][1] == 4 and len(reader.index.loaded["fused"][0]) == 2

    later = tiny.T2 + timedelta(hours=1)
    part = land_fused(
        lake,
        [
            fused_row("s1", [0.0, 0.0, 1.0], later, ["image"]),  # s1 moves away from s0
            fused_row("s9", [0.6, 0.8, 0.0], later, ["text"]),  # a new sample
            fused_row("s2", [1.0, 0.0, 0.0], tiny.T1 - timedelta(days=1), ["text"]),  # too old
        ],
        "run-3",
    )
    with reader.connection(vectors=True) as con:
        hits = serving.similar_samples(con, "s0", 10)
        assert [h["sample_id"] for h in hits] == ["s9", "s1", "s2", "s3"]
        assert hits[0]["score"] == pytest.approx(0.6) and hits[1]["score"] == pytest.approx(0.0)
        assert hits[1]["modalities"] == ["image"]
        kept = con.execute(
            f"SELECT sample_id, embedding FROM {vectors.FUSED.vectors(3)} ORDER BY sample_id"
        ).fetchall()
        assert [s for s, _ in kept] == ["s0", "s1", "s2", "s3", "s9"]  # one row per sample
        assert dict(kept)["s1"] == (0.0, 0.0, 1.0) and dict(kept)["s2"] == (0.0, 1.0, 0.0)
    # Only the new part was read: its three rows, and no text part at all.
    assert reader.index.loaded["fused"] == ([part], 3)
    assert reader.index.loaded["text_features"] == ([], 0)
    assert indexed_answers(reader, tiny) == view_answers(lake, tiny)


def test_two_dimensions_and_a_row_without_a_vector(tmp_path: Path, tiny) -> None:
    lake = tiny.make(tmp_path / "lake", costs=False)
    reader = LakeReader(lake, check_every=0.0)
    indexed_answers(reader, tiny)
    later = tiny.T2 + timedelta(hours=1)
    land_fused(
        lake,
        [
            fused_row("s2", [0.0, 1.0, 0.0, 0.0], later, ["text"]),  # another model's dimension
            fused_row("s4", [0.0, 0.6, 0.8, 0.0], later, ["video"]),
            fused_row("s3", None, later, ["text"]),  # fused again, without a vector
        ],
        "run-3",
    )
    with reader.connection(vectors=True) as con:
        assert [h["sample_id"] for h in serving.similar_samples(con, "s2", 5)] == ["s4"]
        assert [h["sample_id"] for h in serving.similar_samples(con, "s0", 5)] == ["s1"]
        assert serving.similar_samples(con, "s3") is None
    assert indexed_answers(reader, tiny) == view_answers(lake, tiny)


def test_a_rewritten_part_rebuilds_the_table(tmp_path: Path, tiny) -> None:
    lake = tiny.make(tmp_path / "lake", costs=False)
    reader = LakeReader(lake, check_every=0.0)
    indexed_answers(reader, tiny)
    rewritten = land_fused(
        lake, [fused_row("s0", [0.0, 1.0, 0.0], tiny.T1, ["image", "text"])], tiny.RUN_1
    )
    os.utime(rewritten, ns=(0, 10**18))  # a different mtime whatever the clock's resolution
    with reader.connection(vectors=True) as con:
        # run-1 now holds s0 alone: s1 and s2 are gone, s3 is left (run-2).
        assert [h["sample_id"] for h in serving.similar_samples(con, "s0")] == ["s3"]
    parts, rows = reader.index.loaded["fused"]
    assert len(parts) == 2 and rows == 2  # both parts read again
    assert indexed_answers(reader, tiny) == view_answers(lake, tiny)


def test_a_request_in_flight_sees_the_lake_before_a_refresh(tmp_path: Path, tiny) -> None:
    lake = tiny.make(tmp_path / "lake", costs=False)
    reader = LakeReader(lake, check_every=0.0)
    with reader.connection(vectors=True) as before:
        first = serving.similar_samples(before, "s0", 10)
        later = tiny.T2 + timedelta(hours=1)
        land_fused(lake, [fused_row("s1", [-1.0, 0.0, 0.0], later, ["image"])], "run-3")
        with reader.connection(vectors=True) as after:  # refreshes while `before` is open
            assert serving.similar_samples(after, "s0", 1)[0]["sample_id"] == "s2"
            assert serving.sample_detail(after, "s1")["fused"]["modalities"] == ["image"]
        assert serving.similar_samples(before, "s0", 10) == first
        assert serving.sample_detail(before, "s1")["fused"]["modalities"] == ["image", "audio"]
