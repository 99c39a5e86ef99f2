"""The quality gate inside the flow: policies, artifacts, Data Docs and redrive, on a real Prefect API."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from blocks.settings import BraidSettings, RunOptions
from flows.pipeline import QUALITY_DOCS, QualityGateFailed, pipeline, redrive
from tasks.lake.store import CATALOG_FILE

SAMPLES = ("sample-0000", "sample-0001")
FILES = ("image", "caption.txt", "audio")
STRICT = "strict-rates"  # a settings block that allows no sample rate the samples use


@pytest.fixture(scope="module", autouse=True)
def strict_block(prefect_api: str) -> None:
    BraidSettings(sample_rates=[8000]).save(STRICT, overwrite=True)


@pytest.fixture
def source(sample_dir: Path, tmp_path: Path) -> Path:
    """Two samples' image, caption and audio: enough for every path, quick to process."""
    root = tmp_path / "source"
    for sample in SAMPLES:
        (root / sample).mkdir(parents=True)
        for path in (sample_dir / sample).iterdir():
            if path.name.startswith(FILES):
                shutil.copy(path, root / sample / path.name)
    return root


def query(lake: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(lake / CATALOG_FILE), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(autouse=True)
def _cluster(dask_address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAID_TEST_DASK", dask_address)


def run(source: Path, lake: Path, settings_block: str | None = None, **options):
    return pipeline(
        source=str(source),
        lake_path=str(lake),
        settings_block=settings_block,
        options=RunOptions(dask_address=_address(), **options),
    )


def _address() -> str:
    import os

    return os.environ["BRAID_TEST_DASK"]


def test_quarantine_policy_files_failing_rows_with_the_expectations_they_failed(source, tmp_path):
    lake = tmp_path / "lake"
    summary = run(source, lake, settings_block=STRICT)
    assert summary["modalities"]["audio"] == {"landed": 0, "quarantined": 2}
    assert summary["modalities"]["image"] == {"landed": 2, "quarantined": 0}
    assert query(lake, "SELECT count(*) FROM audio_features") == [(0,)]
    reasons = query(lake, "SELECT stage, reason FROM quarantine")
    assert (
        reasons
        == [("validate", "failed expectations: expect_column_values_to_be_in_set(sample_rate)")] * 2
    )
    statuses = query(
        lake, "SELECT modality, status, count(*) FROM objects GROUP BY ALL ORDER BY ALL"
    )
    assert statuses == [("audio", "quarantined", 2), ("image", "landed", 2), ("text", "landed", 2)]
    # Rows in = rows landed + rows quarantined, per table.
    assert query(lake, "SELECT count(*) FROM objects") == [(6,)]
    assert query(lake, "SELECT bool_or(has_audio), bool_and(has_image) FROM fused") == [
        (False, True)
    ]


def test_each_run_publishes_an_artifact_per_table_and_data_docs(source, tmp_path):
    lake = tmp_path / "lake"
    summary = run(source, lake, settings_block=STRICT)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[summary["flow_run_id"]])
            )
        )
    by_key = {a.key: a.data for a in artifacts}
    assert set(by_key) == {
        "braid-quality-audio-features",
        "braid-quality-image-features",
        "braid-quality-text-features",
        "braid-quality-fused",
    }
    audio = by_key["braid-quality-audio-features"]
    assert "❌" in audio and "expect_column_values_to_be_in_set(sample_rate)" in audio
    assert "100% of expectations met" in by_key["braid-quality-image-features"]
    index = (lake / QUALITY_DOCS / "index.html").read_text()
    for suite in ("audio_features", "image_features", "text_features", "fused"):
        assert suite in index
    assert query(
        lake, "SELECT count(*) FROM validations WHERE table_name = 'audio_features' AND NOT success"
    ) == [(1,)]


