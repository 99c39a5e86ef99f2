"""One expectation suite per table, as data.

An expectation is (GX expectation type, keyword arguments). A string value that starts
with ``$`` names a parameter filled in at validation time from the run's settings (the
configured embedding dimension, duration limit, allowed sample rates…), so the suites
stay constants while the limits stay configuration.

Columns whose names start with ``_qc_`` are derived in polars just before validation
(see ``data_quality.validate.derive_qc_columns``): GX validates scalar columns fast,
and the derivations are one vectorised pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blocks import defaults
from tasks.common import MODALITIES

POLICIES = defaults.QUALITY_POLICIES


@dataclass(frozen=True)
class Expectation:
    """One GX expectation: its type (snake_case, as GX names it) and its arguments."""

    type: str
    kwargs: dict[str, Any]

    @property
    def label(self) -> str:
        """A short name for reasons and reports: the type and its column."""
        column = self.kwargs.get("column")
        return f"{self.type}({column})" if column else self.type


def _identity(modality: str) -> list[Expectation]:
    """What every feature table must hold: keys, lineage, a unit embedding."""
    return [
        Expectation("expect_column_values_to_not_be_null", {"column": "object_id"}),
        Expectation("expect_column_values_to_be_unique", {"column": "object_id"}),
        Expectation("expect_column_values_to_not_be_null", {"column": "sample_id"}),
        Expectation("expect_column_value_lengths_to_be_between", {"column": "uri", "min_value": 1}),
        Expectation("expect_column_values_to_not_be_null", {"column": "uri"}),
        Expectation(
            "expect_column_values_to_be_in_set",
            {"column": "modality", "value_set": list(MODALITIES)},
        ),
        Expectation("expect_column_values_to_not_be_null", {"column": "model_id"}),
        Expectation(
            "expect_column_values_to_be_unit_vectors",
            {
                "column": "embedding",
                "dimension": f"${modality}_dim",
                "tolerance": "$norm_tolerance",
            },
        ),
    ]


def _between(column: str, low: Any, high: Any = None, strict_min: bool = False) -> Expectation:
    kwargs: dict[str, Any] = {"column": column, "min_value": low, "strict_min": strict_min}
    if high is not None:
        kwargs["max_value"] = high
    return Expectation("expect_column_values_to_be_between", kwargs)


SUITES: dict[str, list[Expectation]] = {
    "image_features": [
        *_identity("image"),
        _between("width", 1),
        _between("height", 1),
        _between("_qc_pixels", 1, "$max_image_pixels"),
    ],
    "text_features": [
        *_identity("text"),
        _between("chars", 1, "$max_text_chars"),
        _between("words", 1),
    ],
    "audio_features": [
        *_identity("audio"),
        _between("duration_s", 0, "$max_duration_s", strict_min=True),
        Expectation(
            "expect_column_values_to_be_in_set",
            {"column": "sample_rate", "value_set": "$sample_rates"},
        ),
        _between("channels", 1, "$max_channels"),
    ],
    "video_features": [
        *_identity("video"),
        _between("duration_s", 0, "$max_duration_s", strict_min=True),
        _between("fps", "$min_fps", "$max_fps"),
        _between("width", 1),
        _between("height", 1),
        _between("_qc_pixels", 1, "$max_image_pixels"),
        _between("frames_sampled", 1, "$max_video_frames"),
    ],
    "timeseries_features": [
        *_identity("timeseries"),
        _between("rows", 2),
        _between("duration_s", 0, strict_min=True),
        _between("sample_rate_hz", 0, strict_min=True),
        Expectation(
            "expect_column_values_to_be_in_set",
            {"column": "_qc_time_plausible", "value_set": [True]},
        ),
    ],
    "fused": [
        Expectation("expect_column_values_to_not_be_null", {"column": "sample_id"}),
        Expectation("expect_column_values_to_be_unique", {"column": "sample_id"}),
        Expectation(
            "expect_column_values_to_be_unit_vectors",
            {"column": "embedding", "dimension": "$fused_dim", "tolerance": "$norm_tolerance"},
        ),
        _between("_qc_modality_count", 1, len(MODALITIES)),
        Expectation(
            "expect_column_values_to_be_in_set",
            {"column": "_qc_modalities_known", "value_set": [True]},
        ),
        Expectation(
            "expect_column_values_to_be_in_set",
            {"column": "_qc_presence_consistent", "value_set": [True]},
        ),
        # Every row belongs to the run's model set, and its slots have that set's dimensions.
        Expectation(
            "expect_column_values_to_be_in_set",
            {"column": "model_set", "value_set": ["$model_set"]},
        ),
        Expectation(
            "expect_column_values_to_be_in_set",
            {"column": "_qc_slots_match_set", "value_set": [True]},
        ),
    ],
}


# Every table: no NaN or infinity in any float, scalar or vector (a log of 1e308 values
# once landed channel_mean = inf).
for _suite in SUITES.values():
    _suite.append(
        Expectation(
            "expect_column_values_to_be_in_set", {"column": "_qc_finite", "value_set": [True]}
        )
    )


def resolve(expectations: list[Expectation], params: dict[str, Any]) -> list[Expectation]:
    """Fill in ``$name`` parameters; a missing one is a configuration error."""

    def value(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("$"):
            if v[1:] not in params:
                raise KeyError(f"expectation parameter {v} is not configured")
            return params[v[1:]]
        if isinstance(v, list):
            return [value(item) for item in v]
        return v

    return [Expectation(e.type, {k: value(v) for k, v in e.kwargs.items()}) for e in expectations]
