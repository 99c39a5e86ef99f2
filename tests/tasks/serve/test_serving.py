"""The query API's answers as plain functions, over a lake with known rows and vectors."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from tasks.lake.store import rows_frame, write_part
from tasks.lake.tables import TABLES
from tasks.serve import serving
from tasks.serve.serving import CursorError, LakeReader, PageRequest


@pytest.fixture
def con(tiny_lake: Path):
    connection = serving.open_snapshot(tiny_lake)
    yield connection
    connection.close()


def test_objects_pages_by_cursor_and_by_offset_cover_every_object_once(con) -> None:
    every = [r[0] for r in con.execute("SELECT object_id FROM objects ORDER BY 1").fetchall()]
    assert len(every) == 9  # bad-decode once: its landed row replaced its quarantined one

    seen, cursor = [], None
    while True:
        page = serving.objects_page(con, page=PageRequest(limit=4, cursor=cursor))
        assert page["total"] == 9 and len(page["items"]) <= 4
        seen += [item["object_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == every

    by_offset = serving.objects_page(con, page=PageRequest(limit=3, offset=6))
    assert [i["object_id"] for i in by_offset["items"]] == every[6:9]
    assert by_offset["next_cursor"] is None
    assert set(by_offset["items"][0]) == set(serving.OBJECT_COLUMNS)


def test_objects_filter_by_modality_status_and_landing_time(con, tiny) -> None:
    images = serving.objects_page(con, modality="image", status="landed")
    assert [i["object_id"] for i in images["items"]] == ["bad-decode", "s0-image", "s1-image"]
    quarantined = serving.objects_page(con, status="quarantined")
    assert [i["object_id"] for i in quarantined["items"]] == ["bad-sniff"]
    recent = serving.objects_page(con, since=tiny.T2 - timedelta(minutes=1))
    assert {i["object_id"] for i in recent["items"]} == {"bad-decode", "s3-text"}
    assert serving.objects_page(con, since=tiny.T2 + timedelta(seconds=1))["total"] == 0
    assert serving.objects_page(con, modality="smell")["items"] == []


def test_quarantine_filters_by_stage_and_reason_in_any_case(con) -> None:
    everything = serving.quarantine_page(con)
    assert [i["object_id"] for i in everything["items"]] == ["bad-sniff"]  # bad-decode re-landed
    assert serving.quarantine_page(con, stage="sniff")["total"] == 1
    assert serving.quarantine_page(con, stage="decode")["total"] == 0
    assert serving.quarantine_page(con, reason="UNRECOGNISED")["total"] == 1
    # The reason is matched as text: % and _ are not wildcards.
    assert serving.quarantine_page(con, reason="%")["total"] == 0


@pytest.mark.parametrize(
    "cursor", ["", "abc", "k1.", "k1.!!!", "k1.gA==", serving.encode_cursor("x")[:-1] + "*"]
)
def test_cursors_not_handed_out_are_refused(con, cursor: str) -> None:
    with pytest.raises(CursorError):
        serving.objects_page(con, page=PageRequest(cursor=cursor))


def test_a_cursor_round_trips_any_key() -> None:
    for key in ["s0-image", "ü/ß 🙂", "a" * 64]:
        assert serving.decode_cursor(serving.encode_cursor(key)) == key


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


def test_reader_sees_new_parts_and_refuses_a_missing_lake(tmp_path: Path, tiny) -> None:
    lake = tiny.make(tmp_path / "lake", costs=False)
    reader = LakeReader(lake, check_every=0.0)
    with reader.connection() as con:
        assert serving.objects_page(con)["total"] == 9
    extra = {
        "object_id": "late", "uri": "/data/late.txt", "sample_id": "late", "modality": "text",
        "media_type": "text/plain", "size_bytes": 3, "discovered_at": tiny.T2, "status": "landed",
        "flow_run_id": "run-3", "landed_at": tiny.T2,
    }  # fmt: skip
    write_part(lake, "objects", rows_frame([extra], TABLES["objects"].schema), "run-3")
    with reader.connection() as con:
        assert serving.objects_page(con)["total"] == 10

    # Only Parquet parts are read, never the catalog file the pipeline rewrites.
    (lake / "braid.duckdb").write_bytes(b"not a database")
    with reader.connection() as con:
        assert serving.objects_page(con)["total"] == 10
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
        assert serving.objects_page(con)["total"] == 9
    late = rows_frame([{"object_id": "late", "landed_at": tiny.T2}], TABLES["objects"].schema)
    write_part(lake, "objects", late, "run-3")
    with reader.connection() as con:  # the snapshot is reused within the interval
        assert serving.objects_page(con)["total"] == 9
    reader.check_every = 0.0
    with reader.connection() as con:
        assert serving.objects_page(con)["total"] == 10
