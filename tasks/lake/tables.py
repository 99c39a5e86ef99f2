"""The lake's contract: every table's columns, types and key, in one place.

Feature tables share an identity and lineage frame around each modality's own columns
(declared next to the code that computes them, as ``FEATURE_SCHEMA``).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from tasks.media import registry
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
    # What computed the row (see tasks.media.identity): the weights' revision, the feature
    # code's version, and the key of both that the row is stored under beside other models'.
    "model_revision": pl.String(),
    "feature_version": pl.Int32(),
    "model_key": pl.String(),
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
    # The model key the object was processed under, for stages whose outcome depends on
    # the model (embed, validate): another model tries the object again.
    "model_key": pl.String(),
    **LINEAGE,
}

# A sample's members are URIs: the same bytes under two samples are one object (extracted
# once) and a member of both.
MEMBERS: dict[str, pl.DataType] = {
    "uri": pl.String(),
    "sample_id": pl.String(),
    "object_id": pl.String(),
    "modality": pl.String(),
    **LINEAGE,
}

# One row per modality of each model set a run has used; the latest landed set is current.
MODEL_SETS: dict[str, pl.DataType] = {
    "model_set": pl.String(),
    "modality": pl.String(),
    "model_id": pl.String(),
    "model_revision": pl.String(),
    "feature_version": pl.Int32(),
    "embedding_dim": pl.Int32(),
    "model_key": pl.String(),
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
    "model_set": pl.String(),
    # A hash of the (modality, object, model key) inputs the row was fused from: a sample
    # whose inputs now hash otherwise (a new member, a crash before fusion) is re-fused.
    "input_fingerprint": pl.String(),
    **LINEAGE,
}

FEATURE_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    m: registry.modality(m).FEATURE_SCHEMA for m in MODALITIES
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
    # The view keeps the current model set's rows (with FLOAT[d] of that set's dimensions);
    # ``<table>_all`` keeps every set's.
    current_set: bool = False


def feature_table(modality: str) -> str:
    """The table a modality's features land in."""
    return f"{modality}_features"


TABLES: dict[str, Table] = {
    "objects": Table(OBJECTS, ("object_id",)),
    **{
        feature_table(m): Table(
            {**IDENTITY, **FEATURE_COLUMNS[m], **EMBEDDING, **LINEAGE}, ("object_id", "model_key")
        )
        for m in MODALITIES
    },
    "members": Table(MEMBERS, ("uri",)),
    "model_sets": Table(MODEL_SETS, ("model_set", "modality")),
    # Every model set's rows; the ``fused`` view shows the current set's (see store.create_views).
    "fused": Table(FUSED, ("sample_id", "model_set"), current_set=True),
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
