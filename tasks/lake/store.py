"""The lake: Parquet files per table, written atomically, and DuckDB views over them.

Layout: ``<lake>/<table>/<part>.parquet``. A part is written under a hidden temporary
name in the same folder and renamed into place, so readers never see half a file and
a crashed run leaves nothing visible. Tables are merge-on-read: a re-run after a crash
may write a row twice, and the views keep one row per key (the latest landed), so
queries never see duplicates. Finding that row reads only the key columns, so a query
for embeddings pays for deduplication with a scan of the keys, not a grouping of vectors.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from tasks.common import ObjectRef

if TYPE_CHECKING:
    import duckdb

    from tasks.lake.tables import Table

CATALOG_FILE = "braid.duckdb"
# Rows per Parquet row group: DuckDB scans a file's row groups in parallel, so a part of
# many embeddings must hold several (pyarrow's default is a million rows, one group).
ROW_GROUP_ROWS = 32_768


def table_dir(lake: str | Path, table: str) -> Path:
    """The folder that holds a table's Parquet parts."""
    return Path(lake) / table


def is_float_vector(dtype: pl.DataType) -> bool:
    """Whether a column holds vectors of floats (embeddings), which zstd barely shrinks."""
    return isinstance(dtype, pl.List | pl.Array) and dtype.inner.is_float()


def write_part(lake: str | Path, table: str, frame: pl.DataFrame, part: str) -> Path | None:
    """Write one part of a table atomically (temporary name, then rename); skip empty frames.

    Columns are zstd-compressed except float vectors, stored plain: random unit vectors
    shrank by 8 % under zstd, and decompressing them was a third of the CPU time of a
    similarity scan (benchmark f). Any Parquet reader reads either, old parts included.
    """
    import pyarrow.parquet as pq

    if frame.is_empty():
        return None
    compression = {
        name: "none" if is_float_vector(dtype) else "zstd" for name, dtype in frame.schema.items()
    }
    folder = table_dir(lake, table)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{part}.parquet"
    temporary = folder / f".{part}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(
            frame.to_arrow(),
            temporary,
            compression=compression,
            row_group_size=ROW_GROUP_ROWS,
            write_statistics=True,
        )
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return final


def parts(lake: str | Path, table: str) -> list[Path]:
    """The visible Parquet parts of a table (temporary files are hidden and never match)."""
    folder = table_dir(lake, table)
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def sql_paths(files: Iterable[Path]) -> str:
    """Files as a DuckDB list body: ``'/abs/a.parquet', '/abs/b.parquet'`` (quotes escaped)."""
    return ", ".join("'" + str(f.resolve()).replace("'", "''") + "'" for f in files)


def _embedding_dim(con: duckdb.DuckDBPyConnection, source: str) -> int | None:
    """The one embedding dimension of a table, or None when it has none or several."""
    dims = con.execute(
        f"SELECT DISTINCT embedding_dim FROM {source} WHERE embedding_dim IS NOT NULL"
    ).fetchall()
    return int(dims[0][0]) if len(dims) == 1 else None


def latest_rows(
    source: str, key: Iterable[str], replace: str = "", keep_row_names: bool = False
) -> str:
    """SQL for one row per key out of ``source``, the latest landed (ties: the later file and row).

    ``source`` is a ``read_parquet`` call with ``filename`` and ``file_row_number``, which
    name each row. Only rows whose key is written more than once (which its hash finds
    cheaply) are ranked, on the key columns alone, and the losers are anti-joined from the
    scan: ranking whole rows would group every embedding in memory. ``keep_row_names``
    keeps ``filename`` and ``file_row_number`` in the result (the API's vector index
    ranks later rows against them).
    """
    keys = ", ".join(key)
    columns = "*" if keep_row_names else "* EXCLUDE (filename, file_row_number)"
    return f"""
        SELECT {columns}{replace} FROM {source} AS latest
        WHERE NOT EXISTS (
            SELECT 1 FROM (
                SELECT filename, file_row_number FROM {source}
                WHERE hash({keys}) IN (
                    SELECT hash({keys}) AS h FROM {source} GROUP BY h HAVING count(*) > 1
                )
                QUALIFY row_number() OVER (
                    PARTITION BY {keys}
                    ORDER BY landed_at DESC, filename DESC, file_row_number DESC
                ) > 1
            ) AS older
            WHERE older.filename = latest.filename
              AND older.file_row_number = latest.file_row_number
        )"""


