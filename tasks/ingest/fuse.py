"""Fuse each sample's per-modality embeddings into one vector with a presence mask.

The fused vector is the concatenation of one slot per modality, in ``MODALITIES`` order
(image, text, audio, video, timeseries). A slot holds the mean of that modality's
embeddings in the sample, L2-normalised; a missing modality's slot is zeros. The whole
vector is divided by sqrt(number of present slots), so it has unit length and the cosine
similarity of two samples is the mean similarity of the modalities they share, counted
over the modalities either has.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tasks.common import MODALITIES, l2_normalise, release_memory
from tasks.ingest.plan import member_rows_sql
from tasks.lake.store import rows_frame
from tasks.lake.tables import FUSED
from tasks.media.identity import ModelSet

if TYPE_CHECKING:
    import duckdb


def load_sample_embeddings(
    con: duckdb.DuckDBPyConnection, sample_ids: list[str], model_set: ModelSet
) -> pl.DataFrame:
    """The embeddings each sample is fused from, through its members (URIs), under the set's
    model keys: columns sample_id, modality, object_id, embedding."""
    rows, params = member_rows_sql(model_set, "object_id, embedding::FLOAT[] AS embedding")
    query = (
        f"SELECT sample_id, modality, object_id, embedding FROM ({rows}) "
        "WHERE list_contains(?, sample_id) ORDER BY sample_id, modality, object_id"
    )
    return con.sql(query, params=[*params, sample_ids]).pl()


# Samples fused per step: their embeddings pass through Python lists (rows of floats),
# which cost tens of times their size; a step bounds that to tens of megabytes.
FUSE_STEP = 500


def fuse_from_lake(
    con: duckdb.DuckDBPyConnection,
    fingerprints: dict[str, str],
    model_set: ModelSet,
    flow_run_id: str,
    step: int = FUSE_STEP,
) -> pl.DataFrame:
    """Fuse the samples of ``fingerprints`` from the lake's embeddings, ``step`` at a time."""
    samples = sorted(fingerprints)
    frames = [
        fuse_samples(
            load_sample_embeddings(con, samples[start : start + step], model_set),
            model_set,
            fingerprints,
            flow_run_id,
        )
        for start in range(0, len(samples), step)
    ]
    release_memory()  # the steps' Python lists
    return pl.concat(frames) if frames else rows_frame([], FUSED)


def fuse_samples(
    embeddings: pl.DataFrame,
    model_set: ModelSet,
    fingerprints: dict[str, str],
    flow_run_id: str,
) -> pl.DataFrame:
    """One fused row per sample in ``embeddings`` (columns sample_id, modality, object_id, embedding).

    A slot is present when the sample has embeddings of that modality under the set's
    model; its length is whatever they hold, so a mismatch fails the fused suite rather
    than being dropped quietly. ``fingerprints`` gives each sample's input fingerprint.
    """
    now = datetime.now(UTC)
    slot_dims = model_set.dims
    lineage = ";".join(f"{s.modality}={s.model_id}" for s in model_set.slots)
    # Grouped in Python over plain lists: a frame filter per sample and modality costs
    # a query each, and a run fuses thousands of samples.
    by_sample: dict[str, dict[str, list[list[float]]]] = {}
    objects: dict[str, list[str]] = {}
    columns = (embeddings[c].to_list() for c in ("sample_id", "modality", "object_id", "embedding"))
    for sample_id, modality, object_id, vector in zip(*columns, strict=True):
        by_sample.setdefault(sample_id, {}).setdefault(modality, []).append(vector)
        objects.setdefault(sample_id, []).append(object_id)
    rows = []
    for sample_id, vectors in by_sample.items():
        slots: dict[str, np.ndarray | None] = {
            m: l2_normalise(np.mean(np.asarray(vectors[m], np.float32), axis=0))
            if vectors.get(m) else None
            for m in MODALITIES
        }  # fmt: skip
        present = [m for m in MODALITIES if slots[m] is not None]
        if not present:
            continue
        fused = np.concatenate(
            [slots[m] if slots[m] is not None else np.zeros(slot_dims[m], np.float32)
             for m in MODALITIES]
        ) / np.sqrt(len(present))  # fmt: skip
        rows.append(
            {
                "sample_id": sample_id,
                "embedding": fused.astype(np.float32).tolist(),
                "embedding_dim": int(fused.shape[0]),
                "modalities": present,
                **{f"has_{m}": slots[m] is not None for m in MODALITIES},
                **{
                    f"{m}_embedding": (slots[m].tolist() if slots[m] is not None else None)  # type: ignore[union-attr]
                    for m in MODALITIES
                },
                "object_ids": sorted(objects[sample_id]),
                "n_objects": len(objects[sample_id]),
                "model_id": lineage,
                "model_set": model_set.key,
                "input_fingerprint": fingerprints[sample_id],
                "flow_run_id": flow_run_id,
                "landed_at": now,
            }
        )
    return rows_frame(rows, FUSED)
