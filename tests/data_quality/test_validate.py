"""Quality gate: every suite passes good rows and names the expectation each bad row fails.

Frames are built with the lake's real table contracts, so a suite that reads a column
the contract lacks fails here rather than in a run. Bad rows are planted in one frame per
table and validated once (GX is slow to start, quick to run), then checked case by case.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from data_quality import validate
from data_quality.suites import SUITES, resolve
from data_quality.validate import Validation, build_docs, results_frame, to_markdown, validate_table
from tasks.common import MODALITIES, Limits
from tasks.lake.store import rows_frame
from tasks.lake.tables import TABLES, VALIDATIONS

T0 = datetime(2024, 1, 1, tzinfo=UTC)
# Distinct small lengths, so a vector of one modality's length is wrong for every other.
DIMS = {"image": 48, "text": 24, "audio": 40, "video": 16, "timeseries": 8}
MAX_PIXELS = 64_000_000
# What flows.pipeline.quality_params builds from the settings' defaults.
PARAMS: dict[str, Any] = {
    **{f"{m}_dim": d for m, d in DIMS.items()},
    "fused_dim": sum(DIMS.values()),
    "model_set": "set-1",
    "norm_tolerance": 1e-3,
    "max_duration_s": 600.0,
    "max_image_pixels": MAX_PIXELS,
    "max_video_frames": 32,
    "max_text_chars": Limits.max_text_chars,
    "sample_rates": [8000, 16000, 22050, 44100, 48000],
    "max_channels": 8,
    "min_fps": 1.0,
    "max_fps": 240.0,
}
FEATURE_TABLES = [f"{m}_features" for m in MODALITIES]

# Per-modality columns of a plausible, valid object.
GOOD: dict[str, dict[str, Any]] = {
    "image": {"width": 64, "height": 48, "format": "PNG", "mode": "RGB"},
    "text": {"chars": 120, "words": 20, "lines": 3, "preview": "a short note"},
    "audio": {"duration_s": 2.5, "sample_rate": 16000, "channels": 1},
    "video": {
        "duration_s": 3.0,
        "fps": 24.0,
        "width": 64,
        "height": 48,
        "codec": "h264",
        "frames_sampled": 3,
        "has_audio": False,
    },
    "timeseries": {
        "rows": 100,
        "channels": ["x", "y"],
        "duration_s": 99.0,
        "sample_rate_hz": 1.0,
        "start_time": datetime(2024, 1, 1, tzinfo=UTC),
        "end_time": datetime(2024, 1, 1, 0, 1, 39, tzinfo=UTC),
        "channel_mean": [0.5, -1.0],
        "channel_std": [1.0, 2.0],
    },
}


def label(kind: str, column: str) -> str:
    return f"expect_column_values_to_{kind}({column})"


UNIT = label("be_unit_vectors", "embedding")


def unit_vectors(n: int, dim: int, seed: int = 0) -> list[list[float]]:
    """``n`` random float32 vectors of L2 norm 1."""
    matrix = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).tolist()


def feature_rows(modality: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` valid rows of a modality's feature table."""
    return [
        {
            "object_id": f"{modality}-{i:05d}",
            "sample_id": f"s{i:05d}",
            "modality": modality,
            "uri": f"file:///data/s{i:05d}/{modality}.bin",
            "media_type": "application/octet-stream",
            "size_bytes": 1000 + i,
            **GOOD[modality],
            "embedding": vector,
            "embedding_dim": DIMS[modality],
            "model_id": f"{modality}-model",
            "flow_run_id": "run-1",
            "landed_at": T0,
        }
        for i, vector in enumerate(unit_vectors(n, DIMS[modality], seed))
    ]


def fused_row(sample_id: str, present: tuple[str, ...] = ("image", "audio")) -> dict[str, Any]:
    """A fused row the way tasks.ingest.fuse builds it: unit slots, zeros for absent modalities."""
    slots = {m: unit_vectors(1, DIMS[m], seed=len(sample_id))[0] for m in present}
    fused = np.concatenate(
        [np.asarray(slots.get(m, np.zeros(DIMS[m])), np.float32) for m in MODALITIES]
    ) / np.sqrt(len(present))
    return {
        "sample_id": sample_id,
        "embedding": fused.tolist(),
        "embedding_dim": fused.size,
        "modalities": list(present),
        **{f"has_{m}": m in present for m in MODALITIES},
        **{f"{m}_embedding": slots.get(m) for m in MODALITIES},
        "object_ids": [f"{sample_id}-{m}" for m in present],
        "n_objects": len(present),
        "model_id": "fusion",
        "model_set": "set-1",
        "input_fingerprint": f"inputs-of-{sample_id}",
        "flow_run_id": "run-1",
        "landed_at": T0,
    }


