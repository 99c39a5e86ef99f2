"""An in-memory vector index for the query API: the lake's embeddings as DuckDB ``FLOAT[d]`` tables.

A similarity search over the ``fused`` view spends nearly all its time reading the list
column out of Parquet and casting it to ``FLOAT[d]`` (benchmark f); the same scan over a
native ``FLOAT[d]`` column costs a fraction of that. The index keeps, for each table in
``INDEXED``, the view's current row per key (the latest landed; ties to the later part
and row) in schema ``vector_index``:

- ``<table>_rows``: key, ranking and carried columns of every current row, no vectors;
- ``<table>_d<d>``: key, carried columns and the ``FLOAT[d]`` vector of the current rows
  of dimension ``d``, one table per dimension (two models side by side still work).

It costs about 4 bytes times dimension times rows. ``update`` reads only parts it has not seen
and merges their rows by the view's ranking, so a refresh costs what landed, not the
lake; a part that vanished or changed (the lake rewritten) makes that table start over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.common import MODALITIES
from tasks.lake import store as lake

if TYPE_CHECKING:
    import duckdb

SCHEMA = "vector_index"
# The view's order of rows within a key, best first (see ``tasks.lake.latest_rows``).
# Parts of a table share a folder, so their names order them as their full paths do.
RANKING = "landed_at DESC, part DESC, file_row_number DESC"


@dataclass(frozen=True)
class IndexedTable:
    """A lake table whose embeddings the index holds, and the columns its searches need."""

    name: str
    key: tuple[str, ...]
    carried: dict[str, str]  # column -> DuckDB type

    @property
    def rows(self) -> str:
        return f"{SCHEMA}.{self.name}_rows"

    def vectors(self, dim: int) -> str:
        return f"{SCHEMA}.{self.name}_d{dim}"


FUSED = IndexedTable(
    "fused",
    ("sample_id", "model_set"),
    {"modalities": "VARCHAR[]", **{f"has_{m}": "BOOLEAN" for m in MODALITIES}},
)
TEXT = IndexedTable(
    "text_features",
    ("object_id", "model_key"),
    {"sample_id": "VARCHAR", "preview": "VARCHAR", "model_id": "VARCHAR"},
)
# The index holds every model set's fused rows (its key includes the set); searches keep
# the current set's, as the ``fused`` view does.
INDEXED = (FUSED, TEXT)

PartStamp = tuple[int, int]  # size, mtime_ns


def is_built(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection's database holds the index (as its current transaction sees it)."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = $s", {"s": SCHEMA}
    ).fetchone()
    return bool(found and found[0])


def has_vectors(con: duckdb.DuckDBPyConnection, table: IndexedTable, dim: int) -> bool:
    """Whether the index holds vectors of ``dim`` floats for ``table``."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = $s AND table_name = $t",
        {"s": SCHEMA, "t": f"{table.name}_d{dim}"},
    ).fetchone()
    return bool(found and found[0])


def _stamps(files: list[Path]) -> dict[Path, PartStamp]:
    stamps = {}
    for part in files:
        try:
            stat = part.stat()
        except FileNotFoundError:  # replaced while listing: the next update sees it
            continue
        stamps[part] = (stat.st_size, stat.st_mtime_ns)
    return stamps


@dataclass
class VectorIndex:
    """The index of one lake, kept in a DuckDB database that the caller owns.

    ``update`` runs inside the caller's transaction; ``loaded`` says which parts and how
    many rows the last update read.
    """

    lake_path: Path
    seen: dict[str, dict[Path, PartStamp]] = field(default_factory=dict)
    loaded: dict[str, tuple[list[Path], int]] = field(default_factory=dict)
    built: bool = False

    def update(self, con: duckdb.DuckDBPyConnection) -> None:
        """Bring the index up to the lake's parts: merge new parts, rebuild a rewritten table."""
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        seen, loaded = {}, {}
        for table in INDEXED:
            stamps = _stamps(lake.parts(self.lake_path, table.name))
            before = self.seen.get(table.name, {})
            if any(stamps.get(part) != stamp for part, stamp in before.items()):
                _drop(con, table)
                before = {}
            new = sorted(part for part in stamps if part not in before)
            loaded[table.name] = (new, _merge(con, table, new))
            seen[table.name] = stamps
        # Only now: an update that raised left the caller's transaction to roll back.
        self.seen, self.loaded, self.built = seen, loaded, True


