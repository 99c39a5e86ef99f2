"""A small lake written straight from the table contracts: known rows, known vectors, two runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

from tasks.lake.store import rows_frame, write_part
from tasks.lake.tables import TABLES

RUN_1, RUN_2 = "run-1", "run-2"
T1 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=1, hours=2)
TEXT_MODEL = "test/text-3d"
MODEL_SET = "test-set"
SLOT_DIMS = {"image": 4, "text": 3, "audio": 2, "video": 4, "timeseries": 16}
COSTS_SCHEMA: dict[str, pl.DataType] = {
    "modality": pl.String(),
    "object_id": pl.String(),
    "stage": pl.String(),
    "cpu_s": pl.Float64(),
    "wall_s": pl.Float64(),
    "flow_run_id": pl.String(),
    "landed_at": pl.Datetime("us", "UTC"),
}
# Fused vectors chosen so the nearest samples are known: to s0, s1 scores 0.8, s2 and s3 0.
FUSED_VECTORS = {
    "s0": [1.0, 0.0, 0.0],
    "s1": [0.8, 0.6, 0.0],
    "s2": [0.0, 1.0, 0.0],
    "s3": [0.0, 0.0, 1.0],
}
# Text vectors: to the query [1, 0, 0], s0 scores 1, s3 0.6, s2 0.
TEXT_VECTORS = {"s0": [1.0, 0.0, 0.0], "s2": [0.0, 1.0, 0.0], "s3": [0.6, 0.8, 0.0]}
SAMPLE_MODALITIES = {
    "s0": ["image", "text"],
    "s1": ["image", "audio"],
    "s2": ["text", "video"],
    "s3": ["text"],
}


def _object(
    object_id: str, sample_id: str, modality: str, status: str, run: str, at: datetime
) -> dict[str, Any]:
    return {
        "object_id": object_id,
        "uri": f"/data/{sample_id}/{object_id}.{modality}",
        "sample_id": sample_id,
        "modality": modality,
        "media_type": f"{modality}/test",
        "size_bytes": 1000 + len(object_id),
        "discovered_at": at,
        "status": status,
        "flow_run_id": run,
        "landed_at": at,
    }


def _features(obj: dict[str, Any], embedding: list[float], **features: Any) -> dict[str, Any]:
    return {
        **{k: obj[k] for k in ("object_id", "sample_id", "modality", "uri", "media_type")},
        "size_bytes": obj["size_bytes"],
        **features,
        "embedding": embedding,
        "embedding_dim": len(embedding),
        "model_id": TEXT_MODEL if obj["modality"] == "text" else f"test/{obj['modality']}",
        "flow_run_id": obj["flow_run_id"],
        "landed_at": obj["landed_at"],
    }


def make_lake(root: Path, costs: bool = True) -> Path:
    """Write the lake under ``root``: run-1 lands s0-s2 and quarantines two bad objects; run-2
    lands s3 and re-lands one of the bad objects (it leaves quarantine)."""
    objects_1, objects_2 = [], []
    features: dict[str, list[dict[str, Any]]] = {m: [] for m in ("image", "text", "audio", "video")}
    for sample, modalities in SAMPLE_MODALITIES.items():
        run, at = (RUN_2, T2) if sample == "s3" else (RUN_1, T1)
        for modality in modalities:
            obj = _object(f"{sample}-{modality}", sample, modality, "landed", run, at)
            (objects_2 if run == RUN_2 else objects_1).append(obj)
            if modality == "image":
                size = (640, 480) if sample == "s0" else (32, 32)
                # NaN where a measurement failed: answers must turn it into null.
                sharpness = float("nan") if sample == "s1" else 12.5
                row = _features(
                    obj, [1.0, 0.0, 0.0, 0.0], width=size[0], height=size[1], sharpness=sharpness
                )
            elif modality == "text":
                row = _features(
                    obj, TEXT_VECTORS[sample], chars=40, words=8, lines=1, preview=f"about {sample}"
                )
            elif modality == "audio":
                row = _features(obj, [0.0, 1.0], duration_s=2.5, sample_rate=16000, channels=1)
            else:
                row = _features(
                    obj,
                    [0.0, 0.0, 1.0, 0.0],
                    duration_s=2.0,
                    width=64,
                    height=48,
                    audio_embedding=[0.5, 0.5],
                )
            features[modality].append(row)
    bad_decode = _object("bad-decode", "_bad", "image", "quarantined", RUN_1, T1)
    bad_sniff = _object("bad-sniff", "_bad", "unknown", "quarantined", RUN_1, T1)
    objects_1 += [bad_decode, bad_sniff]
    relanded = _object("bad-decode", "_bad", "image", "landed", RUN_2, T2)
    objects_2.append(relanded)
    features["image"].append(_features(relanded, [0.0, 1.0, 0.0, 0.0], width=10, height=10))
    quarantine = [
        {**{k: o[k] for k in ("object_id", "uri", "sample_id", "modality")}, "stage": stage,
         "reason": reason, "quarantined_at": T1, "flow_run_id": RUN_1, "landed_at": T1}
        for o, stage, reason in (
            (bad_decode, "decode", "corrupt or truncated image: 41 bytes missing"),
            (bad_sniff, "sniff", "Unrecognised content: no known media signature"),
        )
    ]  # fmt: skip
    fused = [
        {
            "sample_id": sample,
            "embedding": FUSED_VECTORS[sample],
            "embedding_dim": 3,
            "modalities": modalities,
            **{
                f"has_{m}": m in modalities
                for m in ("image", "text", "audio", "video", "timeseries")
            },
            "image_embedding": [1.0, 0.0, 0.0, 0.0] if "image" in modalities else None,
            "object_ids": [f"{sample}-{m}" for m in modalities],
            "n_objects": len(modalities),
            "model_id": "test",
            "model_set": MODEL_SET,
            "flow_run_id": RUN_2 if sample == "s3" else RUN_1,
            "landed_at": T2 if sample == "s3" else T1,
        }
        for sample, modalities in SAMPLE_MODALITIES.items()
    ]

    def write(table: str, rows: list[dict[str, Any]], part: str) -> None:
        write_part(root, table, rows_frame(rows, TABLES[table].schema), part)

    write("objects", objects_1, RUN_1)
    write("objects", objects_2, RUN_2)
    for modality, rows in features.items():
        write(f"{modality}_features", rows, modality)
    write("quarantine", quarantine, RUN_1)
    write(
        "model_sets",
        [{"model_set": MODEL_SET, "modality": m, "model_id": f"test/{m}", "embedding_dim": d,
          "model_key": f"test/{m}", "flow_run_id": RUN_1, "landed_at": T1}
         for m, d in SLOT_DIMS.items()],
        RUN_1,
    )  # fmt: skip
    write("fused", [f for f in fused if f["flow_run_id"] == RUN_1], RUN_1)
    write("fused", [f for f in fused if f["flow_run_id"] == RUN_2], RUN_2)
    if costs:
        rows = [
            {"modality": m, "object_id": None, "stage": stage, "cpu_s": cpu, "wall_s": cpu * 1.5,
             "flow_run_id": RUN_1, "landed_at": T1}
            for m, stage, cpu in (("image", "decode", 0.4), ("image", "embed", 1.2),
                                  ("text", "embed", 0.8), ("fused", "fuse", 0.1))
        ]  # fmt: skip
        write_part(root, "costs", rows_frame(rows, COSTS_SCHEMA), RUN_1)
    return root


@pytest.fixture(scope="session")
def tiny_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lake of ``make_lake``, with costs; tests must not modify it."""
    return make_lake(tmp_path_factory.mktemp("tiny-lake"))


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    """What the tiny lake holds (runs, times, the text model) and ``make`` to write another."""
    return SimpleNamespace(
        RUN_1=RUN_1, RUN_2=RUN_2, T1=T1, T2=T2, TEXT_MODEL=TEXT_MODEL, make=make_lake
    )
