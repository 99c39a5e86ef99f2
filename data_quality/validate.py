"""Validate a table with Great Expectations before it lands, and split it by the suite's policy.

GX 1.x validates pandas, so the table is derived once in polars (``_qc_*`` columns),
narrowed to the columns the suite reads, and converted once. Every row is checked; a
failing row carries the names of the expectations it failed, which become its
quarantine reason. GX is imported on first use: it takes seconds to import.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from data_quality.suites import POLICIES, SUITES, Expectation, resolve
from tasks.common import MODALITIES
from tasks.lake.tables import VALIDATIONS

ROW = "_row"
DOCS_SITE = "braid"
EXAMPLES = 3


@dataclass
class ExpectationOutcome:
    """How one expectation did on a table."""

    label: str
    success: bool
    element_count: int
    unexpected_count: int
    rows: list[int] = field(default_factory=list)


@dataclass
class Validation:
    """A table split by its suite: what lands, what fails, and why."""

    table: str
    policy: str
    passed: pl.DataFrame
    failed: pl.DataFrame  # the failing rows, with a "reason" column
    outcomes: list[ExpectationOutcome]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def success_percent(self) -> float:
        if not self.outcomes:
            return 100.0
        return 100.0 * sum(o.success for o in self.outcomes) / len(self.outcomes)

    @property
    def blocks_landing(self) -> bool:
        """Under the ``fail`` policy a failing table lands nothing and fails the run."""
        return self.policy == "fail" and not self.success


def derive_qc_columns(
    table: str, frame: pl.DataFrame, params: dict[str, Any] | None = None
) -> pl.DataFrame:
    """Add the scalar ``_qc_*`` columns a suite reads, in one vectorised polars pass.

    For ``fused``, ``params`` give each slot's dimension under the run's model set
    (``<modality>_dim``): a present slot of another length fails ``_qc_slots_match_set``.
    """
    params = params or {}
    columns: list[pl.Expr] = [pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW)]
    if {"width", "height"} <= set(frame.columns):
        columns.append((pl.col("width").cast(pl.Int64) * pl.col("height")).alias("_qc_pixels"))
    columns.append(_finite(frame).alias("_qc_finite"))
    if {"start_time", "end_time"} <= set(frame.columns):
        # Sensor clocks: from the epoch (logs in seconds since start begin there) to a day
        # from now; a mutated log once landed the year 24 and a span of 2,000 years.
        latest = datetime.now(UTC) + timedelta(days=1)
        columns.append(
            (
                (pl.col("start_time") >= EPOCH)
                & (pl.col("end_time") <= latest)
                & (pl.col("start_time") <= pl.col("end_time"))
            )
            .fill_null(False)
            .alias("_qc_time_plausible")
        )
    if table == "fused":
        filled = [pl.col(f"{m}_embedding").is_not_null() for m in MODALITIES]
        flags = [pl.col(f"has_{m}") for m in MODALITIES]
        listed = [pl.col("modalities").list.contains(pl.lit(m)) for m in MODALITIES]
        # A null list or flag must fail, not be skipped: GX ignores nulls in these checks.
        columns += [
            pl.col("modalities").list.len().fill_null(0).alias("_qc_modality_count"),
            pl.col("modalities")
            .list.eval(pl.element().is_in(list(MODALITIES)))
            .list.all()
            .fill_null(False)
            .alias("_qc_modalities_known"),
            pl.all_horizontal(
                [(f == e) & (f == s) for f, e, s in zip(flags, filled, listed, strict=True)]
            )
            .fill_null(False)
            .alias("_qc_presence_consistent"),
        ]
        if all(f"{m}_dim" in params for m in MODALITIES):
            lengths = [
                pl.col(f"{m}_embedding").list.len().fill_null(params[f"{m}_dim"])
                == params[f"{m}_dim"]
                for m in MODALITIES
            ]
            columns.append(pl.all_horizontal(lengths).fill_null(False).alias("_qc_slots_match_set"))
    return frame.with_columns(columns)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _finite(frame: pl.DataFrame) -> pl.Expr:
    """Whether every float of the row, in scalar and list columns alike, is finite (a null
    is not a number to check: the suites test nulls where a column needs a value)."""
    checks = [
        pl.col(name).is_finite().fill_null(True)
        for name, dtype in frame.schema.items()
        if dtype.is_float()
    ] + [
        pl.col(name).list.eval(pl.element().is_finite().fill_null(True)).list.all().fill_null(True)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.List) and dtype.inner.is_float()
    ]
    return pl.all_horizontal(checks) if checks else pl.lit(True)


_lock = threading.Lock()
_context: Any = None


def _gx_context() -> Any:
    """One ephemeral GX context per process, with Braid's expectation registered."""
    global _context
    with _lock:
        if _context is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            import data_quality.expectations  # noqa: F401  (registers the custom expectation)

            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(
                globally=False
            )  # noise in run logs
            context.data_sources.add_pandas("braid")
            _context = context
        return _context


