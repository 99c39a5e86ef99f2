"""Answers for the query API (`braid api`), as plain functions over a snapshot of the lake.

Each function takes a DuckDB connection holding the lake's views and returns plain data
(dicts, lists), so it is tested without a server; ``deployments/api.py`` puts HTTP around
them. The lake is only read: ``LakeReader`` keeps an in-memory DuckDB with views over the
Parquet parts and rebuilds it when the parts change, so the pipeline keeps landing while
the API serves, and the catalog file (``braid.duckdb``) is never opened.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.common import MODALITIES
from tasks.lake import store as lake
from tasks.lake.query import connect
from tasks.lake.tables import TABLES, feature_table
from tasks.serve.vectors import FUSED, TEXT, VectorIndex, has_vectors, is_built

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
_CURSOR_PREFIX = "k1."


class CursorError(ValueError):
    """A page cursor this API did not hand out."""


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
    if not (Path(lake_path) / "objects").is_dir():
        raise FileNotFoundError(
            f"no lake at {str(lake_path)!r}: run `braid run SOURCE --lake {lake_path}` first"
        )
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


def lake_signature(lake_path: str | Path) -> tuple[tuple[str, str, int, int], ...]:
    """What identifies the lake's current content: each visible part's name, size and mtime."""
    root = Path(lake_path)
    if not (root / "objects").is_dir():
        raise FileNotFoundError(
            f"no lake at {str(lake_path)!r}: run `braid run SOURCE --lake {lake_path}` first"
        )
    entries = []
    for table in (*TABLES, *EXTRA_TABLES):
        for part in lake.parts(root, table):
            try:
                stat = part.stat()
            except FileNotFoundError:  # replaced between listing and stat: the next check sees it
                continue
            entries.append((table, part.name, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


class LakeReader:
    """The lake's views, and an index of its embeddings, shared by threads; refreshed as parts land.

    One in-memory DuckDB database serves every request, each through its own cursor
    inside a transaction. A refresh replaces the views and merges new parts into the
    vector index (``tasks.serve.vectors``) in one transaction, so by DuckDB's MVCC a request
    sees the lake as it was before a refresh or after it, never halfway, and nothing is
    copied. Building a fresh database and swapping it in would copy the index, O(lake),
    at every landing.

    Parts are checked at most every ``check_every`` seconds, so a busy server lists the
    lake's folders a few times a second, not once per request; replacing the views costs
    tens of milliseconds and happens only when something landed. The index is built on
    the first request that asks for it (``connection(vectors=True)``: seconds for a
    million vectors, while other requests wait), then kept up to date at each refresh,
    reading only the new parts; ``vectors=False`` leaves searches on the views.
    """

    def __init__(
        self, lake_path: str | Path, check_every: float = 1.0, vectors: bool = True
    ) -> None:
        self.lake_path = Path(lake_path)
        self.check_every = check_every
        self.vectors = vectors
        self._lock = threading.Lock()
        self._db: duckdb.DuckDBPyConnection | None = None
        self._index = VectorIndex(self.lake_path)
        self._signature: tuple[tuple[str, str, int, int], ...] | None = None
        self._checked = -math.inf

    @property
    def index(self) -> VectorIndex:
        """The vector index's bookkeeping: whether it is built, what its last update read."""
        return self._index

    def _cursor(self, vectors: bool = False) -> duckdb.DuckDBPyConnection:
        """A new cursor on the database, refreshed first if the lake changed since the last look."""
        import duckdb

        with self._lock:
            now = time.monotonic()
            if self._db is None or now - self._checked >= self.check_every:
                try:
                    signature = lake_signature(self.lake_path)
                except FileNotFoundError:
                    # In-flight requests keep the old database through their cursors.
                    self._db, self._signature = None, None
                    self._index = VectorIndex(self.lake_path)
                    raise
                self._checked = now
                if self._db is None:
                    db = duckdb.connect()
                    db.execute("SET GLOBAL TimeZone = 'UTC'")  # every cursor's days are UTC days
                    self._refresh(db, index=False)
                    self._db, self._signature = db, signature
                elif signature != self._signature:
                    self._refresh(self._db, index=self._index.built)
                    self._signature = signature
            if vectors and self.vectors and not self._index.built:
                self._refresh(self._db, index=True, views=False)
            # Made under the lock: never while a refresh is running on the same connection.
            return self._db.cursor()

    def _refresh(self, db: duckdb.DuckDBPyConnection, index: bool, views: bool = True) -> None:
        """Replace the views and update the index in one transaction."""
        db.execute("BEGIN TRANSACTION")
        try:
            if views:
                replace_views(db, self.lake_path)
            if index:
                self._index.update(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @contextmanager
    def connection(self, vectors: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the current lake for one thread, in a read transaction that sees one state
        of it; ``vectors`` builds the vector index first if it is not yet. FileNotFoundError
        without a lake."""
        cursor = self._cursor(vectors)
        try:
            cursor.execute("BEGIN TRANSACTION")
            yield cursor
        finally:
            cursor.close()  # rolls back: requests only read

    def ready(self) -> bool:
        """Whether the lake exists (and its views can be built)."""
        try:
            self._cursor().close()
        except FileNotFoundError:
            return False
        return True


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


def _rows(
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


# --- pages --------------------------------------------------------------------------------------


def encode_cursor(key: str) -> str:
    """An opaque cursor that resumes a page after ``key``."""
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The key a cursor resumes after; CursorError for anything ``encode_cursor`` did not make."""
    if not cursor.startswith(_CURSOR_PREFIX):
        raise CursorError("invalid cursor: pass next_cursor from a previous page")
    try:
        encoded = cursor.removeprefix(_CURSOR_PREFIX).encode("ascii")
        key = base64.b64decode(encoded, altchars=b"-_", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise CursorError("invalid cursor: pass next_cursor from a previous page") from exc
    if not key:
        raise CursorError("invalid cursor: pass next_cursor from a previous page")
    return key


@dataclass(frozen=True)
class PageRequest:
    """Which slice of a listing: ``limit`` rows after ``cursor`` (or after ``offset`` rows)."""

    limit: int = 100
    offset: int = 0
    cursor: str | None = None


def _page(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: tuple[str, ...],
    filters: str,
    params: Mapping[str, Any],
    page: PageRequest,
) -> dict[str, Any]:
    """One page of ``table`` in ``object_id`` order, with the cursor of the next page."""
    if page.limit < 1:
        raise ValueError("limit must be at least 1")
    after = decode_cursor(page.cursor) if page.cursor is not None else None
    count = con.execute(f"SELECT count(*) FROM {table} WHERE {filters}", dict(params)).fetchone()
    rows = _rows(
        con,
        f"SELECT {', '.join(columns)} FROM {table} "
        f"WHERE {filters} AND ($after IS NULL OR object_id > $after) "
        "ORDER BY object_id LIMIT $limit OFFSET $offset",
        {**params, "after": after, "limit": page.limit + 1, "offset": page.offset},
    )
    more = len(rows) > page.limit
    items = rows[: page.limit]
    return {
        "items": items,
        "total": int(count[0]) if count else 0,
        "limit": page.limit,
        "offset": page.offset,
        "next_cursor": encode_cursor(items[-1]["object_id"]) if more else None,
    }


def objects_page(
    con: duckdb.DuckDBPyConnection,
    modality: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    page: PageRequest = PageRequest(),
) -> dict[str, Any]:
    """Objects in ``object_id`` order; ``since`` keeps those whose row landed at or after it."""
    return _page(
        con,
        "objects",
        OBJECT_COLUMNS,
        "($modality IS NULL OR modality = $modality) AND ($status IS NULL OR status = $status)"
        " AND ($since IS NULL OR landed_at >= $since)",
        {"modality": modality, "status": status, "since": since},
        page,
    )


def quarantine_page(
    con: duckdb.DuckDBPyConnection,
    stage: str | None = None,
    reason: str | None = None,
    modality: str | None = None,
    page: PageRequest = PageRequest(),
) -> dict[str, Any]:
    """Objects now in quarantine in ``object_id`` order; ``reason`` is a case-insensitive substring."""
    return _page(
        con,
        "quarantine",
        QUARANTINE_COLUMNS,
        "($stage IS NULL OR stage = $stage)"
        " AND ($reason IS NULL OR contains(lower(reason), lower($reason)))"
        " AND ($modality IS NULL OR modality = $modality)",
        {"stage": stage, "reason": reason, "modality": modality},
        page,
    )


# --- samples ------------------------------------------------------------------------------------


def sample_detail(
    con: duckdb.DuckDBPyConnection, sample_id: str, vectors: bool = False
) -> dict[str, Any] | None:
    """A sample's objects, features per modality, fused row and quarantined objects; None if unknown.

    Raw embeddings (``embedding``, ``*_embedding``) are left out unless ``vectors``.
    """
    params = {"s": sample_id}
    objects = _rows(
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
                _rows(
                    con,
                    f"SELECT * FROM {table} WHERE sample_id = $s ORDER BY uri, model_id",
                    params,
                )
            )
    fused = without_vectors(_rows(con, "SELECT * FROM fused WHERE sample_id = $s", params))
    quarantine = _rows(
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
        return _rows(
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
    return _rows(
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

    As ``tasks.lake.query.search_text``: a sample scores its best text, whose preview comes along.
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
    return _rows(
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
    totals = _rows(
        con,
        """
        SELECT (SELECT count(*) FROM objects) AS objects,
               (SELECT count(*) FROM objects WHERE status = 'landed') AS landed,
               (SELECT count(*) FROM quarantine) AS quarantined,
               (SELECT count(DISTINCT sample_id) FROM objects) AS samples,
               (SELECT count(*) FROM fused) AS samples_fused
        """,
    )[0]
    by_modality_status = _rows(
        con,
        "SELECT modality, status, count(*) AS count FROM objects GROUP BY ALL ORDER BY ALL",
    )
    by_day = _rows(
        con,
        "SELECT CAST(discovered_at AS DATE) AS day, modality, status, count(*) AS count "
        "FROM objects GROUP BY ALL ORDER BY ALL",
    )
    quarantine_by_stage = _rows(
        con, "SELECT stage, count(*) AS count FROM quarantine GROUP BY ALL ORDER BY ALL"
    )
    last_runs = _rows(
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
