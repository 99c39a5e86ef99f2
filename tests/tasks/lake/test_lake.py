"""The lake: atomic Parquet parts, and DuckDB views that deduplicate and type embeddings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.lake import store as lake
from tasks.lake.store import CATALOG_FILE, create_views, write_catalog, write_part
from tasks.lake.tables import OBJECTS, TABLES, Table

T0 = datetime(2024, 1, 1, tzinfo=UTC)

# A small table with the shape of a feature table: a key, an embedding and lineage.
THINGS = Table(
    {
        "object_id": pl.String(),
        "model_id": pl.String(),
        "label": pl.String(),
        "embedding": pl.List(pl.Float32()),
        "embedding_dim": pl.Int32(),
        "landed_at": pl.Datetime("us", "UTC"),
    },
    ("object_id", "model_id"),
)


def things(rows: list[tuple[str, str, str, list[float], datetime]]) -> pl.DataFrame:
    return lake.rows_frame(
        [
            {
                "object_id": o,
                "model_id": m,
                "label": label,
                "embedding": e,
                "embedding_dim": len(e),
                "landed_at": t,
            }
            for o, m, label, e, t in rows
        ],
        THINGS.schema,
    )


def objects(ids: list[str], status: str = "landed") -> pl.DataFrame:
    rows = [
        {
            "object_id": i,
            "uri": f"/src/{i}",
            "sample_id": "s",
            "modality": "text",
            "media_type": "text/plain",
            "size_bytes": 1,
            "discovered_at": T0,
            "status": status,
            "flow_run_id": "run",
            "landed_at": T0,
        }
        for i in ids
    ]
    return lake.rows_frame(rows, OBJECTS)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def test_write_part_lands_one_parquet_file_and_no_temporary(tmp_path: Path) -> None:
    frame = objects(["a", "b"])

    path = write_part(tmp_path, "objects", frame, "run-1")

    assert path == tmp_path / "objects" / "run-1.parquet"
    assert listing(tmp_path) == ["objects", "run-1.parquet"]
    assert pl.read_parquet(path).equals(frame)
    assert lake.parts(tmp_path, "objects") == [path]


def ids_in(lake_path: Path) -> set[str]:
    """The object ids in every visible part of ``objects``."""
    files = lake.parts(lake_path, "objects")
    return set(pl.read_parquet(files)["object_id"]) if files else set()


def test_writing_a_part_again_replaces_it(tmp_path: Path) -> None:
    write_part(tmp_path, "objects", objects(["a", "b"]), "run-1")
    write_part(tmp_path, "objects", objects(["c"]), "run-1")
    assert listing(tmp_path / "objects") == ["run-1.parquet"]
    assert ids_in(tmp_path) == {"c"}


def test_a_failed_write_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_part(tmp_path, "objects", objects(["a"]), "run-1")
    real_write = pq.write_table

    def crash_midway(table: pa.Table, file: Path, **options: object) -> None:
        real_write(table.slice(0, 1), file)  # half a file on disk, then the worker dies
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        write_part(tmp_path, "objects", objects(["b", "c"]), "run-2")

    assert listing(tmp_path / "objects") == ["run-1.parquet"]
    assert ids_in(tmp_path) == {"a"}


def test_empty_frames_write_nothing(tmp_path: Path) -> None:
    assert write_part(tmp_path, "objects", objects([]), "run-1") is None
    assert write_part(tmp_path, "objects", pl.DataFrame(), "run-1") is None
    assert listing(tmp_path) == []
    assert ids_in(tmp_path) == set()


def test_table_without_parts_is_empty_with_the_contracts_columns(tmp_path: Path) -> None:
    with duckdb.connect() as con:
        created = create_views(con, tmp_path, TABLES)
        assert created == list(TABLES)
        for table, spec in TABLES.items():
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
            columns = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
            assert columns == list(spec.schema)


def test_views_keep_the_latest_row_per_key(tmp_path: Path) -> None:
    write_part(
        tmp_path,
        "things",
        things(
            [
                ("a", "m1", "first", [1, 0], T0),
                ("b", "m1", "only", [0, 1], T0),
            ]
        ),
        "run-1",
    )
    # A re-run lands "a" again, later; a second model adds a row beside the first.
    write_part(
        tmp_path,
        "things",
        things(
            [
                ("a", "m1", "second", [1, 0], T0 + timedelta(minutes=1)),
                ("a", "m2", "other model", [0, 1], T0),
            ]
        ),
        "run-2",
    )

    with duckdb.connect() as con:
        create_views(con, tmp_path, {"things": THINGS})
        rows = con.execute(
            "SELECT object_id, model_id, label FROM things ORDER BY object_id, model_id"
        ).fetchall()

    assert rows == [("a", "m1", "second"), ("a", "m2", "other model"), ("b", "m1", "only")]


def test_the_latest_landed_row_wins_whatever_the_part_order(tmp_path: Path) -> None:
    # Part names sort run-1, run-2, run-3, but the latest landing is in run-2; run-3
    # also repeats a key within one part.
    write_part(tmp_path, "things", things([("a", "m", "old", [1, 0], T0)]), "run-1")
    write_part(
        tmp_path, "things", things([("a", "m", "new", [0, 1], T0 + timedelta(hours=2))]), "run-2"
    )
    write_part(
        tmp_path,
        "things",
        things(
            [
                ("a", "m", "middle", [1, 1], T0 + timedelta(hours=1)),
                ("b", "m", "b-old", [1, 0], T0),
                ("b", "m", "b-new", [0, 1], T0 + timedelta(hours=1)),
            ]
        ),
        "run-3",
    )

    with duckdb.connect() as con:
        create_views(con, tmp_path, {"things": THINGS})
        rows = con.execute(
            "SELECT object_id, label, embedding FROM things ORDER BY object_id"
        ).fetchall()

    assert rows == [("a", "new", (0.0, 1.0)), ("b", "b-new", (0.0, 1.0))]


def test_a_key_landed_twice_at_the_same_time_keeps_one_row(tmp_path: Path) -> None:
    write_part(tmp_path, "things", things([("a", "m", "first", [1, 0], T0)]), "run-1")
    write_part(tmp_path, "things", things([("a", "m", "again", [1, 0], T0)]), "run-2")

    with duckdb.connect() as con:
        create_views(con, tmp_path, {"things": THINGS})
        labels = [row[0] for row in con.execute("SELECT label FROM things").fetchall()]

    assert len(labels) == 1 and labels[0] in {"first", "again"}


def test_keys_with_nulls_are_deduplicated_too(tmp_path: Path) -> None:
    # Costs measured per run have no object id: (run, modality, NULL, stage) is one key.
    costs = TABLES["costs"]

    def cost(stage: str, cpu_s: float, landed: datetime) -> dict[str, object]:
        return {"modality": "text", "object_id": None, "stage": stage, "cpu_s": cpu_s,
                "wall_s": cpu_s, "flow_run_id": "run", "landed_at": landed}  # fmt: skip

    write_part(tmp_path, "costs", lake.rows_frame([cost("fuse", 1.0, T0)], costs.schema), "p-1")
    later = [cost("fuse", 2.0, T0 + timedelta(minutes=1)), cost("land", 3.0, T0)]
    write_part(tmp_path, "costs", lake.rows_frame(later, costs.schema), "p-2")

    with duckdb.connect() as con:
        create_views(con, tmp_path, {"costs": costs})
        rows = con.execute("SELECT stage, cpu_s FROM costs ORDER BY stage").fetchall()

    assert rows == [("fuse", 2.0), ("land", 3.0)]


def test_parts_store_vectors_plain_and_the_rest_compressed(tmp_path: Path) -> None:
    frame = things([(f"o{i}", "m", "x" * 50, [float(i), 1.0], T0) for i in range(70_000)])

    path = write_part(tmp_path, "things", frame, "run-1")

    assert path is not None
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups == 3  # 70,000 rows in groups of 32,768: a thread each
    codecs = {
        metadata.row_group(0).column(i).path_in_schema.split(".")[0]: (
            metadata.row_group(0).column(i).compression
        )
        for i in range(metadata.num_columns)
    }
    assert codecs["embedding"] == "UNCOMPRESSED"
    assert codecs["label"] == codecs["object_id"] == "ZSTD"
    assert pl.read_parquet(path).equals(frame)
    assert pq.read_table(path).num_rows == 70_000


def test_views_read_parts_in_the_old_layout_beside_the_new(tmp_path: Path) -> None:
    folder = tmp_path / "things"
    folder.mkdir()
    # Written as the lake wrote parts before: polars, zstd everywhere, one row group.
    things([("a", "m", "old layout", [1, 0], T0), ("b", "m", "b", [1, 0], T0)]).write_parquet(
        folder / "run-1.parquet", compression="zstd", statistics=True
    )
    write_part(
        tmp_path, "things", things([("a", "m", "new layout", [0, 1], T0 + timedelta(1))]), "run-2"
    )

    with duckdb.connect() as con:
        create_views(con, tmp_path, {"things": THINGS})
        rows = con.execute(
            "SELECT object_id, label, typeof(embedding) FROM things ORDER BY object_id"
        ).fetchall()

    assert rows == [("a", "new layout", "FLOAT[2]"), ("b", "b", "FLOAT[2]")]


def test_embeddings_are_fixed_size_arrays_for_similarity(tmp_path: Path) -> None:
    write_part(
        tmp_path,
        "things",
        things(
            [
                ("a", "m", "", [0.6, 0.8, 0.0], T0),
                ("b", "m", "", [0.0, 0.0, 1.0], T0),
            ]
        ),
        "run-1",
    )

    with duckdb.connect() as con:
        create_views(con, tmp_path, {"things": THINGS})
        kind = con.execute("SELECT typeof(embedding) FROM things LIMIT 1").fetchone()
        scores = con.execute(
            "SELECT a.object_id, b.object_id, array_cosine_similarity(a.embedding, b.embedding) "
            "FROM things a, things b ORDER BY ALL"
        ).fetchall()

    assert kind == ("FLOAT[3]",)
    assert [(a, b, pytest.approx(s, abs=1e-6)) for a, b, s in scores] == [
        ("a", "a", 1.0),
        ("a", "b", 0.0),
        ("b", "a", 0.0),
        ("b", "b", 1.0),
    ]


def test_two_dimensions_side_by_side_stay_lists(tmp_path: Path) -> None:
    write_part(
        tmp_path,
        "things",
        things(
            [
                ("a", "small", "", [1.0, 0.0], T0),
                ("a", "large", "", [1.0, 0.0, 0.0], T0),
            ]
        ),
        "run-1",
    )

    with duckdb.connect() as con:
        create_views(con, tmp_path, {"things": THINGS})
        dims = con.execute(
            "SELECT model_id, len(embedding), typeof(embedding) FROM things ORDER BY model_id"
        ).fetchall()

    assert dims == [("large", 3, "FLOAT[]"), ("small", 2, "FLOAT[]")]


def test_catalog_file_is_queryable_read_only(tmp_path: Path) -> None:
    write_part(tmp_path, "objects", objects(["a", "b"]), "run-1")
    write_part(tmp_path, "things", things([("a", "m", "x", [1.0, 0.0], T0)]), "run-1")

    catalog = write_catalog(tmp_path, {**TABLES, "things": THINGS})

    assert catalog == tmp_path / CATALOG_FILE
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    with duckdb.connect(str(catalog), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM objects").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
        similarity = con.execute(
            "SELECT array_cosine_similarity(embedding, embedding) FROM things"
        ).fetchone()
    assert similarity == (pytest.approx(1.0),)


def test_catalog_sees_parts_landed_after_it_was_written(tmp_path: Path) -> None:
    write_part(tmp_path, "objects", objects(["a"]), "run-1")
    write_catalog(tmp_path, TABLES)
    write_part(tmp_path, "objects", objects(["b"]), "run-2")
    write_catalog(tmp_path, TABLES)

    with duckdb.connect(str(tmp_path / CATALOG_FILE), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM objects").fetchone() == (2,)


def test_rows_frame_gives_exactly_the_contract(tmp_path: Path) -> None:
    frame = lake.rows_frame([{"object_id": "a", "extra": 1, "size_bytes": 3}], OBJECTS)
    assert frame.schema == pl.Schema(OBJECTS)
    assert frame.row(0, named=True)["size_bytes"] == 3
    assert frame.row(0, named=True)["status"] is None
    assert lake.rows_frame([], OBJECTS).schema == pl.Schema(OBJECTS)


def test_parts_written_before_a_column_existed_read_it_as_null(tmp_path: Path) -> None:
    # A lake from an older Braid: its quarantine and feature parts lack ``model_key``.
    now = datetime(2024, 1, 1, tzinfo=UTC)
    old_quarantine = pl.DataFrame(
        {"object_id": ["a"], "stage": ["decode"], "reason": ["bad"], "landed_at": [now]}
    )
    write_part(tmp_path, "quarantine", old_quarantine, "old")
    old_images = pl.DataFrame(
        {"object_id": ["b"], "model_id": ["m"], "embedding": [[1.0, 0.0]], "embedding_dim": [2],
         "landed_at": [now]}
    )  # fmt: skip
    write_part(tmp_path, "image_features", old_images, "old")
    with duckdb.connect() as con:
        create_views(con, tmp_path, TABLES)
        assert con.execute("SELECT object_id, stage, model_key FROM quarantine").fetchall() == [
            ("a", "decode", None)
        ]
        rows = con.execute(
            "SELECT object_id, model_key, feature_version, embedding FROM image_features"
        ).fetchall()
        assert rows == [("b", None, None, (1.0, 0.0))]  # FLOAT[2]: one dimension
