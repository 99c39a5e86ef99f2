"""The whole pipeline over an ``s3://`` source: moto's standalone server on 127.0.0.1 as the
endpoint, the session's Prefect test API, and a real local Dask cluster whose worker
processes read the objects themselves.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from moto.server import ThreadedMotoServer

from blocks.settings import RunOptions
from flows.pipeline import pipeline
from tasks.common import MODALITIES
from tasks.lake import storage
from tasks.lake.store import CATALOG_FILE

pytestmark = pytest.mark.integration

BUCKET = "braid-source"
SAMPLES = ("sample-0000", "sample-0001")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def quarantine(lake: Path) -> dict[str, tuple[str, str]]:
    """File name → (stage, reason) of every quarantined object."""
    with duckdb.connect(str(lake / CATALOG_FILE), read_only=True) as con:
        rows = con.execute("SELECT uri, stage, reason FROM quarantine").fetchall()
    return {uri.rsplit("/", 1)[-1]: (stage, reason) for uri, stage, reason in rows}


def uris(lake: Path, table: str) -> list[str]:
    with duckdb.connect(str(lake / CATALOG_FILE), read_only=True) as con:
        return [row[0] for row in con.execute(f"SELECT uri FROM {table}").fetchall()]


@pytest.fixture(scope="module")
def runs(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two samples and _bad/ in a bucket: a run, a re-run, and the same files run as a folder."""
    folder = tmp_path_factory.mktemp("source")
    for name in (*SAMPLES, "_bad"):
        shutil.copytree(sample_dir / name, folder / name)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # Set before the pipeline starts its Dask cluster, so the worker processes inherit them.
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", storage.CREDENTIALS_BLOCK_ENV):
            env.delenv(name, raising=False)
        storage.reset_s3_clients()
        try:
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    key = f"landing/{path.relative_to(folder).as_posix()}"
                    s3.upload_file(str(path), BUCKET, key)
            s3_lake = tmp_path_factory.mktemp("s3-lake")
            source = f"s3://{BUCKET}/landing"
            first = pipeline(
                source=source, lake_path=str(s3_lake), options=RunOptions(dask_workers=1)
            )
            second = pipeline(
                source=source, lake_path=str(s3_lake), options=RunOptions(dask_workers=1)
            )
            folder_lake = tmp_path_factory.mktemp("folder-lake")
            local = pipeline(source=str(folder), lake_path=str(folder_lake))  # threads
            yield {
                "first": first,
                "second": second,
                "local": local,
                "lake": s3_lake,
                "folder_lake": folder_lake,
            }
        finally:
            storage.reset_s3_clients()
            server.stop()


def test_every_modality_lands_from_the_bucket(runs: dict[str, Any]) -> None:
    first = runs["first"]
    for modality in MODALITIES:
        assert first["modalities"][modality]["landed"] == len(SAMPLES), modality
    assert first["samples_fused"] == len(SAMPLES)
    assert first["modalities"] == runs["local"]["modalities"]


def test_bad_objects_are_quarantined_at_the_same_stage_as_from_a_folder(
    runs: dict[str, Any], sample_dir: Path
) -> None:
    from_bucket = quarantine(runs["lake"])
    from_folder = quarantine(runs["folder_lake"])
    bad = {path.name for path in (sample_dir / "_bad").iterdir()}

    assert set(from_bucket) == bad
    assert from_bucket == from_folder  # same stage and same reason for every file


def test_lineage_keeps_the_s3_uris(runs: dict[str, Any]) -> None:
    for table in ("objects", "quarantine", "image_features", "text_features"):
        values = uris(runs["lake"], table)
        assert values, table
        assert all(uri.startswith(f"s3://{BUCKET}/landing/") for uri in values), table
    with duckdb.connect(str(runs["lake"] / CATALOG_FILE), read_only=True) as con:
        samples = {row[0] for row in con.execute("SELECT DISTINCT sample_id FROM fused").fetchall()}
    assert samples == set(SAMPLES)


def test_rerun_over_the_bucket_lands_nothing_new(runs: dict[str, Any]) -> None:
    first, second = runs["first"], runs["second"]
    assert second["new"] == 0
    assert second["known"] == first["new"]
    assert second["modalities"] == {}
