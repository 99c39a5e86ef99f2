"""Pages of the API's listings: ``limit`` rows after an opaque cursor (or an offset)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tasks.serve.serving import OBJECT_COLUMNS, QUARANTINE_COLUMNS, rows

if TYPE_CHECKING:
    import duckdb

_CURSOR_PREFIX = "k1."


class CursorError(ValueError):
    """A page cursor this API did not hand out."""


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
    found = rows(
        con,
        f"SELECT {', '.join(columns)} FROM {table} "
        f"WHERE {filters} AND ($after IS NULL OR object_id > $after) "
        "ORDER BY object_id LIMIT $limit OFFSET $offset",
        {**params, "after": after, "limit": page.limit + 1, "offset": page.offset},
    )
    more = len(found) > page.limit
    items = found[: page.limit]
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