def create_views(
    con: duckdb.DuckDBPyConnection, lake: str | Path, tables: Mapping[str, Table]
) -> list[str]:
    """Create one view per table over its Parquet parts, deduplicated on the table's key.

    Embeddings are cast to ``FLOAT[d]`` so ``array_cosine_similarity`` works directly;
    a table holding several dimensions (two models side by side) keeps them as lists.
    A table with no parts yet becomes an empty table with its contract's columns. A
    ``current_set`` table (``fused``) shows the current model set's rows, every vector
    ``FLOAT[d]`` of that set's dimensions, and ``<table>_all`` shows every set's.
    """
    created = []
    for table, spec in tables.items():
        schema = spec.schema
        files = parts(lake, table)
        if not files:
            empty = pl.DataFrame(schema=dict(schema)).to_arrow()  # noqa: F841 (scanned by name)
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM empty")
            if spec.current_set:
                con.execute(f"CREATE OR REPLACE VIEW {table}_all AS SELECT * FROM {table}")
            created.append(table)
            continue
        file_list = sql_paths(files)
        source = f"read_parquet([{file_list}], union_by_name = true)"
        named_rows = (
            f"read_parquet([{file_list}], union_by_name = true,"
            " filename = true, file_row_number = true)"
        )
        con.execute(f"DROP TABLE IF EXISTS {table}")
        nulls = _missing_columns(con, source, schema)
        named_rows, source = (f"(SELECT *{nulls} FROM {s})" if nulls else s for s in (named_rows, source))
        if spec.current_set:
            latest = latest_rows(named_rows, spec.key)
            con.execute(f"CREATE OR REPLACE VIEW {table}_all AS {latest}")
            con.execute(f"CREATE OR REPLACE VIEW {table} AS {_current_set_rows(con, table)}")
            created.append(table)
            continue
        replace = ""
        if "embedding" in schema:
            dim = _embedding_dim(con, source)
            if dim is not None:
                replace = f" REPLACE (embedding::FLOAT[{dim}] AS embedding)"
        latest = latest_rows(named_rows, spec.key, replace)
        if spec.where:
            latest = f"SELECT * FROM ({latest}) AS q WHERE {spec.where}"
        con.execute(f"CREATE OR REPLACE VIEW {table} AS {latest}")
        created.append(table)
    return created


def _missing_columns(
    con: duckdb.DuckDBPyConnection, source: str, schema: Mapping[str, pl.DataType]
) -> str:
    """Select-list entries (``, NULL::T AS c``) for the contract columns ``source`` lacks
    (parts written by an older Braid), so views and queries can name every column."""
    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    missing = {name: dtype for name, dtype in schema.items() if name not in present}
    if not missing:
        return ""
    empty = pl.DataFrame(schema=missing).to_arrow()  # noqa: F841 (scanned by name)
    types = dict(
        con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM empty)").fetchall()
    )
    return "".join(f", NULL::{types[name]} AS {name}" for name in missing)


def current_model_set(con: duckdb.DuckDBPyConnection) -> tuple[str | None, dict[str, int]]:
    """The lake's current model set (the latest one a run landed) and its dimension per modality.

    Reads the ``model_sets`` view; (None, {}) for a lake no run has recorded a set in.
    """
    rows = con.execute(
        """
        SELECT modality, embedding_dim, model_set FROM model_sets
        WHERE model_set = (SELECT model_set FROM model_sets ORDER BY landed_at DESC, model_set
                           LIMIT 1)
        """
    ).fetchall()
    if not rows:
        return None, {}
    return rows[0][2], {modality: int(dim) for modality, dim, _ in rows}


