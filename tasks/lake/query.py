"""Reading the lake back: ad hoc SQL and nearest-sample search, both in DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from tasks.lake import store as lake
from tasks.lake.tables import TABLES


def require_lake(lake_path: str | Path) -> Path:
    """The lake's folder; FileNotFoundError, saying how to make one, for a folder that is none."""
    root = Path(lake_path)
    if not (root / "objects").is_dir():
        raise FileNotFoundError(
            f"no lake at {str(lake_path)!r}: run `braid run SOURCE --lake {lake_path}` first"
        )
    return root


def connect(lake_path: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with one view per table; refuses a folder that is not a lake."""
    require_lake(lake_path)
    return lake.connect(lake_path, TABLES)


def run_sql(lake_path: str | Path, sql: str) -> pl.DataFrame:
    """Run one SQL statement over the lake's views."""
    with connect(lake_path) as con:
        result = con.sql(sql)
        return result.pl() if result is not None else pl.DataFrame()


def current_text_model(lake_path: str | Path) -> str | None:
    """The text model of the lake's current model set (what its texts were embedded with)."""
    with connect(lake_path) as con:
        current, _ = lake.current_model_set(con)
        found = con.execute(
            "SELECT model_id FROM model_sets WHERE model_set = ? AND modality = 'text'", [current]
        ).fetchone()
    return str(found[0]) if found else None


def quarantined_objects(
    lake_path: str | Path,
    stage: str | None = None,
    reason: str | None = None,
    object_id: str | None = None,
) -> pl.DataFrame:
    """Quarantined objects matching every given filter (``reason`` is a case-insensitive substring)."""
    with connect(lake_path) as con:
        return con.sql(
            """
            SELECT object_id, uri, sample_id, modality, stage, reason
            FROM quarantine
            WHERE modality <> 'fused'
              AND ($stage IS NULL OR stage = $stage)
              AND ($reason IS NULL OR reason ILIKE '%' || $reason || '%')
              AND ($object_id IS NULL OR object_id = $object_id)
            ORDER BY uri
            """,
            params={"stage": stage, "reason": reason, "object_id": object_id},
        ).pl()


def last_validations(lake_path: str | Path) -> pl.DataFrame:
    """Each table's most recent validation: expectations met, rows checked, failing rows."""
    with connect(lake_path) as con:
        return con.sql(
            """
            WITH latest AS (
                SELECT table_name, max(validated_at) AS validated_at FROM validations GROUP BY ALL
            )
            SELECT v.table_name, any_value(v.policy) AS policy, v.validated_at,
                   round(100 * avg(v.success::INT), 1) AS success_percent,
                   max(v.element_count) AS rows_checked,
                   string_agg(CASE WHEN NOT v.success THEN v.expectation END, ', ') AS failed_expectations
            FROM validations AS v JOIN latest USING (table_name, validated_at)
            GROUP BY ALL ORDER BY v.table_name
            """
        ).pl()