def good_frame(table: str, n: int = 5, seed: int = 0) -> pl.DataFrame:
    if table == "fused":
        rows = [fused_row(f"s{i}", MODALITIES[: 1 + i % len(MODALITIES)]) for i in range(n)]
    else:
        rows = feature_rows(table.removesuffix("_features"), n, seed)
    return rows_frame(rows, TABLES[table].schema)


def frame_with(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    return rows_frame(rows, TABLES[table].schema)


def reasons(validation: Validation, key: str = "object_id") -> dict[str, str]:
    return dict(validation.failed.select(key, "reason").iter_rows())


def labels_in(reason: str) -> set[str]:
    assert reason.startswith("failed expectations: ")
    return set(reason.removeprefix("failed expectations: ").split(", "))


# ---------------------------------------------------------------- planted bad rows

NAN = float("nan")
AUDIO_DIM = DIMS["audio"]


def _scaled(factor: float) -> list[float]:
    return [factor * x for x in unit_vectors(1, AUDIO_DIM, seed=7)[0]]


# case -> (table, column overrides on a good row, the exact labels the row must fail)
CASES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    # The custom embedding expectation.
    "embedding-nan": (
        "audio_features",
        {"embedding": [NAN, *_scaled(1.0)[1:]]},
        {UNIT, label("be_in_set", "_qc_finite")},
    ),
    "embedding-wrong-dim": ("audio_features", {"embedding": unit_vectors(1, 32)[0]}, {UNIT}),
    "embedding-zero": ("audio_features", {"embedding": [0.0] * AUDIO_DIM}, {UNIT}),
    "embedding-norm-2": ("audio_features", {"embedding": _scaled(2.0)}, {UNIT}),
    "embedding-null": ("audio_features", {"embedding": None}, {UNIT}),
    # Audio bounds.
    "duration-negative": (
        "audio_features",
        {"duration_s": -1.0},
        {label("be_between", "duration_s")},
    ),
    "duration-zero": ("audio_features", {"duration_s": 0.0}, {label("be_between", "duration_s")}),
    "duration-too-long": (
        "audio_features",
        {"duration_s": 600.5},
        {label("be_between", "duration_s")},
    ),
    "sample-rate-odd": (
        "audio_features",
        {"sample_rate": 12345},
        {label("be_in_set", "sample_rate")},
    ),
    "channels-zero": ("audio_features", {"channels": 0}, {label("be_between", "channels")}),
    "two-failures": (
        "audio_features",
        {"sample_rate": 12345, "channels": 0},
        {label("be_in_set", "sample_rate"), label("be_between", "channels")},
    ),
    # Keys and lineage, shared by every feature table.
    "sample-id-null": ("audio_features", {"sample_id": None}, {label("not_be_null", "sample_id")}),
    "uri-empty": (
        "audio_features",
        {"uri": ""},
        {"expect_column_value_lengths_to_be_between(uri)"},
    ),
    "uri-null": ("audio_features", {"uri": None}, {label("not_be_null", "uri")}),
    "modality-unknown": ("audio_features", {"modality": "smell"}, {label("be_in_set", "modality")}),
    "model-id-null": ("audio_features", {"model_id": None}, {label("not_be_null", "model_id")}),
    # Video.
    "fps-too-low": ("video_features", {"fps": 0.5}, {label("be_between", "fps")}),
    "fps-too-high": ("video_features", {"fps": 480.0}, {label("be_between", "fps")}),
    "video-too-many-pixels": (
        "video_features",
        {"width": 10_000, "height": 10_000},
        {label("be_between", "_qc_pixels")},
    ),
    "video-too-many-frames": (
        "video_features",
        {"frames_sampled": 33},
        {label("be_between", "frames_sampled")},
    ),
    "video-embedding-audio-dim": (
        "video_features",
        {"embedding": unit_vectors(1, DIMS["audio"])[0]},
        {UNIT},
    ),
    # Image: no width means no pixels either.
    "width-zero": (
        "image_features",
        {"width": 0},
        {label("be_between", "width"), label("be_between", "_qc_pixels")},
    ),
    "image-too-many-pixels": (
        "image_features",
        {"width": 9000, "height": 9000},
        {label("be_between", "_qc_pixels")},
    ),
    # Text and time series.
    "chars-zero": ("text_features", {"chars": 0}, {label("be_between", "chars")}),
    "chars-too-many": (
        "text_features",
        {"chars": Limits.max_text_chars + 1},
        {label("be_between", "chars")},
    ),
    "rows-one": ("timeseries_features", {"rows": 1}, {label("be_between", "rows")}),
    "rate-zero": (
        "timeseries_features",
        {"sample_rate_hz": 0.0},
        {label("be_between", "sample_rate_hz")},
    ),
    # Fused: the presence mask, the modality list and the fused vector.
    "has-audio-without-embedding": (
        "fused",
        {"audio_embedding": None},  # has_audio and modalities still say audio is there
        {label("be_in_set", "_qc_presence_consistent")},
    ),
    "modalities-missing-a-flagged-one": (
        "fused",
        {"modalities": ["image"]},  # has_audio and audio_embedding say audio is there
        {label("be_in_set", "_qc_presence_consistent")},
    ),
    "no-modalities": (
        "fused",
        {
            "modalities": [],
            **{f"has_{m}": False for m in MODALITIES},
            **{f"{m}_embedding": None for m in MODALITIES},
        },
        {label("be_between", "_qc_modality_count")},
    ),
    "modalities-null": (
        "fused",
        {"modalities": None},
        {
            label("be_between", "_qc_modality_count"),
            label("be_in_set", "_qc_modalities_known"),
            label("be_in_set", "_qc_presence_consistent"),
        },
    ),
    "modality-name-unknown": (
        "fused",
        {"modalities": ["image", "audio", "smell"]},
        {label("be_in_set", "_qc_modalities_known")},
    ),
    "slot-of-another-length": (
        "fused",
        {"image_embedding": unit_vectors(1, DIMS["image"] + 1)[0]},  # another model's image slot
        {label("be_in_set", "_qc_slots_match_set")},
    ),
    "row-of-another-model-set": (
        "fused",
        {"model_set": "set-0"},
        {label("be_in_set", "model_set")},
    ),
    "fused-embedding-one-slot": (
        "fused",
        {"embedding": unit_vectors(1, DIMS["image"])[0]},
        {UNIT},
    ),
}
GOOD_PER_TABLE = 4


