"""What a run must compute: what its settings want, minus what the lake already holds.

Wanted, for each object in the source, is a feature row under the model key its
modality's slot model gives (``tasks.media.identity``); for each sample, a fused row of
the current model set whose input fingerprint matches the inputs the lake now holds.
Everything is read back from the lake, never remembered from an earlier run, so a run
that crashed at any point is finished by the next plain run, and a model change
recomputes exactly the rows it changes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from tasks.common import MODALITIES, ObjectRef
from tasks.ingest.discover import Discovery
from tasks.lake.store import rows_frame
from tasks.lake.tables import MEMBERS, feature_table
from tasks.media.identity import ModelSet

if TYPE_CHECKING:
    import duckdb

# Stages whose outcome depends on the model: another model set tries the object again.
MODEL_DEPENDENT_STAGES = frozenset({"embed", "validate"})


@dataclass
class Plan:
    """A run's work: objects to extract, refusals to file and memberships to record."""

    extract: list[ObjectRef] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    members: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MEMBERS))
    done: int = 0  # objects whose rows the lake already holds (or that stay in quarantine)


def _column(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> set[Any]:
    return {row[0] for row in con.execute(sql, params or []).fetchall()}


def plan_run(
    found: Discovery,
    con: duckdb.DuckDBPyConnection,
    model_set: ModelSet,
    run_id: str,
    redrive: bool = False,
) -> Plan:
    """Sort what discovery found into work, using the lake's views on ``con``.

    ``redrive`` takes quarantined objects again (what ``braid redrive`` chose), and
    files their refusals anew, with today's reasons.
    """
    plan = Plan()
    landed = {
        m: _column(
            con,
            f"SELECT DISTINCT object_id FROM {feature_table(m)} WHERE model_key = ?",
            [model_set.slot(m).key],
        )
        for m in MODALITIES
    }
    quarantined = {
        object_id: (stage, model_key)
        for object_id, stage, model_key in con.execute(
            "SELECT object_id, stage, model_key FROM quarantine"
        ).fetchall()
    }
    for ref in found.new:
        key = model_set.slot(ref.modality).key
        held = quarantined.get(ref.object_id)
        if ref.object_id in landed[ref.modality] or (
            not redrive
            and held is not None
            and (held[0] not in MODEL_DEPENDENT_STAGES or held[1] == key)
        ):
            plan.done += 1
        else:
            plan.extract.append(ref)
    for item in found.rejected:
        if item["object_id"] in quarantined and not redrive:
            plan.done += 1
        else:
            plan.rejected.append(item)
    members = {
        uri: (sample_id, object_id)
        for uri, sample_id, object_id in con.execute(
            "SELECT uri, sample_id, object_id FROM members"
        ).fetchall()
    }
    now = datetime.now(UTC)
    plan.members = rows_frame(
        (
            {"uri": ref.uri, "sample_id": ref.sample_id, "object_id": ref.object_id,
             "modality": ref.modality, "flow_run_id": run_id, "landed_at": now}
            for ref in found.members
            if members.get(ref.uri) != (ref.sample_id, ref.object_id)
        ),
        MEMBERS,
    )  # fmt: skip
    return plan


def fused_quarantine_key(model_set: str, fingerprint: str) -> str:
    """The ``model_key`` a fused sample's quarantine row carries: the set and inputs it failed on."""
    return f"{model_set}:{fingerprint}"


def member_rows_sql(model_set: ModelSet, columns: str) -> tuple[str, list[Any]]:
    """SQL (and its parameters) for every feature row a sample holds under the set's model
    keys, through its members: ``sample_id``, ``modality`` and the feature ``columns``."""
    selects = [
        f"SELECT '{slot.modality}' AS modality, {columns} "
        f"FROM {feature_table(slot.modality)} WHERE model_key = ?"
        for slot in model_set.slots
    ]
    return (
        "SELECT DISTINCT m.sample_id, f.* "
        f"FROM members AS m JOIN ({' UNION ALL '.join(selects)}) AS f USING (object_id)",
        [slot.key for slot in model_set.slots],
    )


def samples_to_fuse(con: duckdb.DuckDBPyConnection, model_set: ModelSet) -> dict[str, str]:
    """Samples whose fused row of ``model_set`` is missing or was fused from other inputs,
    with the fingerprint of the inputs they have now; a sample whose fusion failed on
    exactly these inputs stays in quarantine instead."""
    inputs, params = member_rows_sql(model_set, "object_id, model_key")
    rows = con.execute(
        f"""
        WITH prints AS (
            SELECT sample_id,
                   md5(string_agg(modality || ':' || object_id || ':' || model_key, ','
                                  ORDER BY modality, object_id, model_key)) AS fingerprint
            FROM ({inputs}) GROUP BY sample_id
        )
        SELECT p.sample_id, p.fingerprint FROM prints AS p
        WHERE NOT EXISTS (
            SELECT 1 FROM fused_all AS f
            WHERE f.sample_id = p.sample_id AND f.model_set = ?
              AND f.input_fingerprint = p.fingerprint
        )
        AND NOT EXISTS (
            SELECT 1 FROM quarantine AS q
            WHERE q.object_id = 'fused:' || p.sample_id AND q.model_key = ? || ':' || p.fingerprint
        )
        ORDER BY p.sample_id
        """,
        [*params, model_set.key, model_set.key],
    ).fetchall()
    return dict(rows)


@dataclass
class Pending:
    """What a run over a source would do to a lake, found without writing anything."""

    extract: dict[str, int] = field(default_factory=dict)  # objects per modality
    rejected: int = 0  # refusals to file
    members: int = 0  # memberships to record
    fuse: int = 0  # samples to (re-)fuse
    known: int = 0  # objects the lake already holds
    duplicates: int = 0  # copies of bytes found under another name in the source
    reasons: list[str] = field(default_factory=list)  # other writes due (catalog, model set)

    @property
    def nothing(self) -> bool:
        return not (self.extract or self.rejected or self.members or self.fuse or self.reasons)


def pending(found: Discovery, lake: str, model_set: ModelSet) -> Pending:
    """What a run over ``found`` would write to ``lake`` under ``model_set``: the same
    planning a run does (``plan_run``, ``samples_to_fuse``), read-only.

    Besides rows, a run writes when the lake has no catalog yet or one older than a
    part (a run that crashed before refreshing it), when its current model set is not
    the wanted one, and when a crashed run left staging behind: each is a reason.
    """
    from tasks.lake import store
    from tasks.lake.lock import STAGING
    from tasks.lake.tables import TABLES

    root = Path(lake)
    result = Pending()
    catalog = root / store.CATALOG_FILE
    if not catalog.is_file():
        result.reasons.append("the lake has no catalog yet")
    else:
        built = catalog.stat().st_mtime_ns
        if any(p.stat().st_mtime_ns > built for t in TABLES for p in store.parts(root, t)):
            result.reasons.append("the catalog is older than a table's parts")
    staging = root / STAGING
    if staging.is_dir() and any(staging.iterdir()):
        result.reasons.append("a crashed run left staging behind")
    with store.connect(root, TABLES) as con:
        plan = plan_run(found, con, model_set, "pending")
        result.fuse = len(samples_to_fuse(con, model_set))
        current = store.current_model_set(con)[0]
    result.extract = dict(Counter(ref.modality for ref in plan.extract))
    result.rejected, result.members = len(plan.rejected), plan.members.height
    result.known, result.duplicates = plan.done, found.duplicates
    if current != model_set.key:
        result.reasons.append("the lake's current model set is another")
    return result
