"""Batch extraction: every object lands or is quarantined with a reason, embeddings carry lineage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.common import Analysis, Limits, Models, ObjectRef, Rejected
from tasks.ingest.discover import discover
from tasks.ingest.extract import (
    BatchResult,
    PriorityPool,
    apply_each,
    chunks,
    embed_batch,
    extract_batch,
    extract_plan,
    failed_batch,
    interleave,
    merge_batches,
    plan_batches,
)
from tasks.lake.tables import OBJECTS, QUARANTINE, TABLES, feature_table
from tasks.media import audio, image, text, timeseries, video
from tasks.media.encoders import DEFAULT_TEXT_MODEL, embed_audio, embed_images
from tasks.media.identity import resolve_model_set

RUN = "run-1"
HANDCRAFTED = Models(text=DEFAULT_TEXT_MODEL)


@pytest.fixture(scope="module")
def refs(sample_dir: Path) -> dict[str, list[ObjectRef]]:
    """The discovered objects of the sample folders, by modality."""
    by_modality: dict[str, list[ObjectRef]] = {}
    for ref in discover(str(sample_dir), set(), Limits()).new:
        by_modality.setdefault(ref.modality, []).append(ref)
    return by_modality


def names(frame: pl.DataFrame) -> list[str]:
    return sorted(Path(uri).name for uri in frame["uri"])


def assert_unit_embeddings(frame: pl.DataFrame, dim: int, model_id: str) -> None:
    vectors = np.asarray(frame["embedding"].to_list(), dtype=np.float32)
    assert vectors.shape == (frame.height, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert frame["embedding_dim"].to_list() == [dim] * frame.height
    assert frame["model_id"].to_list() == [model_id] * frame.height
    assert frame["flow_run_id"].to_list() == [RUN] * frame.height


def assert_no_row_lost(result: BatchResult, batch: list[ObjectRef]) -> None:
    ids = {ref.object_id for ref in batch}
    landed = set(result.features["object_id"])
    quarantined = set(result.quarantine["object_id"])
    assert landed | quarantined == ids
    assert not landed & quarantined
    objects = result.objects
    assert objects.height == len(batch)
    status = dict(zip(objects["object_id"], objects["status"], strict=True))
    assert {i for i, s in status.items() if s == "landed"} == landed
    assert {i for i, s in status.items() if s == "quarantined"} == quarantined


@pytest.mark.parametrize(
    ("modality", "dim", "model_id", "landed", "quarantined"),
    [
        ("image", image.HANDCRAFTED_DIM, image.HANDCRAFTED_MODEL, 3, 2),
        ("video", image.HANDCRAFTED_DIM, image.HANDCRAFTED_MODEL, 3, 1),
        ("audio", audio.HANDCRAFTED_DIM, audio.HANDCRAFTED_MODEL, 3, 0),
        ("timeseries", timeseries.HANDCRAFTED_DIM, timeseries.HANDCRAFTED_MODEL, 3, 0),
        ("text", 384, DEFAULT_TEXT_MODEL, 3, 0),
    ],
)
def test_every_object_lands_or_is_quarantined(
    refs: dict[str, list[ObjectRef]],
    modality: str,
    dim: int,
    model_id: str,
    landed: int,
    quarantined: int,
) -> None:
    batch = refs[modality]

    result = extract_batch(modality, batch, HANDCRAFTED, Limits(), RUN)

    assert (result.landed, result.quarantined) == (landed, quarantined)
    assert_no_row_lost(result, batch)
    assert result.features.schema == pl.Schema(TABLES[feature_table(modality)].schema)
    assert result.quarantine.schema == pl.Schema(QUARANTINE)
    assert result.objects.schema == pl.Schema(OBJECTS)
    assert_unit_embeddings(result.features, dim, model_id)
    assert resolve_model_set(HANDCRAFTED).dims[modality] == dim
    assert set(result.features["sample_id"]) == {"sample-0000", "sample-0001", "sample-0002"}


def test_bad_objects_carry_their_stage_and_reason(refs: dict[str, list[ObjectRef]]) -> None:
    images = extract_batch("image", refs["image"], HANDCRAFTED, Limits(), RUN)
    videos = extract_batch("video", refs["video"], HANDCRAFTED, Limits(), RUN)

    reasons = {
        Path(row["uri"]).name: (row["stage"], row["reason"])
        for row in pl.concat([images.quarantine, videos.quarantine]).iter_rows(named=True)
    }
    assert set(reasons) == {"bomb.png", "truncated.jpg", "nostreams.mp4"}
    assert all(stage == "decode" for stage, _ in reasons.values())
    assert "max_image_pixels" in reasons["bomb.png"][1]
    assert "truncated" in reasons["truncated.jpg"][1]
    assert "no video stream" in reasons["nostreams.mp4"][1]
    assert set(images.quarantine["sample_id"]) == {"_bad"}
    assert images.quarantine["flow_run_id"].to_list() == [RUN, RUN]


def test_features_are_the_measured_values(refs: dict[str, list[ObjectRef]]) -> None:
    result = extract_batch("image", refs["image"], HANDCRAFTED, Limits(), RUN)
    for row in result.features.iter_rows(named=True):
        analysis = image.analyze(Path(row["uri"]).read_bytes(), Limits())
        assert row["width"] == analysis.features["width"]
        assert row["phash"] == analysis.features["phash"]
        assert row["size_bytes"] == Path(row["uri"]).stat().st_size
        np.testing.assert_allclose(row["embedding"], analysis.vector, atol=1e-6)


def test_an_object_that_vanished_is_quarantined_at_read(
    refs: dict[str, list[ObjectRef]], tmp_path: Path
) -> None:
    kept, gone = refs["timeseries"][0], refs["timeseries"][1]
    copy = tmp_path / "sensor.csv"
    shutil.copy(gone.uri, copy)
    vanished = ObjectRef(gone.object_id, str(copy), gone.sample_id, "timeseries", "text/csv", 1)
    copy.unlink()

    result = extract_batch("timeseries", [kept, vanished], HANDCRAFTED, Limits(), RUN)

    assert result.landed == 1
    (row,) = result.quarantine.iter_rows(named=True)
    assert row["stage"] == "read"
    assert row["reason"].startswith("FileNotFoundError")


def test_image_encoder_sets_dimension_and_lineage(
    refs: dict[str, list[ObjectRef]], tiny_image_model: str
) -> None:
    models = Models(text=DEFAULT_TEXT_MODEL, image=tiny_image_model)

    result = extract_batch("image", refs["image"], models, Limits(), RUN)

    assert resolve_model_set(models).dims["image"] == 48
    assert (result.landed, result.quarantined) == (3, 2)
    assert_unit_embeddings(result.features, 48, tiny_image_model)
    first = result.features.row(0, named=True)
    thumbnail = image.analyze(Path(first["uri"]).read_bytes(), Limits()).model_input
    expected = embed_images([thumbnail], tiny_image_model)[0]
    np.testing.assert_allclose(first["embedding"], expected, atol=1e-5)


def test_video_frames_are_embedded_by_the_image_model_and_pooled(
    refs: dict[str, list[ObjectRef]], tiny_image_model: str
) -> None:
    models = Models(text=DEFAULT_TEXT_MODEL, image=tiny_image_model)

    result = extract_batch("video", refs["video"], models, Limits(), RUN)

    assert resolve_model_set(models).dims["video"] == 48
    assert_unit_embeddings(result.features, 48, tiny_image_model)
    for row in result.features.iter_rows(named=True):
        frames = video.analyze(Path(row["uri"]).read_bytes(), Limits()).model_input["frames"]
        assert len(frames) == row["frames_sampled"] == 2
        pooled = embed_images(frames, tiny_image_model).mean(axis=0)
        np.testing.assert_allclose(row["embedding"], pooled / np.linalg.norm(pooled), atol=1e-5)
        # With no audio model the track keeps its handcrafted vector.
        assert len(row["audio_embedding"]) == audio.HANDCRAFTED_DIM
        assert row["audio_model_id"] == audio.HANDCRAFTED_MODEL


def test_audio_encoder_embeds_clips_and_video_tracks(
    refs: dict[str, list[ObjectRef]], tiny_audio_model: str
) -> None:
    models = Models(text=DEFAULT_TEXT_MODEL, audio=tiny_audio_model)

    clips = extract_batch("audio", refs["audio"], models, Limits(), RUN)
    videos = extract_batch("video", refs["video"], models, Limits(), RUN)

    assert resolve_model_set(models).dims["audio"] == 40
    assert_unit_embeddings(clips.features, 40, tiny_audio_model)
    first = clips.features.row(0, named=True)
    mono = audio.analyze(Path(first["uri"]).read_bytes(), Limits()).model_input
    np.testing.assert_allclose(
        first["embedding"], embed_audio([mono], 16_000, tiny_audio_model)[0], atol=1e-4
    )
    # The videos' frames keep the handcrafted image vector; their tracks use the audio model.
    assert_unit_embeddings(videos.features, image.HANDCRAFTED_DIM, image.HANDCRAFTED_MODEL)
    tracks = np.asarray(videos.features["audio_embedding"].to_list())
    assert tracks.shape == (3, 40)
    np.testing.assert_allclose(np.linalg.norm(tracks, axis=1), 1.0, atol=1e-5)
    assert videos.features["audio_model_id"].to_list() == [tiny_audio_model] * 3


def fake_text_embed(inputs: list[str], model_id: str) -> np.ndarray:
    """A stand-in text model that cannot embed the word 'poison'."""
    if any("poison" in item for item in inputs):
        raise ValueError("the model choked on poison")
    return np.array([[len(item), 1.0, 0.0] for item in inputs], dtype=np.float32)


def test_one_failing_input_is_isolated_and_the_others_embed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(text, "embed", fake_text_embed)
    inputs = ["a good sentence", "a poison pill", "another"]
    analyses = [Analysis(features={}, vector=np.zeros(0), model_input=item) for item in inputs]

    results = embed_batch("text", analyses, HANDCRAFTED, Limits())

    assert len(results) == 3
    good_first, bad, good_last = results
    assert isinstance(bad, Rejected)
    assert bad.stage == "embed"
    assert bad.reason == "ValueError: the model choked on poison"
    assert isinstance(good_first, dict)
    assert isinstance(good_last, dict)
    np.testing.assert_allclose(good_first["embedding"], [15, 1, 0])
    np.testing.assert_allclose(good_last["embedding"], [7, 1, 0])


def test_embedding_failure_is_quarantined_even_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(text, "embed", fake_text_embed)
    refs = []
    for name, words in [("ok.txt", "fine words"), ("bad.txt", "poison words")]:
        (tmp_path / name).write_text(words)
        refs.append(ObjectRef(name, str(tmp_path / name), "s", "text", "text/plain", 10))

    both = extract_batch("text", refs, HANDCRAFTED, Limits(), RUN)
    alone = extract_batch("text", refs[1:], HANDCRAFTED, Limits(), RUN)

    assert both.features["object_id"].to_list() == ["ok.txt"]
    for result in (both, alone):
        (row,) = result.quarantine.iter_rows(named=True)
        assert (row["object_id"], row["stage"]) == ("bad.txt", "embed")
        assert "choked on poison" in row["reason"]
        assert result.objects.filter(pl.col("status") == "quarantined").height == 1


def test_a_failed_child_batch_quarantines_every_object_with_the_reason(refs) -> None:
    batch = refs["audio"]
    result = failed_batch("audio", batch, "child flow run x (braid-audio) ended crashed: OOM", RUN)
    assert result.features.is_empty()
    assert result.features.schema == pl.Schema(TABLES["audio_features"].schema)
    assert sorted(result.quarantine["object_id"]) == sorted(r.object_id for r in batch)
    assert set(result.quarantine["stage"]) == {"extract"}
    assert set(result.quarantine["reason"]) == {"child flow run x (braid-audio) ended crashed: OOM"}
    assert set(result.objects["status"]) == {"quarantined"}
    assert result.objects.height == len(batch)


def test_a_child_runs_batches_merge_into_the_rows_of_one_batch(refs) -> None:
    """A child run extracts its objects batch_size at a time and stages them as one."""
    batch = refs["image"]
    whole = extract_batch("image", batch, Models(), Limits(), RUN)
    parts = [extract_batch("image", batch[i : i + 1], Models(), Limits(), RUN)
             for i in range(len(batch))]  # fmt: skip
    merged = merge_batches("image", parts)
    assert merged.modality == "image"
    for name in ("features", "quarantine", "objects"):
        got, want = getattr(merged, name), getattr(whole, name)
        keep = [
            c for c in want.columns if c not in ("landed_at", "discovered_at", "quarantined_at")
        ]
        assert got.select(keep).sort("object_id").equals(want.select(keep).sort("object_id")), name
    assert merged.costs.height == whole.costs.height


@pytest.mark.parametrize(
    ("n", "threads", "sizes"),
    [
        (32, 2, [8, 8, 8, 8]),  # two tasks per thread
        (5, 4, [1, 1, 1, 1, 1]),  # never an empty task, never more tasks than items
        (100, 1, [8] * 12 + [4]),  # capped, so one thread still gets small tasks
        (0, 2, []),
        (3, 0, [2, 1]),  # a cluster still starting reports no threads
    ],
)
def test_batches_go_to_dask_a_few_objects_per_task(n: int, threads: int, sizes: list[int]) -> None:
    items = list(range(n))
    cut = chunks(items, threads)
    assert [len(c) for c in cut] == sizes
    assert [i for c in cut for i in c] == items  # every object once, in order


def test_a_chunked_mapper_gives_the_same_rows_as_map(refs: dict[str, list[ObjectRef]]) -> None:
    def chunked(function, items):  # what dask_mapper does, without the cluster
        return [r for chunk in chunks(items, 2) for r in apply_each(chunk, function)]

    batch = refs["image"]
    plain = extract_batch("image", batch, Models(), Limits(), "run", mapper=map)
    mapped = extract_batch("image", batch, Models(), Limits(), "run", mapper=chunked)
    columns = [c for c in plain.features.columns if c != "landed_at"]
    assert mapped.features.select(columns).equals(plain.features.select(columns))
    assert mapped.quarantine["object_id"].to_list() == plain.quarantine["object_id"].to_list()


def test_threads_extract_the_same_rows_as_one_batch_at_a_time(
    refs: dict[str, list[ObjectRef]],
) -> None:
    """extract_plan (threads of this process) against extract_batch with the builtin map:
    the same rows, batch by batch, in the plan's interleaved order; progress is reported
    in the calling thread, once per batch."""
    import threading

    batches = plan_batches([r for group in refs.values() for r in group], batch_size=5)
    caller, seen = threading.get_ident(), []

    def progress(result: BatchResult) -> None:
        seen.append((result.modality, threading.get_ident() == caller))

    threaded = extract_plan(batches, HANDCRAFTED, Limits(), RUN, threads=3, on_batch=progress)

    order = interleave(batches)
    assert [r.modality for r in threaded] == [m for m, _ in order]
    assert sorted(seen) == sorted((m, True) for m, _ in order)
    for (modality, batch), result in zip(order, threaded, strict=True):
        plain = extract_batch(modality, batch, HANDCRAFTED, Limits(), RUN)
        columns = [c for c in plain.features.columns if c != "landed_at"]
        assert result.features.select(columns).equals(plain.features.select(columns)), modality
        assert result.quarantine["reason"].to_list() == plain.quarantine["reason"].to_list()
        assert_no_row_lost(result, batch)


def test_interleave_alternates_modalities_and_keeps_each_ones_order() -> None:
    a = [("image", [i]) for i in range(3)]
    b = [("text", [i]) for i in range(1)]
    assert interleave([*a, *b]) == [a[0], b[0], a[1], a[2]]  # type: ignore[list-item]
    assert interleave([]) == []


def test_the_pool_runs_by_priority_and_reraises_an_error() -> None:
    import threading

    order: list[int] = []
    gate = threading.Event()
    pool = PriorityPool(1)
    pool.submit((0,), gate.wait)  # holds the one thread while the rest queue up
    for priority in (5, 1, 3):
        pool.submit((priority,), order.append, priority)
    gate.set()
    pool.wait()
    assert order == [1, 3, 5]

    errors: list[BaseException] = []
    failing = PriorityPool(2, on_error=errors.append)
    failing.submit((0,), lambda: 1 / 0)
    failing.submit((1,), order.append, 9)  # the others still run
    with pytest.raises(ZeroDivisionError):
        failing.wait()
    assert order[-1] == 9 and isinstance(errors[0], ZeroDivisionError)
