"""Landing rules as plain functions: downstream events, the current model set, identity stamps."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.ingest.land import land_model_set, landing_events, stamp_identity, stamp_quarantine
from tasks.lake import store
from tasks.media.identity import ModelSet, SlotModel

MODEL_SET = ModelSet(
    (SlotModel("image", "m-image", "rev-1", 2, 4, "key-image"),
     SlotModel("text", "m-text", "rev-2", 1, 3, "key-text")),
    "set-1",
)  # fmt: skip


def test_events_name_each_table_that_landed_rows_and_each_fused_sample(tmp_path: Path) -> None:
    counts = {"image": {"landed": 2, "quarantined": 1}, "text": {"landed": 0, "quarantined": 0},
              "unknown": {"quarantined": 3}}  # fmt: skip
    events = landing_events(str(tmp_path), "run-1", counts, {"s1": ["image"]})
    assert [(e["event"], e["resource"]["prefect.resource.id"]) for e in events] == [
        ("braid.batch.landed", "braid.lake.image_features"),
        ("braid.sample.landed", "braid.sample.s1"),
    ]
    batch = events[0]["payload"]
    assert (batch["landed"], batch["quarantined"], batch["lake"]) == (2, 4, str(tmp_path.resolve()))
    assert landing_events("s3://b/lake", "run-1", {}, {}) == []


def test_a_model_set_is_written_only_when_it_is_not_already_current(tmp_path: Path) -> None:
    assert land_model_set(str(tmp_path), MODEL_SET, None, "run-1") is True
    assert land_model_set(str(tmp_path), MODEL_SET, "set-1", "run-2") is False
    rows = pl.read_parquet(store.parts(tmp_path, "model_sets"))
    assert rows.select("model_set", "modality", "model_key", "embedding_dim").rows() == [
        ("set-1", "image", "key-image", 4),
        ("set-1", "text", "key-text", 3),
    ]


def test_rows_are_stamped_with_what_computed_them() -> None:
    slot = MODEL_SET.slot("image")
    stamped = stamp_identity(pl.DataFrame({"object_id": ["a"]}), slot)
    assert stamped.row(0) == ("a", "rev-1", 2, "key-image")
    quarantine = pl.DataFrame(
        {"stage": ["decode", "embed", "validate"], "model_key": [None, None, None]},
        schema={"stage": pl.String, "model_key": pl.String},
    )
    # Only stages whose outcome depends on the model carry its key.
    assert stamp_quarantine(quarantine, "key-image")["model_key"].to_list() == [
        None, "key-image", "key-image",
    ]  # fmt: skip
