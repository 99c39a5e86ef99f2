"""What a run cost: CPU and wall seconds of the stages the flow runs, and a run's summary."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import polars as pl

from tasks.lake import store
from tasks.lake.store import rows_frame
from tasks.lake.tables import COSTS


class CostLog:
    """CPU and wall seconds of the stages the flow itself runs (per table or per run)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.rows: list[dict[str, Any]] = []

    @contextmanager
    def measure(self, stage: str, modality: str | None = None) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.rows.append(
                {"modality": modality, "object_id": None, "stage": stage,
                 "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                 "flow_run_id": self.run_id, "landed_at": datetime.now(UTC)}
            )  # fmt: skip

    def frame(self) -> pl.DataFrame:
        return rows_frame(self.rows, COSTS)


def summarise_costs(lake_path: str, run_id: str) -> dict[str, dict[str, float | None]]:
    """CPU seconds per stage for one run, in total and per object where measured per object."""
    files = store.parts(lake_path, "costs")
    if not files:
        return {}
    frame = pl.scan_parquet(files).filter(pl.col("flow_run_id") == run_id).collect()
    summary = frame.group_by("stage").agg(
        cpu_s=pl.col("cpu_s").sum(),
        objects=pl.col("object_id").drop_nulls().n_unique(),
    )
    return {
        row["stage"]: {
            "cpu_s": round(row["cpu_s"], 3),
            "cpu_s_per_object": round(row["cpu_s"] / row["objects"], 4) if row["objects"] else None,
        }
        for row in summary.sort("stage").iter_rows(named=True)
    }
