"""Helpers for the incremental-engine tests: run the flow on a copy, compare two lakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from blocks.settings import RunOptions
from flows.pipeline import pipeline
from tasks.lake import store
from tasks.lake.tables import TABLES

# Columns that say when or by which run a row landed: they differ between two runs.
LINEAGE = {"flow_run_id", "landed_at", "discovered_at", "quarantined_at"}
COMPARED = ("objects", "members", "image_features", "text_features", "audio_features",
            "video_features", "timeseries_features", "fused", "quarantine", "model_sets")  # fmt: skip


def run(source: Path, lake: Path, **options: object) -> dict:
    return pipeline(
        source=str(source),
        lake_path=str(lake),
        options=RunOptions(inline_max_objects=100, **options),  # type: ignore[arg-type]
    )


def table(lake: Path, name: str) -> pl.DataFrame:
    """A view's rows without lineage, in key order: what two equivalent lakes agree on."""
    with store.connect(lake, TABLES) as con:
        frame = con.sql(f"SELECT * FROM {name}").pl()
    frame = frame.drop([c for c in frame.columns if c in LINEAGE])
    return frame.sort([c for c in frame.columns if frame.schema[c] == pl.String()])


def assert_same_lake(lake: Path, expected: Path) -> None:
    for name in COMPARED:
        got, want = table(lake, name), table(expected, name)
        assert got.columns == want.columns, name
        assert got.height == want.height, name
        for column in got.columns:
            left, right = got[column].to_list(), want[column].to_list()
            if (
                got.schema[column] in (pl.Float32, pl.Float64)
                or "embedding" in column
                or (
                    isinstance(got.schema[column], pl.List | pl.Array)
                    and got.schema[column].inner.is_float()  # type: ignore[union-attr]
                )
            ):
                for a, b in zip(left, right, strict=True):
                    if a is None or b is None:
                        assert a == b, (name, column)
                    else:
                        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{name}.{column}")
            else:
                assert left == right, (name, column)
