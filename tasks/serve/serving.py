"""Answers for the query API (`braid api`), as plain functions over a snapshot of the lake.

Each function takes a DuckDB connection holding the lake's views and returns plain data
(dicts, lists), so it is tested without a server; ``deployments/api.py`` puts HTTP around
them. The lake is only read: ``LakeReader`` keeps an in-memory DuckDB with views over the
Parquet parts and rebuilds it when the parts change, so the pipeline keeps landing while
the API serves, and the catalog file (``braid.duckdb``) is never opened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from tasks.common import MODALITIES
from tasks.lake import store as lake
from tasks.lake.query import connect, require_lake
from tasks.lake.tables import TABLES, feature_table
from tasks.media.encoders import DEFAULT_TEXT_MODEL
from tasks.serve.vectors import FUSED, TEXT, has_vectors, is_built

if TYPE_CHECKING:
    import duckdb

# Raw, not deduplicated: which run wrote what, for run history.
HISTORY_TABLES = ("objects", "fused")
# Optional tables some lakes carry before (or without) a contract in TABLES.
EXTRA_TABLES = ("costs",)

OBJECT_COLUMNS = (
    "object_id",
    "uri",
    "sample_id",
    "modality",
    "media_type",
    "size_bytes",
    "status",
    "discovered_at",
    "landed_at",
    "flow_run_id",
)
QUARANTINE_COLUMNS = (
    "object_id",
    "uri",
    "sample_id",
    "modality",
    "stage",
    "reason",
    "quarantined_at",
    "flow_run_id",
    "landed_at",
)


def is_vector(column: str) -> bool:
    """Whether a column holds a raw embedding, which answers leave out unless asked."""
    return column == "embedding" or column.endswith("_embedding")


# --- the snapshot -------------------------------------------------------------------------------


def open_snapshot(lake_path: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the lake's views, plus raw ``<table>_history`` views.

    Raises FileNotFoundError when ``lake_path`` holds no lake (yet).
    """
    con = connect(lake_path)
    con.execute("SET TimeZone = 'UTC'")  # days are UTC days, whatever the host's zone
    _create_raw_views(con, lake_path)
    return con


def _create_raw_views(con: duckdb.DuckDBPyConnection, lake_path: str | Path) -> None:
    for table in HISTORY_TABLES:
        files = lake.parts(lake_path, table)
        if files:
            listed = lake.sql_paths(files)
            source = f"SELECT * FROM read_parquet([{listed}], union_by_name = true)"
        else:
            source = f"SELECT * FROM {table} WHERE false"
        con.execute(f"CREATE OR REPLACE VIEW {table}_history AS {source}")
    for table in EXTRA_TABLES:
        files = lake.parts(lake_path, table)
        if table not in TABLES and files:
            listed = lake.sql_paths(files)
            con.execute(
                f"CREATE OR REPLACE VIEW {table} AS "
                f"SELECT * FROM read_parquet([{listed}], union_by_name = true)"
            )


def replace_views(con: duckdb.DuckDBPyConnection, lake_path: str | Path) -> None:
    """Replace the views (and empty tables) of ``open_snapshot`` in ``con`` by the lake's current ones."""
    require_lake(lake_path)
    # A table with no parts is an empty table, later a view: drop each by its own kind.
    relations = con.execute(
        "SELECT view_name, 'VIEW' FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal "
        "UNION ALL SELECT table_name, 'TABLE' FROM duckdb_tables() "
        "WHERE schema_name = 'main' AND NOT temporary"
    ).fetchall()
    for name, kind in relations:
        con.execute(f'DROP {kind} "{name}"')
    lake.create_views(con, lake_path, TABLES)
    _create_raw_views(con, lake_path)


# --- rows ---------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe values: NaN and infinities become None (JSON has no spelling for them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def rows(
    con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    result = con.execute(sql, dict(params or {}))
    names = [d[0] for d in result.description or []]
    return [{n: _clean(v) for n, v in zip(names, row, strict=True)} for row in result.fetchall()]


def has_relation(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the connection has a table or view called ``name``."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = $t AND NOT temporary "
        "UNION ALL SELECT count(*) FROM duckdb_views() WHERE view_name = $t",
        {"t": name},
    ).fetchall()
    return sum(n for (n,) in found) > 0


# --- samples ------------------------------------------------------------------------------------