def prepare() -> None:
    """Import Great Expectations and build its context now (once per process); a failure
    here is left for the first validation to raise."""
    with contextlib.suppress(Exception):
        _gx_context()


def prepare_in_background() -> threading.Thread:
    """Import Great Expectations and build its context in a thread, now.

    That costs seconds of CPU that the first validation would otherwise wait for; a run
    starts it before extracting, while its own thread mostly waits on workers. A failure
    here is left for that first validation to raise.
    """

    thread = threading.Thread(target=prepare, name="braid-prepare-gx", daemon=True)
    thread.start()
    return thread


def _gx_expectation(expectation: Expectation) -> Any:
    import great_expectations.expectations as gxe

    from data_quality.expectations import ExpectColumnValuesToBeUnitVectors

    if expectation.type == "expect_column_values_to_be_unit_vectors":
        return ExpectColumnValuesToBeUnitVectors(**expectation.kwargs)
    class_name = "".join(part.capitalize() for part in expectation.type.split("_"))
    return getattr(gxe, class_name)(**expectation.kwargs)


def _columns_read(expectations: list[Expectation]) -> set[str]:
    return {e.kwargs["column"] for e in expectations if "column" in e.kwargs}


def run_suite(table: str, frame: pl.DataFrame, params: dict[str, Any]) -> list[ExpectationOutcome]:
    """Validate every row of ``frame`` against the table's suite; one outcome per expectation."""
    import great_expectations as gx

    expectations = resolve(SUITES[table], params)
    derived = derive_qc_columns(table, frame, params)
    missing = _columns_read(expectations) - set(derived.columns)
    if missing:
        raise ValueError(f"{table}: columns {sorted(missing)} are missing for validation")
    keys = [c for c in ("object_id", "sample_id") if c in derived.columns]
    narrow = derived.select(sorted(_columns_read(expectations) | set(keys) | {ROW})).to_pandas()
    context = _gx_context()
    with _lock:  # GX contexts are not thread-safe
        source = context.data_sources.get("braid")
        asset = next(
            (a for a in source.assets if a.name == table), None
        ) or source.add_dataframe_asset(table)
        batch = next(
            iter(asset.batch_definitions), None
        ) or asset.add_batch_definition_whole_dataframe("all")
        suite = context.suites.add_or_update(
            gx.ExpectationSuite(name=table, expectations=[_gx_expectation(e) for e in expectations])
        )
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=table, data=batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": narrow},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ROW]},
        )
    outcomes = []
    for expectation, item in zip(expectations, result.results, strict=True):
        details = item.result or {}
        if item.exception_info and item.exception_info.get("raised_exception"):
            rows = list(range(frame.height))  # the expectation could not run: nothing passes it
        else:
            rows = sorted({int(entry[ROW]) for entry in details.get("unexpected_index_list") or []})
        outcomes.append(
            ExpectationOutcome(
                label=expectation.label,
                success=bool(item.success),
                element_count=int(details.get("element_count", frame.height) or 0),
                unexpected_count=len(rows)
                if rows
                else int(details.get("unexpected_count", 0) or 0),
                rows=rows,
            )
        )
    return outcomes


