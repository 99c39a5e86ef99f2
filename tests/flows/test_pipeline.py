"""The pipeline flow on a real Prefect API and a real local Dask cluster."""

from __future__ import annotations

import shutil
from pathlib import Path
from uuid import UUID

import duckdb
import numpy as np
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)

from blocks.settings import RunOptions
from flows.pipeline import pipeline, plan_batches
from tasks.common import MODALITIES, ObjectRef
from tasks.lake.store import CATALOG_FILE
from tasks.media.encoders import embedding_dim

N_SAMPLES = 3  # the shared sample_dir fixture


def _count(lake: Path, table: str) -> int:
    with duckdb.connect(str(lake / CATALOG_FILE), read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_plan_batches_groups_by_modality_and_cuts_to_size() -> None:
    refs = [ObjectRef(str(i), f"u{i}", "s", "image" if i % 3 else "text", "", 1) for i in range(10)]
    batches = plan_batches(refs, batch_size=3)
    assert [(m, len(b)) for m, b in batches] == [
        ("image", 3),
        ("image", 3),
        ("text", 3),
        ("text", 1),
    ]
    assert sorted(r.object_id for _, b in batches for r in b) == sorted(r.object_id for r in refs)


@pytest.fixture(scope="module")
def model_run(sample_dir: Path, tmp_path_factory, tiny_image_model: str, tiny_audio_model: str):
    """One pipeline run with configured image and audio encoders, then a re-run."""
    lake = tmp_path_factory.mktemp("lake")
    first = pipeline(
        source=str(sample_dir),
        lake_path=str(lake),
        options=RunOptions(
            image_model=tiny_image_model, audio_model=tiny_audio_model, batch_size=2, dask_workers=2
        ),
    )
    counts = {t: _count(lake, t) for t in ("objects", "image_features", "fused", "quarantine")}
    second = pipeline(
        source=str(sample_dir),
        lake_path=str(lake),
        options=RunOptions(
            image_model=tiny_image_model, audio_model=tiny_audio_model, batch_size=2, dask_workers=2
        ),
    )
    return lake, first, second, counts


def test_every_modality_lands_and_bad_inputs_are_quarantined(model_run) -> None:
    lake, first, _, _ = model_run
    for modality in MODALITIES:
        assert first["modalities"][modality]["landed"] == N_SAMPLES, modality
    quarantined = sum(c.get("quarantined", 0) for c in first["modalities"].values())
    assert quarantined == 8  # every file in _bad/
    assert _count(lake, "quarantine") == 8
    assert _count(lake, "objects") == 5 * N_SAMPLES + 8


def test_configured_encoders_set_dimensions_and_lineage(
    model_run, tiny_image_model, tiny_audio_model
) -> None:
    lake, first, _, _ = model_run
    image_dim = embedding_dim(tiny_image_model, "image")
    audio_dim = embedding_dim(tiny_audio_model, "audio")
    with duckdb.connect(str(lake / CATALOG_FILE), read_only=True) as con:
        image = con.execute(
            "SELECT DISTINCT model_id, embedding_dim, flow_run_id FROM image_features"
        ).fetchall()
        video = con.execute(
            "SELECT DISTINCT embedding_dim, audio_model_id FROM video_features"
        ).fetchall()
        fused = con.execute("SELECT embedding, modalities FROM fused ORDER BY sample_id").fetchall()
    assert image == [(tiny_image_model, image_dim, first["flow_run_id"])]
    assert video == [(image_dim, tiny_audio_model)]  # frames through the image path
    assert len(fused) == N_SAMPLES
    expected_dim = 2 * image_dim + 384 + audio_dim + 16
    for vector, modalities in fused:
        assert len(vector) == expected_dim
        assert np.linalg.norm(np.asarray(vector)) == pytest.approx(1.0, abs=1e-4)
        assert sorted(modalities) == sorted(MODALITIES)


def test_rerun_is_incremental_and_adds_no_rows(model_run) -> None:
    lake, first, second, counts = model_run
    assert second["new"] == 0
    assert second["known"] == first["new"]
    assert second["modalities"] == {}
    assert {t: _count(lake, t) for t in counts} == counts


def test_batches_run_as_child_flow_and_task_runs(model_run) -> None:
    _, first, _, _ = model_run
    with get_client(sync_client=True) as client:
        parent = client.read_flow_run(first["flow_run_id"])
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
            )
        )
        assert parent.state.is_completed()
        assert [c.state.is_completed() for c in children] == [True]
        task_runs = client.read_task_runs()
    extract_runs = [
        t
        for t in task_runs
        if t.flow_run_id == children[0].id and t.name.startswith("extract-features")
    ]
    # 5 modalities x 3 samples (+ bad inputs that sniffed as a modality), batch size 2:
    # one task run per batch, never one per object.
    assert 8 <= len(extract_runs) < 5 * N_SAMPLES
    assert all(t.state.is_completed() for t in extract_runs)