def sample_detail(
    con: duckdb.DuckDBPyConnection, sample_id: str, vectors: bool = False
) -> dict[str, Any] | None:
    """A sample's objects, features per modality, fused row and quarantined objects; None if unknown.

    Raw embeddings (``embedding``, ``*_embedding``) are left out unless ``vectors``.
    """
    params = {"s": sample_id}
    objects = rows(
        con,
        f"SELECT {', '.join(OBJECT_COLUMNS)} FROM objects WHERE sample_id = $s "
        "ORDER BY modality, uri, object_id",
        params,
    )
    if not objects:
        return None

    def without_vectors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if vectors:
            return rows
        return [{k: v for k, v in row.items() if not is_vector(k)} for row in rows]

    features = {}
    for modality in MODALITIES:
        table = feature_table(modality)
        if table in TABLES:
            features[modality] = without_vectors(
                rows(
                    con,
                    f"SELECT * FROM {table} WHERE sample_id = $s ORDER BY uri, model_id",
                    params,
                )
            )
    fused = without_vectors(rows(con, "SELECT * FROM fused WHERE sample_id = $s", params))
    quarantine = rows(
        con,
        f"SELECT {', '.join(QUARANTINE_COLUMNS)} FROM quarantine WHERE sample_id = $s "
        "ORDER BY uri, object_id",
        params,
    )
    return {
        "sample_id": sample_id,
        "objects": objects,
        "features": features,
        "fused": fused[0] if fused else None,
        "quarantine": quarantine,
    }


def sample_exists(con: duckdb.DuckDBPyConnection, sample_id: str) -> bool:
    """Whether any object of the lake belongs to ``sample_id``."""
    found = con.execute(
        "SELECT count(*) FROM objects WHERE sample_id = $s", {"s": sample_id}
    ).fetchone()
    return bool(found and found[0])


def _presence(modality: str | None, alias: str) -> str:
    """A SQL condition keeping samples that hold ``modality`` (any sample when None)."""
    if modality is None:
        return "TRUE"
    if modality not in MODALITIES:  # the name goes into SQL: only known ones
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return f"coalesce({alias}.has_{modality}, false)"


def similar_samples(
    con: duckdb.DuckDBPyConnection, sample_id: str, k: int = 10, modality: str | None = None
) -> list[dict[str, Any]] | None:
    """The ``k`` samples whose fused embeddings are nearest to ``sample_id``'s, best first.

    The sample itself is left out; ``modality`` keeps only samples that hold it. None when
    ``sample_id`` has no fused row.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    indexed = is_built(con)
    # The index holds every model set's rows; the views only the current set's.
    current = lake.current_model_set(con)[0] if indexed else None
    found = con.execute(
        f"SELECT embedding_dim FROM {FUSED.rows if indexed else 'fused'} WHERE sample_id = $s"
        + (" AND model_set = $set" if indexed else ""),
        {"s": sample_id, **({"set": current} if indexed else {})},
    ).fetchone()
    if found is None or found[0] is None:
        return None
    dim = int(found[0])
    if indexed:  # the index holds this dimension: the sample's row is in it
        vectors = FUSED.vectors(dim)
        return rows(
            con,
            f"""
            SELECT f.sample_id, array_cosine_similarity(f.embedding, q.embedding) AS score,
                   f.modalities
            FROM {vectors} AS f,
                 (SELECT embedding FROM {vectors} WHERE sample_id = $s AND model_set = $set) AS q
            WHERE f.sample_id <> $s AND f.model_set = $set AND {_presence(modality, "f")}
            ORDER BY score DESC NULLS LAST, f.sample_id
            LIMIT $k
            """,
            {"s": sample_id, "k": k, "set": current},
        )
    return rows(
        con,
        f"""
        SELECT f.sample_id,
               array_cosine_similarity(f.embedding::FLOAT[{dim}], q.embedding::FLOAT[{dim}]) AS score,
               f.modalities
        FROM fused AS f, (SELECT embedding FROM fused WHERE sample_id = $s) AS q
        WHERE f.sample_id <> $s AND f.embedding_dim = {dim} AND {_presence(modality, "f")}
        ORDER BY score DESC NULLS LAST, f.sample_id
        LIMIT $k
        """,
        {"s": sample_id, "k": k},
    )


def samples_near_text(
    con: duckdb.DuckDBPyConnection,
    vector: list[float],
    model_id: str,
    k: int = 10,
    modality: str | None = None,
) -> list[dict[str, Any]]:
    """The ``k`` samples whose texts (embedded by ``model_id``) are nearest to ``vector``, best first.

    A sample scores its best text, whose preview comes along.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    dim = len(vector)
    params: dict[str, Any] = {"query": list(vector), "model_id": model_id, "k": k}
    if is_built(con):
        if not has_vectors(con, TEXT, dim):  # no text of this dimension
            return []
        texts, embedding = TEXT.vectors(dim), "t.embedding"
        # The index holds every model set's fused rows; the view only the current set's.
        fused = f"(SELECT * FROM {FUSED.rows} WHERE model_set = $set)"
        of_dim = "TRUE"
        params["set"] = lake.current_model_set(con)[0]
    else:
        texts, fused, embedding = "text_features", "fused", f"t.embedding::FLOAT[{dim}]"
        of_dim = f"t.embedding_dim = {dim}"
    similarity = f"array_cosine_similarity({embedding}, $query::FLOAT[{dim}])"
    return rows(
        con,
        f"""
        SELECT t.sample_id,
               max({similarity}) AS score,
               arg_max(t.preview, {similarity}) AS text,
               any_value(f.modalities) AS modalities
        FROM {texts} AS t
        LEFT JOIN {fused} AS f USING (sample_id)
        WHERE t.model_id = $model_id AND {of_dim} AND {_presence(modality, "f")}
        GROUP BY t.sample_id
        ORDER BY score DESC NULLS LAST, t.sample_id
        LIMIT $k
        """,
        params,
    )


