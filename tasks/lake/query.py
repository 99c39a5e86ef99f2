"""Reading the lake back: ad hoc SQL and nearest-sample search, both in DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from tasks.lake import store as lake
from tasks.media.encoders import DEFAULT_TEXT_MODEL, embed_texts
from tasks.lake.tables import TABLES


def connect(lake_path: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with one view per table; refuses a folder that is not a lake."""
    if not (Path(lake_path) / "objects").is_dir():
        raise FileNotFoundError(
            f"no lake at {str(lake_path)!r}: run `braid run SOURCE --lake {lake_path}` first"
        )
    return lake.connect(lake_path, TABLES)


def run_sql(lake_path: str | Path, sql: str) -> pl.DataFrame:
    """Run one SQL statement over the lake's views."""
    with connect(lake_path) as con:
        result = con.sql(sql)
        return result.pl() if result is not None else pl.DataFrame()


def search_text(
    lake_path: str | Path, text: str, k: int = 5, model_id: str = DEFAULT_TEXT_MODEL
) -> pl.DataFrame:
    """Samples whose texts are nearest to ``text`` by cosine similarity, best first.

    The query is embedded with the same text model that embedded the lake's texts, and
    DuckDB's ``array_cosine_similarity`` ranks them; a sample scores its best text.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    vector = embed_texts([text], model_id)[0]
    with connect(lake_path) as con:
        return con.sql(
            f"""
            SELECT t.sample_id,
                   max(array_cosine_similarity(t.embedding::FLOAT[{vector.size}], $query::FLOAT[{vector.size}])) AS score,
                   arg_max(t.preview, array_cosine_similarity(t.embedding::FLOAT[{vector.size}], $query::FLOAT[{vector.size}])) AS text,
                   any_value(f.modalities) AS modalities
            FROM text_features AS t
            LEFT JOIN fused AS f USING (sample_id)
            WHERE t.model_id = $model_id
            GROUP BY t.sample_id
            ORDER BY score DESC, t.sample_id
            LIMIT $k
            """,
            params={"query": vector.tolist(), "model_id": model_id, "k": k},
        ).pl()


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
