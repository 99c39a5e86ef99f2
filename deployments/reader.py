"""The API's view of the lake: one in-memory DuckDB, refreshed as parts land.

The plumbing of `braid api`: the queries themselves are plain functions in
``tasks.serve.serving``; this keeps a database of the lake's views (and the vector
index) current for the API's threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.lake import store as lake
from tasks.lake.query import require_lake
from tasks.lake.tables import TABLES
from tasks.serve.serving import EXTRA_TABLES, replace_views
from tasks.serve.vectors import VectorIndex

if TYPE_CHECKING:
    import duckdb


def lake_signature(lake_path: str | Path) -> tuple[tuple[str, str, int, int], ...]:
    """What identifies the lake's current content: each visible part's name, size and mtime."""
    root = require_lake(lake_path)
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
