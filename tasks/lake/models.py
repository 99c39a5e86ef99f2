"""The model sets a lake holds (`braid models`), and pruning the rows of sets no longer wanted."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.common import MODALITIES
from tasks.lake import store
from tasks.lake.query import connect
from tasks.lake.tables import TABLES, feature_table


def model_sets(lake_path: str | Path) -> pl.DataFrame:
    """Each model set's slots, with the rows each table holds for it; the current set first."""
    with connect(lake_path) as con:
        current, _ = store.current_model_set(con)
        counts = " UNION ALL ".join(
            f"SELECT model_key, count(*) AS n FROM {feature_table(m)} GROUP BY 1"
            for m in MODALITIES
        )
        return con.sql(
            f"""
            WITH features AS ({counts}),
                 fused AS (SELECT model_set, count(*) AS n FROM fused_all GROUP BY 1)
            SELECT s.model_set, s.model_set = $current AS current, s.modality, s.model_id, s.model_key,
                   left(s.model_revision, 12) AS revision, s.feature_version, s.embedding_dim,
                   coalesce(f.n, 0) AS feature_rows, coalesce(u.n, 0) AS fused_rows,
                   s.landed_at AS used_at
            FROM model_sets AS s
            LEFT JOIN features AS f USING (model_key)
            LEFT JOIN fused AS u USING (model_set)
            ORDER BY current DESC, used_at DESC, s.model_set,
                     list_position({list(MODALITIES)}, s.modality)
            """,
            params={"current": current},
        ).pl()


def prune(lake_path: str | Path, keep: set[str], apply: bool = False) -> dict[str, int]:
    """Rows of model sets not in ``keep`` (and of no set at all), per table; removed if ``apply``.

    Each Parquet part is rewritten without those rows under its own name, atomically, so
    a reader sees it before or after, never halfway; a prune stopped midway is finished by
    running it again. Feature rows that a kept set also uses stay.
    """
    sets = model_sets(lake_path)
    kept = sets.filter(pl.col("model_set").is_in(list(keep)))
    keys = set(kept["model_key"].to_list())
    rules = {feature_table(m): ("model_key", keys) for m in MODALITIES}
    rules |= {"fused": ("model_set", keep), "model_sets": ("model_set", keep)}
    removed: dict[str, int] = {}
    for table, (column, wanted) in rules.items():
        for part in store.parts(lake_path, table):
            frame = pl.read_parquet(part)
            stays = (
                frame.filter(pl.col(column).is_in(list(wanted)))
                if column in frame.columns
                else frame.clear()
            )
            gone = frame.height - stays.height
            if not gone:
                continue
            removed[table] = removed.get(table, 0) + gone
            if apply:
                if stays.is_empty():
                    part.unlink()
                else:
                    store.write_part(lake_path, table, stays, part.stem)
    if apply:
        store.write_catalog(lake_path, TABLES)
    return removed
