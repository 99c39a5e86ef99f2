"""Landing rules: which rows of a validated table land where, and in what order.

Within a table's landing the ``objects`` part is written last: an object counts as
processed only once everything it produced is visible. Nothing here remembers a run:
what is landed is what the next run's plan (``tasks.ingest.plan``) reads back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from tasks.common import MODALITIES
from tasks.ingest.extract import BatchResult, rejected_at_discovery, validation_rejects
from tasks.ingest.plan import MODEL_DEPENDENT_STAGES, fused_quarantine_key
from tasks.lake import store
from tasks.lake.store import rows_frame
from tasks.lake.tables import MODEL_SETS, feature_table
from tasks.media.identity import ModelSet, SlotModel


@dataclass
class Checked:
    """A table's rows after its quality gate, as plain data: what passed, what failed and why."""

    passed: pl.DataFrame
    failed: pl.DataFrame  # the failing rows, with a ``reason`` column
    policy: str  # quarantine | fail | warn
    blocks_landing: bool  # policy fail and some row failed: nothing of the table lands
    results: pl.DataFrame  # one row per expectation, for the ``validations`` table


def stamp_identity(frame: pl.DataFrame, slot: SlotModel) -> pl.DataFrame:
    """Add what computed a modality's feature rows: revision, feature version, model key."""
    return frame.with_columns(
        model_revision=pl.lit(slot.model_revision, pl.String()),
        feature_version=pl.lit(slot.feature_version, pl.Int32()),
        model_key=pl.lit(slot.key, pl.String()),
    )


def stamp_quarantine(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """Mark the model key on quarantine rows whose stage depends on the model."""
    return frame.with_columns(
        model_key=pl.when(pl.col("stage").is_in(list(MODEL_DEPENDENT_STAGES)))
        .then(pl.lit(key))
        .otherwise(pl.col("model_key"))
    )


def land_features(
    lake: str, modality: str, results: list[BatchResult], checked: Checked, slot: SlotModel,
    run_id: str,
) -> Counter[str]:  # fmt: skip
    """Land a modality's validated rows (stamped with what computed them), its quarantine,
    validations, costs and objects."""
    quarantine = [r.quarantine for r in results]
    objects = pl.concat([r.objects for r in results])
    if checked.blocks_landing:
        # Nothing of the table lands; its good objects stay unlanded, so the next run retries them.
        objects = objects.filter(pl.col("status") == "quarantined")
    elif checked.policy == "quarantine" and not checked.failed.is_empty():
        quarantine.append(validation_rejects(checked.failed, run_id))
        failed_ids = checked.failed["object_id"].implode()
        objects = objects.with_columns(
            status=pl.when(pl.col("object_id").is_in(failed_ids))
            .then(pl.lit("quarantined"))
            .otherwise(pl.col("status"))
        )
    quarantined = stamp_quarantine(pl.concat(quarantine), slot.key)
    part = f"{run_id}-{modality}"
    features = stamp_identity(checked.passed, slot)
    store.write_part(lake, feature_table(modality), features, part)
    store.write_part(lake, "quarantine", quarantined, part)
    store.write_part(lake, "validations", checked.results, part)
    store.write_part(lake, "costs", pl.concat([r.costs for r in results]), part)
    store.write_part(lake, "objects", objects, part)
    return Counter(landed=checked.passed.height, quarantined=quarantined.height)


def land_rejections(lake: str, rejected: list[dict[str, Any]], run_id: str) -> Counter[str]:
    """Land what discovery refused (empty, unknown, mislabelled) straight to quarantine."""
    if not rejected:
        return Counter()
    result = rejected_at_discovery(rejected, run_id)
    store.write_part(lake, "quarantine", result.quarantine, f"{run_id}-discover")
    store.write_part(lake, "objects", result.objects, f"{run_id}-discover")
    return Counter(item["modality"] for item in rejected)


def land_members(lake: str, members: pl.DataFrame, run_id: str) -> int:
    """Record which URIs (and so which objects) belong to which samples."""
    store.write_part(lake, "members", members, f"{run_id}-members")
    return members.height


def land_fused(
    lake: str, checked: Checked, fingerprints: dict[str, str], model_set: ModelSet, run_id: str
) -> int:
    """Land the fused rows that passed; failing samples go to quarantine under their sample id,
    marked with the inputs they failed on so the next run does not fuse them again for nothing."""
    store.write_part(lake, "fused", checked.passed, run_id)
    if checked.policy == "quarantine" and not checked.failed.is_empty():
        rejects = validation_rejects(checked.failed, run_id).with_columns(
            model_key=pl.col("sample_id").replace_strict(
                {s: fused_quarantine_key(model_set.key, f) for s, f in fingerprints.items()},
                default=None,
                return_dtype=pl.String(),
            )
        )
        store.write_part(lake, "quarantine", rejects, f"{run_id}-fused")
    store.write_part(lake, "validations", checked.results, f"{run_id}-fused")
    return checked.passed.height


def land_model_set(lake: str, model_set: ModelSet, current: str | None, run_id: str) -> bool:
    """Make ``model_set`` the lake's current set, unless it already is; True if it was written."""
    if current == model_set.key:
        return False
    now = datetime.now(UTC)
    rows = [{**row, "flow_run_id": run_id, "landed_at": now} for row in model_set.rows()]
    store.write_part(lake, "model_sets", rows_frame(rows, MODEL_SETS), f"{run_id}-model-set")
    return True


def landing_events(
    lake: str, run_id: str, counts: dict[str, dict[str, int]], samples: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """The downstream events of a run: ``braid.batch.landed`` per feature table that landed
    rows, ``braid.sample.landed`` per fused sample (``event``, ``resource``, ``payload`` each)."""
    lake_uri = str(Path(lake).resolve()) if "://" not in lake else lake
    per_modality = {m: c.get("landed", 0) for m, c in counts.items()}
    quarantined = sum(c.get("quarantined", 0) for c in counts.values())
    events: list[dict[str, Any]] = []
    for modality, landed in per_modality.items():
        if modality not in MODALITIES or not landed:
            continue
        table = feature_table(modality)
        events.append({
            "event": "braid.batch.landed",
            "resource": {"prefect.resource.id": f"braid.lake.{table}", "prefect.resource.name": table},
            "payload": {"flow_run_id": run_id, "table": table, "landed": landed,
                        "counts": per_modality, "quarantined": quarantined, "lake": lake_uri},
        })  # fmt: skip
    for sample_id, modalities in samples.items():
        events.append({
            "event": "braid.sample.landed",
            "resource": {"prefect.resource.id": f"braid.sample.{sample_id}", "prefect.resource.name": sample_id},
            "payload": {"flow_run_id": run_id, "sample_id": sample_id, "modalities": modalities,
                        "lake": lake_uri},
        })  # fmt: skip
    return events
