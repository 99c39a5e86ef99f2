"""The query API's answers as plain functions, over a lake with known rows and vectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.serve import serving


@pytest.fixture
def con(tiny_lake: Path):
    connection = serving.open_snapshot(tiny_lake)
    yield connection
    connection.close()


def test_sample_detail_leaves_vectors_out_unless_asked(con) -> None:
    detail = serving.sample_detail(con, "s1")
    assert detail is not None
    assert [o["object_id"] for o in detail["objects"]] == ["s1-audio", "s1-image"]
    [image] = detail["features"]["image"]
    assert image["width"] == 32 and "embedding" not in image
    assert image["sharpness"] is None  # NaN in Parquet, null in answers
    assert detail["features"]["text"] == [] and len(detail["features"]["audio"]) == 1
    fused = detail["fused"]
    assert fused["has_image"] and fused["has_audio"] and not fused["has_text"]
    assert fused["modalities"] == ["image", "audio"]
    assert "embedding" not in fused and "image_embedding" not in fused
    assert detail["quarantine"] == []

    with_vectors = serving.sample_detail(con, "s2", vectors=True)
    assert with_vectors["fused"]["embedding"] == pytest.approx([0.0, 1.0, 0.0])
    [video] = with_vectors["features"]["video"]
    assert video["embedding"] == pytest.approx([0, 0, 1, 0]) and video["audio_embedding"] == [
        0.5,
        0.5,
    ]


def test_sample_detail_of_a_bad_sample_and_of_an_unknown_one(con) -> None:
    bad = serving.sample_detail(con, "_bad")
    assert bad["fused"] is None
    assert {o["object_id"]: o["status"] for o in bad["objects"]} == {
        "bad-decode": "landed",
        "bad-sniff": "quarantined",
    }
    assert [q["stage"] for q in bad["quarantine"]] == ["sniff"]
    assert serving.sample_detail(con, "nobody") is None
    assert serving.sample_detail(con, "s0' OR '1'='1") is None


def test_similar_samples_rank_by_fused_cosine_and_leave_the_sample_out(con) -> None:
    hits = serving.similar_samples(con, "s0", k=3)
    assert [h["sample_id"] for h in hits] == ["s1", "s2", "s3"]  # ties in sample_id order
    assert [h["score"] for h in hits] == pytest.approx([0.8, 0.0, 0.0], abs=1e-6)
    assert serving.similar_samples(con, "s0", k=1)[0]["sample_id"] == "s1"
    assert [h["sample_id"] for h in serving.similar_samples(con, "s0", modality="text")] == [
        "s2",
        "s3",
    ]
    assert serving.similar_samples(con, "_bad") is None  # no fused row
    assert serving.similar_samples(con, "nobody") is None
    with pytest.raises(ValueError, match="unknown modality"):
        serving.similar_samples(con, "s0", modality="image; DROP TABLE fused")
    with pytest.raises(ValueError, match="k must be"):
        serving.similar_samples(con, "s0", k=0)


def test_samples_near_text_score_each_sample_by_its_best_text(con, tiny) -> None:
    hits = serving.samples_near_text(con, [1.0, 0.0, 0.0], tiny.TEXT_MODEL, k=5)
    assert [h["sample_id"] for h in hits] == ["s0", "s3", "s2"]
    assert [h["score"] for h in hits] == pytest.approx([1.0, 0.6, 0.0], abs=1e-6)
    assert hits[0]["text"] == "about s0" and hits[0]["modalities"] == ["image", "text"]
    assert [h["sample_id"] for h in serving.samples_near_text(con, [1, 0, 0], tiny.TEXT_MODEL, 5, "video")] == ["s2"]  # fmt: skip
    assert serving.samples_near_text(con, [1.0, 0.0, 0.0], "another/model") == []
    assert serving.samples_near_text(con, [1.0, 0.0], tiny.TEXT_MODEL) == []  # another dimension


def test_stats_count_what_the_views_hold_and_what_each_run_filed(con, tiny) -> None:
    stats = serving.lake_stats(con)
    assert stats["totals"] == {
        "objects": 9,
        "landed": 8,
        "quarantined": 1,
        "samples": 5,
        "samples_fused": 4,
    }
    counts = {(r["modality"], r["status"]): r["count"] for r in stats["by_modality_status"]}
    assert counts == {
        ("audio", "landed"): 1,
        ("image", "landed"): 3,
        ("text", "landed"): 3,
        ("unknown", "quarantined"): 1,
        ("video", "landed"): 1,
    }
    days = {(str(r["day"]), r["modality"], r["status"]): r["count"] for r in stats["by_day"]}
    assert days[("2024-05-02", "text", "landed")] == 1  # s3, the second run
    assert days[("2024-05-01", "image", "landed")] == 2
    assert stats["quarantine_by_stage"] == [{"stage": "sniff", "count": 1}]
    runs = {r["flow_run_id"]: r for r in stats["runs"]}
    assert [r["flow_run_id"] for r in stats["runs"]] == [tiny.RUN_2, tiny.RUN_1]  # newest first
    assert (
        runs[tiny.RUN_1]["objects"],
        runs[tiny.RUN_1]["landed"],
        runs[tiny.RUN_1]["quarantined"],
    ) == (8, 6, 2)
    assert (
        runs[tiny.RUN_2]["objects"],
        runs[tiny.RUN_2]["landed"],
        runs[tiny.RUN_2]["quarantined"],
    ) == (2, 2, 0)
    assert runs[tiny.RUN_1]["samples_fused"] == 3 and runs[tiny.RUN_2]["samples_fused"] == 1
    assert runs[tiny.RUN_1]["started_at"] == tiny.T1 and runs[tiny.RUN_2]["finished_at"] == tiny.T2
    assert serving.lake_stats(con, runs=1)["runs"][0]["flow_run_id"] == tiny.RUN_2