def planted_frame(table: str) -> pl.DataFrame:
    """Good rows, then one row per case of ``table``; each keyed by its case name."""
    key = "sample_id" if table == "fused" else "object_id"
    cases = {name: c for name, c in CASES.items() if c[0] == table}
    if table == "fused":
        rows = [fused_row(f"good-{i}") for i in range(GOOD_PER_TABLE + len(cases))]
    else:
        rows = feature_rows(table.removesuffix("_features"), GOOD_PER_TABLE + len(cases))
    for row, (name, (_, overrides, _)) in zip(rows[GOOD_PER_TABLE:], cases.items(), strict=True):
        row.update(overrides)
        row[key] = name
    return frame_with(table, rows)


@pytest.fixture(scope="module")
def planted() -> Callable[[str], Validation]:
    """Each table's planted frame, validated once under ``quarantine``."""
    cache: dict[str, Validation] = {}

    def get(table: str) -> Validation:
        if table not in cache:
            cache[table] = validate_table(table, planted_frame(table), PARAMS, "quarantine")
        return cache[table]

    return get


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("table", [*FEATURE_TABLES, "fused"])
def test_good_rows_meet_every_expectation(table: str) -> None:
    frame = good_frame(table)
    validation = validate_table(table, frame, PARAMS, "quarantine")

    assert validation.success_percent == 100
    assert validation.success
    assert validation.failed.is_empty()
    assert validation.passed.height == frame.height
    assert [o.label for o in validation.outcomes] == [e.label for e in SUITES[table]]
    assert all(o.element_count == frame.height for o in validation.outcomes)
    assert all(o.unexpected_count == 0 for o in validation.outcomes)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_row_fails_exactly_its_expectations(
    case: str, planted: Callable[[str], Validation]
) -> None:
    table, _, expected = CASES[case]
    key = "sample_id" if table == "fused" else "object_id"

    failed = reasons(planted(table), key)

    assert case in failed, f"{case} passed every expectation of {table}"
    assert labels_in(failed[case]) == expected