def _vector_tables(table: IndexedTable) -> str:
    """A regular expression for the names of a table's vector tables, one per dimension."""
    return re.escape(table.name) + r"_d[0-9]+"


def _drop(con: duckdb.DuckDBPyConnection, table: IndexedTable) -> None:
    names = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = $s "
        "AND (table_name = $rows OR regexp_full_match(table_name, $vectors))",
        {"s": SCHEMA, "rows": f"{table.name}_rows", "vectors": _vector_tables(table)},
    ).fetchall()
    for (name,) in names:
        con.execute(f"DROP TABLE {SCHEMA}.{name}")


def _merge(con: duckdb.DuckDBPyConnection, table: IndexedTable, files: list[Path]) -> int:
    """Merge the rows of ``files`` into the index of ``table``; returns how many rows they held."""
    keys = ", ".join(table.key)
    key_columns = ", ".join(f"{k} VARCHAR" for k in table.key)
    carried = ", ".join(f"{c} {t}" for c, t in table.carried.items())
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {table.rows} ({key_columns}, landed_at TIMESTAMPTZ, "
        f"part VARCHAR, file_row_number BIGINT, embedding_dim INTEGER, {carried})"
    )
    if not files:
        return 0
    named = (
        f"read_parquet([{lake.sql_paths(files)}], union_by_name = true,"
        " filename = true, file_row_number = true)"
    )
    present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {named}").fetchall()}

    def column(name: str, kind: str) -> str:
        return f"{name}::{kind} AS {name}" if name in present else f"NULL::{kind} AS {name}"

    columns = ", ".join(
        [
            *(column(k, "VARCHAR") for k in table.key),
            column("landed_at", "TIMESTAMPTZ"),
            "parse_filename(filename) AS part",
            "file_row_number",
            column("embedding_dim", "INTEGER"),
            *(column(c, t) for c, t in table.carried.items()),
        ]
    )
    # The latest row per key among the new parts, then against the key's current row.
    latest = lake.latest_rows(named, table.key, keep_row_names=True)
    con.execute(f"CREATE OR REPLACE TEMP TABLE incoming AS SELECT {columns} FROM ({latest})")
    (read,) = con.execute(f"SELECT count(*) FROM {named}").fetchone() or (0,)
    matched = " AND ".join(f"r.{k} = i.{k}" for k in table.key)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE winners AS
        SELECT * EXCLUDE (incoming) FROM (
            SELECT *, true AS incoming FROM incoming
            UNION ALL BY NAME
            SELECT *, false AS incoming FROM {table.rows} AS r
            WHERE EXISTS (SELECT 1 FROM incoming AS i WHERE {matched})
        )
        QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {RANKING}) = 1 AND incoming
        """
    )
    replaced = " AND ".join(f"r.{k} = w.{k}" for k in table.key)
    dims = con.execute(
        "SELECT table_name FROM duckdb_tables() "
        "WHERE schema_name = $s AND regexp_full_match(table_name, $v)",
        {"s": SCHEMA, "v": _vector_tables(table)},
    ).fetchall()
    for target in [table.rows, *(f"{SCHEMA}.{name}" for (name,) in dims)]:
        con.execute(f"DELETE FROM {target} AS r USING winners AS w WHERE {replaced}")
    con.execute(f"INSERT INTO {table.rows} BY NAME SELECT * FROM winners")
    carried_names = ", ".join(f"w.{c}" for c in table.carried)
    for (dim,) in con.execute(
        "SELECT DISTINCT embedding_dim FROM winners WHERE embedding_dim IS NOT NULL ORDER BY 1"
    ).fetchall():
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {table.vectors(dim)} "
            f"({key_columns}, {carried}, embedding FLOAT[{dim}])"
        )
        con.execute(
            f"""
            INSERT INTO {table.vectors(dim)}
            SELECT {", ".join(f"w.{k}" for k in table.key)}, {carried_names},
                   p.embedding::FLOAT[{dim}]
            FROM {named} AS p
            JOIN winners AS w
              ON parse_filename(p.filename) = w.part AND p.file_row_number = w.file_row_number
            WHERE w.embedding_dim = {dim}
            """
        )
    con.execute("DROP TABLE incoming")
    con.execute("DROP TABLE winners")
    return int(read)