def validate_table(
    table: str, frame: pl.DataFrame, params: dict[str, Any], policy: str
) -> Validation:
    """Validate a table and split it by policy: quarantine failing rows, fail the table, or warn."""
    if policy not in POLICIES:
        raise ValueError(f"unknown quality policy {policy!r}; expected one of {POLICIES}")
    if frame.is_empty():
        return Validation(table, policy, frame, frame.with_columns(reason=pl.lit("")), [])
    outcomes = run_suite(table, frame, params)
    reasons: dict[int, list[str]] = {}
    for outcome in outcomes:
        for row in outcome.rows:
            reasons.setdefault(row, []).append(outcome.label)
    failing = pl.DataFrame(
        {
            ROW: list(reasons),
            "reason": ["failed expectations: " + ", ".join(r) for r in reasons.values()],
        },
        schema={ROW: pl.Int64(), "reason": pl.String()},
    )
    indexed = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW))
    failed = indexed.join(failing, on=ROW, how="inner").sort(ROW).drop(ROW)
    if policy == "quarantine":
        passed = indexed.join(failing, on=ROW, how="anti").drop(ROW)
    elif policy == "fail" and reasons:
        passed = frame.clear()
    else:
        passed = frame
    return Validation(table, policy, passed, failed, outcomes)


def results_frame(validation: Validation, flow_run_id: str) -> pl.DataFrame:
    """The validation as rows of the ``validations`` table: one per expectation."""
    now = datetime.now(UTC)
    return pl.DataFrame(
        [
            {
                "table_name": validation.table,
                "expectation": o.label,
                "success": o.success,
                "element_count": o.element_count,
                "unexpected_count": o.unexpected_count,
                "policy": validation.policy,
                "validated_at": now,
                "flow_run_id": flow_run_id,
                "landed_at": now,
            }
            for o in validation.outcomes
        ],
        schema=VALIDATIONS,
    )


def to_markdown(validation: Validation) -> str:
    """A short report for a Prefect artifact: expectations, success %, a few failing rows."""
    lines = [
        f"# Validation of `{validation.table}`",
        "",
        f"Policy **{validation.policy}**; {validation.success_percent:.0f}% of expectations met; "
        f"{validation.passed.height} rows pass, {validation.failed.height} fail.",
        "",
        "| expectation | success | unexpected / rows |",
        "| --- | --- | --- |",
    ]
    for o in validation.outcomes:
        mark = "✅" if o.success else "❌"
        lines.append(f"| `{o.label}` | {mark} | {o.unexpected_count} / {o.element_count} |")
    if not validation.failed.is_empty():
        key = "object_id" if "object_id" in validation.failed.columns else "sample_id"
        lines += ["", "Failing examples:", "", f"| {key} | reason |", "| --- | --- |"]
        for row in validation.failed.head(EXAMPLES).select(key, "reason").iter_rows():
            lines.append(f"| `{row[0]}` | {row[1]} |")
    return "\n".join(lines)


def build_docs(docs_dir: str | Path) -> Path:
    """Write GX Data Docs for this process's validations into ``docs_dir``; returns index.html."""
    context = _gx_context()
    target = Path(docs_dir).resolve()
    target.mkdir(parents=True, exist_ok=True)
    with _lock:
        sites = context.get_site_names()
        if DOCS_SITE in sites:
            context.delete_data_docs_site(DOCS_SITE)
        context.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(target),
                },
            },
        )
        context.build_data_docs(site_names=[DOCS_SITE])
    return target / "index.html"