@pytest.mark.parametrize("table", sorted({c[0] for c in CASES.values()}))
def test_only_planted_rows_fail(table: str, planted: Callable[[str], Validation]) -> None:
    key = "sample_id" if table == "fused" else "object_id"
    validation = planted(table)
    planted_cases = {name for name, c in CASES.items() if c[0] == table}

    assert set(validation.failed[key]) == planted_cases
    assert validation.passed.height == GOOD_PER_TABLE
    assert not set(validation.passed[key]) & planted_cases
    failures = {o.label: o.unexpected_count for o in validation.outcomes if not o.success}
    for label_ in failures:
        assert failures[label_] == sum(label_ in c[2] for c in CASES.values() if c[0] == table)


def test_unit_vector_mask() -> None:
    from data_quality.expectations import unit_vector_mask

    good = unit_vectors(1, 4)[0]
    values = pd.Series(
        [
            good,
            np.asarray(good, np.float32),  # how pandas holds a polars list
            [x * (1 + 5e-4) for x in good],  # inside the tolerance
            [x * (1 + 5e-3) for x in good],  # outside it
            [*good[:3], NAN],
            [*good[:3], float("inf")],
            [0.0] * 4,
            [x * 2 for x in good],
            good[:3],
            [*good, 0.0],
            [],
            None,
        ],
        index=range(10, 22),  # not 0..n: the mask must keep the column's index
    )

    mask = unit_vector_mask(values, dimension=4, tolerance=1e-3)

    assert mask.index.equals(values.index)
    assert mask.tolist() == [True, True, True] + [False] * 9
    assert not unit_vector_mask(pd.Series([None, [1.0]]), 4, 1e-3).any()


def test_duplicate_object_ids_flag_both_rows() -> None:
    rows = feature_rows("audio", 4)
    rows[3]["object_id"] = rows[1]["object_id"]

    validation = validate_table(
        "audio_features", frame_with("audio_features", rows), PARAMS, "warn"
    )

    assert validation.failed["size_bytes"].to_list() == [1001, 1003]
    assert set(validation.failed["reason"]) == {
        "failed expectations: " + label("be_unique", "object_id")
    }


def test_quarantine_splits_rows_and_keeps_the_contract() -> None:
    rows = feature_rows("audio", 6)
    rows[1]["channels"] = 0
    rows[4]["embedding"] = None
    frame = frame_with("audio_features", rows)

    validation = validate_table("audio_features", frame, PARAMS, "quarantine")

    assert validation.passed.height + validation.failed.height == frame.height
    assert validation.failed["object_id"].to_list() == ["audio-00001", "audio-00004"]
    assert validation.failed["reason"].to_list() == [
        "failed expectations: " + label("be_between", "channels"),
        "failed expectations: " + UNIT,
    ]
    assert validation.passed.schema == frame.schema  # no _row or _qc_ column leaks
    assert validation.failed.columns == [*frame.columns, "reason"]
    assert validation.passed.sort("object_id").equals(frame[[0, 2, 3, 5]])
    assert not validation.blocks_landing


def test_fail_policy_lands_nothing_when_a_row_fails() -> None:
    rows = feature_rows("audio", 5)
    rows[2]["duration_s"] = -3.0
    frame = frame_with("audio_features", rows)

    validation = validate_table("audio_features", frame, PARAMS, "fail")

    assert validation.passed.is_empty()
    assert validation.passed.schema == frame.schema
    assert validation.failed["object_id"].to_list() == ["audio-00002"]
    assert not validation.success
    assert validation.blocks_landing


def test_fail_policy_blocks_when_every_embedding_is_null() -> None:
    # GX counts map expectations over non-null values: an all-null column once passed.
    frame = good_frame("audio_features").with_columns(embedding=None)

    validation = validate_table("audio_features", frame, PARAMS, "fail")

    assert validation.failed.height == frame.height
    assert validation.passed.is_empty()
    assert validation.blocks_landing