def _current_set_rows(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """SQL for the current model set's rows of ``<table>_all``, each vector as ``FLOAT[d]``."""
    key, dims = current_model_set(con)
    if key is None:
        return f"SELECT * FROM {table}_all WHERE false"
    quoted = key.replace("'", "''")
    rows = f"SELECT * FROM {table}_all WHERE model_set = '{quoted}'"
    casts = [
        f"{modality}_embedding::FLOAT[{dim}] AS {modality}_embedding"
        for modality, dim in sorted(dims.items())
    ]
    dim = _embedding_dim(con, f"({rows})")
    if dim is not None:
        casts.insert(0, f"embedding::FLOAT[{dim}] AS embedding")
    return f"SELECT * REPLACE ({', '.join(casts)}) FROM ({rows})"


def connect(lake: str | Path, tables: Mapping[str, Table]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table: what `braid sql` queries."""
    import duckdb

    con = duckdb.connect()
    create_views(con, lake, tables)
    return con


def write_catalog(lake: str | Path, tables: Mapping[str, Table]) -> Path:
    """Write ``<lake>/braid.duckdb`` (views only) for any DuckDB client, swapped in atomically."""
    import duckdb

    final = Path(lake) / CATALOG_FILE
    temporary = Path(lake) / f".{CATALOG_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        with duckdb.connect(str(temporary)) as con:
            create_views(con, lake, tables)
            con.execute("CHECKPOINT")
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
        Path(f"{temporary}.wal").unlink(missing_ok=True)
    return final


def rows_frame(
    rows: Iterable[Mapping[str, object]], schema: Mapping[str, pl.DataType]
) -> pl.DataFrame:
    """A frame with exactly the contract's columns and types, whatever the rows carry."""
    frame = pl.DataFrame(list(rows), schema_overrides=dict(schema), infer_schema_length=None)
    if frame.is_empty():
        return pl.DataFrame(schema=dict(schema))
    missing = [
        pl.lit(None, dtype).alias(name)
        for name, dtype in schema.items()
        if name not in frame.columns
    ]
    return frame.with_columns(missing).select(
        [pl.col(name).cast(dtype) for name, dtype in schema.items()]
    )


STAGED_TABLES = ("features", "quarantine", "objects", "costs")


def stage_frames(staging: str | Path, part: str, frames: Mapping[str, pl.DataFrame]) -> None:
    """Write a child run's results for its parent to land: one atomic file per frame.

    Empty frames are written too (with their schema), so the parent can tell an empty
    result from a missing one.
    """
    folder = Path(staging)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        final = folder / f"{part}.{name}.parquet"
        temporary = folder / f".{part}.{name}.{uuid.uuid4().hex}.tmp"
        try:
            frame.write_parquet(temporary)
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)


def read_staged(staging: str | Path, part: str, names: Iterable[str]) -> dict[str, pl.DataFrame]:
    """Read back what ``stage_frames`` wrote; raises FileNotFoundError if the child wrote nothing."""
    return {name: pl.read_parquet(Path(staging) / f"{part}.{name}.parquet") for name in names}


def stage_plan(staging: str | Path, part: str, batches: list[tuple[str, list[ObjectRef]]]) -> str:
    """Write a batch plan where ``extract-modalities`` reads it; returns its path."""
    rows = [{**asdict(ref), "batch": i} for i, (_, refs) in enumerate(batches) for ref in refs]
    frame = pl.DataFrame(rows, schema_overrides={"size": pl.Int64, "batch": pl.Int64})
    stage_frames(staging, f"{part}.plan", {"refs": frame})
    return str(Path(staging) / f"{part}.plan")


def read_plan(plan: str) -> list[tuple[str, list[ObjectRef]]]:
    """The batches ``stage_plan`` wrote, in order."""
    staged = Path(plan)
    (frame,) = read_staged(staged.parent, staged.name, ["refs"]).values()
    batches: dict[int, list[ObjectRef]] = defaultdict(list)
    for row in frame.iter_rows(named=True):
        batch = row.pop("batch")
        batches[batch].append(ObjectRef(**row))
    return [(refs[0].modality, refs) for _, refs in sorted(batches.items())]
