"""Braid's own Great Expectations expectation: embeddings are finite unit vectors of a set length.

GX's built-in value-length expectation measures a value's string form, not a vector, so
list/array columns need their own. Importing this module registers it with GX (and
imports GX, which is slow: import it only where validation runs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics import (
    ColumnMapMetricProvider,
    column_condition_partial,
)


def unit_vector_mask(values: pd.Series, dimension: int, tolerance: float) -> pd.Series:
    """True where a value is a vector of ``dimension`` finite floats with L2 norm 1 ± tolerance."""
    lengths = values.map(lambda v: -1 if v is None else len(v))
    ok = pd.Series(False, index=values.index)
    sized = lengths == dimension
    if sized.any():
        matrix = np.stack([np.asarray(v, dtype=np.float64) for v in values[sized]])
        finite = np.isfinite(matrix).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(matrix), matrix, 0.0), axis=1)
        ok[sized] = finite & (np.abs(norms - 1.0) <= tolerance)
    return ok


class ColumnValuesUnitVector(ColumnMapMetricProvider):
    """Row-level condition behind ``expect_column_values_to_be_unit_vectors``."""

    condition_metric_name = "column_values.unit_vector"
    condition_value_keys = ("dimension", "tolerance")
    # GX skips nulls in map metrics by default; a missing embedding is not a unit vector.
    filter_column_isnull = False

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(
        cls, column: pd.Series, dimension: int, tolerance: float, **kwargs: Any
    ) -> pd.Series:
        return unit_vector_mask(column, dimension, tolerance)


class ExpectColumnValuesToBeUnitVectors(ColumnMapExpectation):
    """Expect each value to be a vector of ``dimension`` finite floats with L2 norm 1 ± ``tolerance``.

    Catches the failures an embedding step can produce: a wrong model (wrong length),
    NaN or infinity, an all-zero vector, a forgotten normalisation.
    """

    dimension: int
    tolerance: float = 1e-3

    map_metric: ClassVar[str] = "column_values.unit_vector"
    success_keys: ClassVar[tuple[str, ...]] = ("dimension", "tolerance", "mostly")

    def _validate(
        self,
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any] | None = None,
        execution_engine: Any = None,
    ) -> Any:
        # GX counts success over non-null values, so an all-null column would pass
        # vacuously; a null embedding is a failure, so count over every row.
        outcome = super()._validate(metrics, runtime_configuration, execution_engine)
        total = metrics.get("table.row_count") or 0
        unexpected = metrics.get(f"{self.map_metric}.unexpected_count") or 0
        if total:
            outcome["success"] = (total - unexpected) / total >= self._get_success_kwarg("mostly")
        return outcome