def test_fail_policy_with_good_rows_lands_everything() -> None:
    frame = good_frame("video_features")

    validation = validate_table("video_features", frame, PARAMS, "fail")

    assert validation.passed.equals(frame)
    assert validation.failed.is_empty()
    assert not validation.blocks_landing


def test_warn_policy_lands_everything_and_lists_failures() -> None:
    rows = feature_rows("text", 5)
    rows[0]["chars"] = 0
    rows[3]["modality"] = "smell"
    frame = frame_with("text_features", rows)

    validation = validate_table("text_features", frame, PARAMS, "warn")

    assert validation.passed.equals(frame)
    assert validation.failed["object_id"].to_list() == ["text-00000", "text-00003"]
    assert not validation.success
    assert not validation.blocks_landing


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown quality policy 'drop'"):
        validate_table("audio_features", good_frame("audio_features"), PARAMS, "drop")


def test_empty_frame_validates_without_gx(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gx(*args: Any) -> None:
        raise AssertionError("an empty frame must not reach GX")

    monkeypatch.setattr(validate, "run_suite", no_gx)
    empty = pl.DataFrame(schema=TABLES["audio_features"].schema)

    validation = validate_table("audio_features", empty, PARAMS, "fail")

    assert validation.passed.is_empty() and validation.failed.is_empty()
    assert validation.failed.columns == [*empty.columns, "reason"]
    assert validation.outcomes == []
    assert validation.success_percent == 100
    assert not validation.blocks_landing


def test_missing_column_is_a_clear_error() -> None:
    frame = good_frame("audio_features").drop("sample_rate")

    with pytest.raises(ValueError, match="sample_rate"):
        validate_table("audio_features", frame, PARAMS, "quarantine")


def test_results_frame_has_one_row_per_expectation(planted: Callable[[str], Validation]) -> None:
    validation = planted("video_features")

    results = results_frame(validation, "run-7")

    assert results.schema == pl.Schema(VALIDATIONS)
    assert results["expectation"].to_list() == [e.label for e in SUITES["video_features"]]
    assert set(results["table_name"]) == {"video_features"}
    assert set(results["flow_run_id"]) == {"run-7"}
    assert set(results["policy"]) == {"quarantine"}
    by_label = {r["expectation"]: r for r in results.iter_rows(named=True)}
    fps = by_label[label("be_between", "fps")]
    assert (fps["success"], fps["unexpected_count"]) == (False, 2)
    assert fps["element_count"] == planted_frame("video_features").height
    assert by_label[label("be_unique", "object_id")]["success"]


def test_suite_labels_are_unique() -> None:
    # The validations table is keyed by (flow_run_id, table_name, expectation).
    for table, suite in SUITES.items():
        labels = [e.label for e in suite]
        assert len(labels) == len(set(labels)), table


def test_markdown_names_table_policy_expectations_and_examples(
    planted: Callable[[str], Validation],
) -> None:
    validation = planted("image_features")

    report = to_markdown(validation)

    assert "`image_features`" in report
    assert "**quarantine**" in report
    for expectation in SUITES["image_features"]:
        assert f"`{expectation.label}`" in report
    assert "`width-zero`" in report
    assert f"{GOOD_PER_TABLE} rows pass, {validation.failed.height} fail" in report


def test_markdown_of_fused_uses_sample_ids(planted: Callable[[str], Validation]) -> None:
    validation = planted("fused")

    report = to_markdown(validation)

    assert "| sample_id | reason |" in report
    assert f"`{validation.failed['sample_id'][0]}`" in report


def test_data_docs_name_each_validated_suite(
    tmp_path: Path, planted: Callable[[str], Validation]
) -> None:
    for table in ("audio_features", "fused"):
        planted(table)

    index = build_docs(tmp_path / "docs")

    assert index == (tmp_path / "docs" / "index.html").resolve()
    html = index.read_text()
    assert "audio_features" in html
    assert "fused" in html


def test_ten_thousand_rows_with_three_bad_ones() -> None:
    n = 10_000
    frame = good_frame("audio_features", n, seed=1).with_columns(
        duration_s=pl.when(pl.int_range(pl.len()) == 5000)
        .then(0.0)
        .otherwise(pl.col("duration_s")),
        sample_rate=pl.when(pl.int_range(pl.len()) == n - 1)
        .then(1234)
        .otherwise(pl.col("sample_rate"))
        .cast(pl.Int32),
        embedding=pl.when(pl.int_range(pl.len()) == 17)
        .then(pl.lit([NAN] * AUDIO_DIM, pl.List(pl.Float32)))
        .otherwise(pl.col("embedding")),
    )

    validation = validate_table("audio_features", frame, PARAMS, "quarantine")

    assert validation.passed.height == n - 3
    assert reasons(validation) == {
        "audio-00017": "failed expectations: " + UNIT + ", " + label("be_in_set", "_qc_finite"),
        "audio-05000": "failed expectations: " + label("be_between", "duration_s"),
        "audio-09999": "failed expectations: " + label("be_in_set", "sample_rate"),
    }
    assert all(o.element_count == n for o in validation.outcomes)
    assert sum(o.unexpected_count for o in validation.outcomes) == 4  # the NaN row fails two


def test_resolve_fills_parameters_and_names_a_missing_one() -> None:
    resolved = resolve(SUITES["audio_features"], PARAMS)

    unit = next(e for e in resolved if e.label == UNIT)
    assert unit.kwargs == {"column": "embedding", "dimension": 40, "tolerance": 1e-3}
    rates = next(e for e in resolved if e.label == label("be_in_set", "sample_rate"))
    assert rates.kwargs["value_set"] == PARAMS["sample_rates"]
    assert not any(
        isinstance(v, str) and v.startswith("$") for e in resolved for v in e.kwargs.values()
    )
    # The suite itself stays a constant.
    assert next(e for e in SUITES["audio_features"] if e.label == UNIT).kwargs["dimension"] == (
        "$audio_dim"
    )

    with pytest.raises(KeyError, match=r"\$max_channels"):
        resolve(SUITES["audio_features"], {k: v for k, v in PARAMS.items() if k != "max_channels"})


def test_a_context_prepared_in_the_background_is_the_one_validation_uses(monkeypatch) -> None:
    monkeypatch.setattr(validate, "_context", None)
    thread = validate.prepare_in_background()
    thread.join(180)
    assert not thread.is_alive()
    prepared = validate._context
    assert prepared is not None
    frame = good_frame("text_features")
    assert validate_table("text_features", frame, PARAMS, "quarantine").success
    assert validate._context is prepared


FINITE = label("be_in_set", "_qc_finite")


@pytest.mark.parametrize("table", [*FEATURE_TABLES, "fused"])
def test_a_non_finite_float_anywhere_fails_the_row(table: str) -> None:
    """NaN or infinity in any float, scalar or inside a vector, fails the row with
    ``_qc_finite``; the other rows pass."""
    rows = good_frame(table).to_dicts()
    schema = TABLES[table].schema
    floats = [c for c, t in schema.items() if t.is_float() and rows[0].get(c) is not None]
    vectors = [
        c for c, t in schema.items()
        if isinstance(t, pl.List) and t.inner.is_float() and rows[0].get(c)
    ]  # fmt: skip
    planted = {}
    for i, column in enumerate([*floats, *vectors][: len(rows)]):
        value = rows[i][column]
        rows[i][column] = (
            [float("inf"), *value[1:]]
            if isinstance(value, list)
            else float("inf")
            if i % 2
            else NAN
        )
        planted[rows[i].get("object_id", rows[i].get("sample_id"))] = column
    assert planted
    validation = validate_table(table, frame_with(table, rows), PARAMS, "quarantine")
    key = "sample_id" if table == "fused" else "object_id"
    failed = reasons(validation, key)
    assert set(failed) == set(planted)
    assert all(FINITE in labels_in(reason) for reason in failed.values())


def test_sensor_clocks_outside_the_epoch_to_tomorrow_fail() -> None:
    rows = good_frame("timeseries_features", n=4).to_dicts()
    rows[0]["start_time"] = datetime(24, 3, 1, tzinfo=UTC)  # a mutated log's year
    rows[1]["end_time"] = datetime(2999, 1, 1, tzinfo=UTC)
    rows[2]["start_time"], rows[2]["end_time"] = rows[2]["end_time"], rows[2]["start_time"]
    validation = validate_table(
        "timeseries_features", frame_with("timeseries_features", rows), PARAMS, "quarantine"
    )
    failed = reasons(validation)
    assert sorted(failed) == [rows[i]["object_id"] for i in range(3)]
    assert all(label("be_in_set", "_qc_time_plausible") in labels_in(r) for r in failed.values())
