"""Reading the lake back: ad hoc SQL and nearest-sample search, both in DuckDB."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from tasks import lake
from tasks.encoders import DEFAULT_TEXT_MODEL, embed_texts
from tasks.tables import TABLES


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