# --- stats --------------------------------------------------------------------------------------


def lake_stats(con: duckdb.DuckDBPyConnection, runs: int = 10) -> dict[str, Any]:
    """Counts per modality and status (overall and per UTC day of discovery) and the last runs.

    A run's counts come from what it wrote (the tables' history), so an object a later
    run re-filed still counts for the run that first filed it.
    """
    totals = rows(
        con,
        """
        SELECT (SELECT count(*) FROM objects) AS objects,
               (SELECT count(*) FROM objects WHERE status = 'landed') AS landed,
               (SELECT count(*) FROM quarantine) AS quarantined,
               (SELECT count(DISTINCT sample_id) FROM objects) AS samples,
               (SELECT count(*) FROM fused) AS samples_fused
        """,
    )[0]
    by_modality_status = rows(
        con,
        "SELECT modality, status, count(*) AS count FROM objects GROUP BY ALL ORDER BY ALL",
    )
    by_day = rows(
        con,
        "SELECT CAST(discovered_at AS DATE) AS day, modality, status, count(*) AS count "
        "FROM objects GROUP BY ALL ORDER BY ALL",
    )
    quarantine_by_stage = rows(
        con, "SELECT stage, count(*) AS count FROM quarantine GROUP BY ALL ORDER BY ALL"
    )
    last_runs = rows(
        con,
        """
        WITH filed AS (
            SELECT * FROM objects_history
            QUALIFY row_number() OVER (PARTITION BY flow_run_id, object_id ORDER BY landed_at DESC) = 1
        ), per_run AS (
            SELECT flow_run_id,
                   min(discovered_at) AS started_at,
                   max(landed_at) AS finished_at,
                   count(*) AS objects,
                   count(*) FILTER (WHERE status = 'landed') AS landed,
                   count(*) FILTER (WHERE status = 'quarantined') AS quarantined
            FROM filed GROUP BY flow_run_id
        ), fused_per_run AS (
            SELECT flow_run_id, count(DISTINCT sample_id) AS samples_fused,
                   max(landed_at) AS fused_at
            FROM fused_history GROUP BY flow_run_id
        )
        SELECT r.flow_run_id, r.started_at,
               greatest(r.finished_at, f.fused_at) AS finished_at,
               r.objects, r.landed, r.quarantined,
               coalesce(f.samples_fused, 0) AS samples_fused
        FROM per_run AS r LEFT JOIN fused_per_run AS f USING (flow_run_id)
        ORDER BY finished_at DESC NULLS LAST, r.flow_run_id
        LIMIT $runs
        """,
        {"runs": runs},
    )
    for run in last_runs:
        started, finished = run["started_at"], run["finished_at"]
        run["seconds"] = (
            round((finished - started).total_seconds(), 3) if started and finished else None
        )
    return {
        "totals": totals,
        "by_modality_status": by_modality_status,
        "by_day": by_day,
        "quarantine_by_stage": quarantine_by_stage,
        "runs": last_runs,
    }


def search_text(
    lake_path: str | Path, text: str, k: int = 5, model_id: str = DEFAULT_TEXT_MODEL
) -> pl.DataFrame:
    """`braid search`: the samples whose texts are nearest to ``text``, best first.

    The query is embedded with ``model_id`` (the text model the lake's texts were
    embedded with) and ranked by ``samples_near_text`` over the lake's views.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    from tasks.media.encoders import embed_texts

    vector = embed_texts([text], model_id)[0]
    with open_snapshot(lake_path) as con:
        hits = samples_near_text(con, vector.tolist(), model_id, k)
    schema = {"sample_id": pl.String(), "score": pl.Float64(), "text": pl.String(),
              "modalities": pl.List(pl.String())}  # fmt: skip
    return pl.DataFrame(hits, schema=schema)
