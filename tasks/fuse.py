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
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from tasks.common import MODALITIES, l2_normalise
from tasks.lake import rows_frame
from tasks.tables import FUSED, TABLES, feature_table

if TYPE_CHECKING:
    import duckdb


def load_sample_embeddings(
    con: duckdb.DuckDBPyConnection, sample_ids: list[str], model_ids: dict[str, str]
) -> pl.DataFrame:
    """Every landed embedding of the given samples made by the configured models."""
    selects = []
    params: list[Any] = []
    for modality in MODALITIES:
        table = feature_table(modality)
        if table not in TABLES:
            continue
        selects.append(
            f"SELECT sample_id, '{modality}' AS modality, object_id, "
            f"embedding::FLOAT[] AS embedding FROM {table} "
            "WHERE model_id = ? AND list_contains(?, sample_id)"
        )
        params += [model_ids[modality], sample_ids]
    query = " UNION ALL ".join(selects) + " ORDER BY sample_id, modality, object_id"
    return con.sql(query, params=params).pl()


def fuse_samples(
    embeddings: pl.DataFrame,
    slot_dims: dict[str, int],
    model_ids: dict[str, str],
    flow_run_id: str,
) -> pl.DataFrame:
    """One fused row per sample in ``embeddings`` (columns sample_id, modality, object_id, embedding)."""
    now = datetime.now(UTC)
    lineage = ";".join(f"{m}={model_ids[m]}" for m in MODALITIES)
    rows = []
    for (sample_id,), group in embeddings.group_by("sample_id", maintain_order=True):
        slots: dict[str, np.ndarray | None] = {}
        for modality in MODALITIES:
            vectors = group.filter(pl.col("modality") == modality)["embedding"].to_list()
            if vectors and len(vectors[0]) == slot_dims[modality]:
                slots[modality] = l2_normalise(np.mean(np.asarray(vectors, np.float32), axis=0))
            else:
                slots[modality] = None
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
                "object_ids": sorted(group["object_id"].to_list()),
                "n_objects": group.height,
                "model_id": lineage,
                "flow_run_id": flow_run_id,
                "landed_at": now,
            }
        )
    return rows_frame(rows, FUSED)