def test_redrive_lands_what_now_passes_and_clears_its_quarantine(source, tmp_path):
    lake = tmp_path / "lake"
    run(source, lake, settings_block=STRICT)
    summary = redrive(
        lake_path=str(lake), stage="validate", options=RunOptions(dask_address=_address())
    )  # default rates
    assert summary["redriven"] == 2
    assert summary["modalities"]["audio"] == {"landed": 2, "quarantined": 0}
    assert query(lake, "SELECT count(*) FROM quarantine") == [(0,)]
    assert query(lake, "SELECT count(*) FROM audio_features") == [(2,)]
    assert query(lake, "SELECT status, count(*) FROM objects GROUP BY ALL") == [("landed", 6)]
    assert query(lake, "SELECT bool_and(has_audio), count(*) FROM fused") == [(True, 2)]


def test_fail_policy_lands_nothing_of_the_table_and_fails_the_run(source, tmp_path):
    lake = tmp_path / "lake"
    with pytest.raises(QualityGateFailed, match="audio_features: 2 failing rows"):
        run(source, lake, settings_block=STRICT, quality_policies={"audio_features": "fail"})
    assert query(lake, "SELECT count(*) FROM audio_features") == [(0,)]
    assert query(lake, "SELECT count(*) FROM image_features") == [(2,)]
    assert query(lake, "SELECT count(*) FROM objects WHERE modality = 'audio'") == [(0,)]
    # Nothing of the table was recorded, so a run with a fixed configuration picks it up.
    again = run(source, lake)
    assert again["modalities"] == {"audio": {"landed": 2, "quarantined": 0}}


def test_warn_policy_lands_everything_and_records_the_failure(source, tmp_path):
    lake = tmp_path / "lake"
    summary = run(source, lake, settings_block=STRICT, quality_policy="warn")
    assert summary["modalities"]["audio"] == {"landed": 2, "quarantined": 0}
    assert summary["validations"]["audio_features"] < 100
    assert query(lake, "SELECT count(*) FROM quarantine") == [(0,)]
    assert query(
        lake, "SELECT expectation, unexpected_count FROM validations WHERE NOT success"
    ) == [("expect_column_values_to_be_in_set(sample_rate)", 2)]


def test_redrive_of_a_repaired_file_lands_it_and_supersedes_the_broken_version(source, tmp_path):
    lake = tmp_path / "lake"
    image = next((source / SAMPLES[0]).glob("image.*"))
    good = image.read_bytes()
    broken = io.BytesIO()
    Image.open(io.BytesIO(good)).convert("RGB").save(broken, "JPEG")
    image.unlink()
    image = image.with_suffix(".jpg")
    image.write_bytes(broken.getvalue()[: len(broken.getvalue()) // 2])
    run(source, lake)
    assert [r[0] for r in query(lake, "SELECT stage FROM quarantine")] == ["decode"]

    image.write_bytes(broken.getvalue())  # the upload, repaired
    summary = redrive(
        lake_path=str(lake), stage="decode", options=RunOptions(dask_address=_address())
    )
    assert summary["modalities"] == {"image": {"landed": 1, "quarantined": 0}}
    assert query(lake, "SELECT count(*) FROM quarantine") == [(0,)]
    assert query(lake, "SELECT count(*) FROM image_features") == [(2,)]
    assert query(lake, "SELECT status, count(*) FROM objects GROUP BY ALL ORDER BY ALL") == [
        ("landed", 6),
        ("superseded", 1),
    ]


def test_an_existing_cluster_by_address_lands_the_same_rows_as_the_default_threads(
    source, tmp_path
) -> None:
    by_address = tmp_path / "by-address"
    default = tmp_path / "default"
    run(source, by_address)
    pipeline(source=str(source), lake_path=str(default))  # threads of this process
    for table in ("objects", "image_features", "text_features", "audio_features", "fused"):
        key = "sample_id" if table == "fused" else "object_id"
        sql = f"SELECT {key}, embedding FROM {table} ORDER BY {key}"
        if table == "objects":
            sql = "SELECT object_id, status FROM objects ORDER BY object_id"
        left, right = query(by_address, sql), query(default, sql)
        assert [r[0] for r in left] == [r[0] for r in right], table
        if table != "objects":
            assert np.allclose([r[1] for r in left], [r[1] for r in right], atol=1e-5), table
