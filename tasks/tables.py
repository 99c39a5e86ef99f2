"""The lake's contract: every table's columns, types and key, in one place.

Feature tables share an identity and lineage frame around each modality's own columns
(declared next to the code that computes them, as ``FEATURE_SCHEMA``).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from tasks import audio, image, text, timeseries, video
from tasks.common import MODALITIES

LINEAGE: dict[str, pl.DataType] = {
    "flow_run_id": pl.String(),
    "landed_at": pl.Datetime("us", "UTC"),
}

IDENTITY: dict[str, pl.DataType] = {
    "object_id": pl.String(),
    "sample_id": pl.String(),
    "modality": pl.String(),
    "uri": pl.String(),
    "media_type": pl.String(),
    "size_bytes": pl.Int64(),
}

EMBEDDING: dict[str, pl.DataType] = {
    "embedding": pl.List(pl.Float32()),
    "embedding_dim": pl.Int32(),
    "model_id": pl.String(),
}

OBJECTS: dict[str, pl.DataType] = {
    "object_id": pl.String(),
    "uri": pl.String(),
    "sample_id": pl.String(),
    "modality": pl.String(),
    "media_type": pl.String(),
    "size_bytes": pl.Int64(),
    "discovered_at": pl.Datetime("us", "UTC"),
    "status": pl.String(),  # landed | quarantined
    **LINEAGE,
}

QUARANTINE: dict[str, pl.DataType] = {
    "object_id": pl.String(),
    "uri": pl.String(),
    "sample_id": pl.String(),
    "modality": pl.String(),
    "stage": pl.String(),  # discover | sniff | read | decode | embed | validate
    "reason": pl.String(),
    "quarantined_at": pl.Datetime("us", "UTC"),
    **LINEAGE,
}

FUSED: dict[str, pl.DataType] = {
    "sample_id": pl.String(),
    "embedding": pl.List(pl.Float32()),
    "embedding_dim": pl.Int32(),
    "modalities": pl.List(pl.String()),
    **{f"has_{m}": pl.Boolean() for m in MODALITIES},
    **{f"{m}_embedding": pl.List(pl.Float32()) for m in MODALITIES},
    "object_ids": pl.List(pl.String()),
    "n_objects": pl.Int32(),
    "model_id": pl.String(),
    **LINEAGE,
}

FEATURE_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "image": image.FEATURE_SCHEMA,
    "text": text.FEATURE_SCHEMA,
    "audio": audio.FEATURE_SCHEMA,
    "video": video.FEATURE_SCHEMA,
    "timeseries": timeseries.FEATURE_SCHEMA,
}


VALIDATIONS: dict[str, pl.DataType] = {
    "table_name": pl.String(),
    "expectation": pl.String(),
    "success": pl.Boolean(),
    "element_count": pl.Int64(),
    "unexpected_count": pl.Int64(),
    "policy": pl.String(),
    "validated_at": pl.Datetime("us", "UTC"),
    **LINEAGE,
}


COSTS: dict[str, pl.DataType] = {
    "modality": pl.String(),
    "object_id": pl.String(),  # null for a stage measured per table or per run
    "stage": pl.String(),  # discover | decode | embed | validate | land | fuse
    "cpu_s": pl.Float64(),
    "wall_s": pl.Float64(),
    **LINEAGE,
}


@dataclass(frozen=True)
class Table:
    """A table's columns, the key its view keeps unique, and an optional filter for the view."""

    schema: dict[str, pl.DataType]
    key: tuple[str, ...]
    where: str | None = None


def feature_table(modality: str) -> str:
    """The table a modality's features land in."""
    return f"{modality}_features"


TABLES: dict[str, Table] = {
    "objects": Table(OBJECTS, ("object_id",)),
    **{
        feature_table(m): Table(
            {**IDENTITY, **FEATURE_COLUMNS[m], **EMBEDDING, **LINEAGE}, ("object_id", "model_id")
        )
        for m in MODALITIES
    },
    "fused": Table(FUSED, ("sample_id",)),
    # Created after objects and fused, whose views it reads. One current reason per
    # object: an object that landed (or was replaced) since it was quarantined leaves
    # quarantine, as does a sample fused since its fusion failed. History stays in Parquet.
    "quarantine": Table(
        QUARANTINE,
        ("object_id",),
        where=(
            "NOT EXISTS (SELECT 1 FROM objects AS o WHERE o.object_id = q.object_id"
            " AND o.status IN ('landed', 'superseded') AND o.landed_at > q.landed_at)"
            " AND NOT EXISTS (SELECT 1 FROM fused AS f WHERE q.modality = 'fused'"
            " AND f.sample_id = q.sample_id AND f.landed_at > q.landed_at)"
        ),
    ),
    "validations": Table(VALIDATIONS, ("flow_run_id", "table_name", "expectation")),
    "costs": Table(COSTS, ("flow_run_id", "modality", "object_id", "stage")),
}