def _events(name: str, run_id: str, expected: int, timeout: float = 20) -> list:
    import time

    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
            found = [e for e in page.events if e.payload.get("flow_run_id") == run_id]
            if len(found) >= expected or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def test_a_run_announces_landed_tables_and_samples(model_run) -> None:
    lake, first, second, _ = model_run
    batches = _events("braid.batch.landed", first["flow_run_id"], len(MODALITIES))
    assert sorted(e.resource.id for e in batches) == sorted(
        f"braid.lake.{m}_features" for m in MODALITIES
    )
    for event in batches:
        assert event.payload["counts"] == {
            m: c.get("landed", 0) for m, c in first["modalities"].items()
        }
        assert event.payload["quarantined"] == 8
        assert event.payload["lake"] == str(lake.resolve())
        assert event.payload["landed"] == N_SAMPLES
    samples = _events("braid.sample.landed", first["flow_run_id"], N_SAMPLES)
    assert sorted(e.resource.id for e in samples) == [
        f"braid.sample.sample-000{i}" for i in range(3)
    ]
    assert all(sorted(e.payload["modalities"]) == sorted(MODALITIES) for e in samples)
    # A re-run that lands nothing announces nothing.
    assert _events("braid.batch.landed", second["flow_run_id"], 1, timeout=2) == []


# The Dask path's rows against the default's: test_quality does it on a cluster by address.
@pytest.mark.slow
def test_a_small_run_extracts_in_its_own_process_and_lands_the_same_rows(
    sample_dir: Path, tmp_path: Path
) -> None:
    source = tmp_path / "one-sample"
    shutil.copytree(sample_dir / "sample-0000", source / "sample-0000")
    rows = {}
    for label, inline in (("inline", 8), ("dask", 0)):
        lake = tmp_path / f"lake-{label}"
        summary = pipeline(
            source=str(source),
            lake_path=str(lake),
            options=RunOptions(dask_workers=1, inline_max_objects=inline),
        )
        with get_client(sync_client=True) as client:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[summary["flow_run_id"]])
                )
            )
            own = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(summary["flow_run_id"])]))
            tasks = {t.name.rsplit("-", 1)[0] for t in client.read_task_runs(flow_run_filter=own)}
        # Five objects under 8: no Dask subflow, the batches are the run's own tasks.
        assert len(children) == (0 if label == "inline" else 1), label
        assert ("extract-in-process" in tasks) == (label == "inline"), tasks
        with duckdb.connect(str(lake / CATALOG_FILE), read_only=True) as con:
            rows[label] = con.execute(
                "SELECT object_id, modality, status FROM objects ORDER BY object_id"
            ).fetchall()
            rows[label] += con.execute("SELECT sample_id, embedding FROM fused").fetchall()
    assert len(rows["inline"]) == 5 + 1
    assert rows["inline"][:5] == rows["dask"][:5]
    assert np.allclose(rows["inline"][5][1], rows["dask"][5][1], atol=1e-5)
