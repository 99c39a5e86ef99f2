"""A self-contained HTML report of the lake: what landed, what it looks like, what failed, what it cost.

One file, every plot a matplotlib PNG inlined as a base64 data URI and the styles inline,
nothing fetched from anywhere: it opens offline, and can be attached to a CI run or mailed.
Each plot is a function from a connection to a ``Section``; a plot without data becomes a
note, so a young lake (or one without a ``costs`` table) still gets a report.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.common import MODALITIES
from tasks.serve.serving import has_relation, lake_stats, open_snapshot

if TYPE_CHECKING:
    import duckdb
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

OBJECTS_OVER_TIME = "Objects per modality and status over time"
IMAGE_SIZES = "Image sizes"
DURATIONS = "Audio and video durations"
TEXT_LENGTHS = "Text lengths"
EMBEDDINGS = "Fused embeddings in 2-D (PCA), coloured by modality mix"
QUARANTINE_REASONS = "Quarantine reasons"
COST_PER_STAGE = "Cost per stage"
TITLES = (
    OBJECTS_OVER_TIME,
    IMAGE_SIZES,
    DURATIONS,
    TEXT_LENGTHS,
    EMBEDDINGS,
    QUARANTINE_REASONS,
    COST_PER_STAGE,
)

COLOURS = {
    "image": "#1f77b4",
    "text": "#ff7f0e",
    "audio": "#2ca02c",
    "video": "#d62728",
    "timeseries": "#9467bd",
    "unknown": "#7f7f7f",
    "fused": "#8c564b",
}
HATCHES = {"landed": "", "quarantined": "//", "superseded": ".."}
STAGE_ORDER = (
    "discover",
    "sniff",
    "read",
    "decode",
    "embed",
    "extract",
    "validate",
    "land",
    "fuse",
)
# Bucket widths for the time axis, finest first: the finest giving at most MAX_BUCKETS wins.
BUCKETS = (
    ("minute", 60),
    ("hour", 3600),
    ("day", 86400),
    ("week", 7 * 86400),
    ("month", 2_629_746),
)
MAX_BUCKETS = 48


@dataclass(frozen=True)
class Section:
    """One part of the report: a titled plot, or a note saying why there is none."""

    title: str
    png: bytes | None = None
    note: str | None = None
    table: list[dict[str, Any]] | None = None


def build_report(lake: str | Path, out: str | Path) -> Path:
    """Write the lake's report to ``out`` (one HTML file, plots inline) and return its path.

    Raises FileNotFoundError when ``lake`` holds no lake.
    """
    con = open_snapshot(lake)
    try:
        stats = lake_stats(con, runs=10)
        sections = [plot(con) for plot in PLOTS]
        costs = plot_costs(con)
    finally:
        con.close()
    if costs is not None:
        sections.append(costs)
    page = render_html(Path(lake), stats, sections)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(page, encoding="utf-8")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


# --- plots --------------------------------------------------------------------------------------


def _figure(width: float = 9.0, height: float = 4.5) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _whole_numbers(axis: Any) -> None:
    """Counts are whole: no 0.5-object ticks."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _column(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    return [row[0] for row in con.execute(sql).fetchall()]


def _bucket(span_s: float) -> str:
    for unit, seconds in BUCKETS:
        if span_s / seconds < MAX_BUCKETS:
            return unit
    return BUCKETS[-1][0]


def plot_objects_over_time(con: duckdb.DuckDBPyConnection) -> Section:
    """Stacked bars per time bucket: colour is the modality, hatching the status."""
    span = con.execute(
        "SELECT epoch(max(discovered_at)) - epoch(min(discovered_at)) FROM objects"
    ).fetchone()
    if span is None or span[0] is None:
        return Section(OBJECTS_OVER_TIME, note="No objects yet.")
    unit = _bucket(float(span[0]))
    rows = con.execute(
        f"SELECT date_trunc('{unit}', discovered_at) AS bucket, modality, status, count(*) "
        "FROM objects GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    buckets = sorted({r[0] for r in rows})
    position = {b: i for i, b in enumerate(buckets)}
    pairs = sorted({(r[1] or "unknown", r[2] or "unknown") for r in rows})
    counts = {pair: np.zeros(len(buckets)) for pair in pairs}
    for bucket, modality, status, n in rows:
        counts[(modality or "unknown", status or "unknown")][position[bucket]] = n
    figure, axes = _figure()
    bottom = np.zeros(len(buckets))
    for (modality, status), heights in counts.items():
        axes.bar(
            range(len(buckets)),
            heights,
            bottom=bottom,
            color=COLOURS.get(modality, "#bcbd22"),
            hatch=HATCHES.get(status, "xx"),
            edgecolor="white",
            label=f"{modality} · {status}",
        )
        bottom += heights
    fmt = {"minute": "%m-%d %H:%M", "hour": "%m-%d %H:00"}.get(unit, "%Y-%m-%d")
    step = max(1, len(buckets) // 12)
    axes.set_xticks(range(0, len(buckets), step))
    axes.set_xticklabels([buckets[i].strftime(fmt) for i in range(0, len(buckets), step)])
    axes.set_xlabel(f"discovered (per {unit}, UTC)")
    axes.set_ylabel("objects")
    _whole_numbers(axes.yaxis)
    axes.set_title(OBJECTS_OVER_TIME)
    axes.legend(fontsize="small", ncols=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return Section(OBJECTS_OVER_TIME, _png(figure))


def plot_image_sizes(con: duckdb.DuckDBPyConnection) -> Section:
    """Width against height, one point per image (and per video, whose frames are images too)."""
    series = {
        "image": con.execute("SELECT width, height FROM image_features").fetchall(),
        "video": con.execute("SELECT width, height FROM video_features").fetchall(),
    }
    series = {k: [(w, h) for w, h in v if w and h] for k, v in series.items()}
    if not series["image"]:
        return Section(IMAGE_SIZES, note="No image features yet.")
    figure, axes = _figure(7.0, 5.0)
    for modality, sizes in series.items():
        if sizes:
            widths, heights = zip(*sizes, strict=True)
            axes.scatter(
                widths,
                heights,
                s=36,
                alpha=0.6,
                color=COLOURS[modality],
                label=f"{modality} ({len(sizes)})",
            )
    axes.set_xlabel("width (px)")
    axes.set_ylabel("height (px)")
    axes.set_title(IMAGE_SIZES)
    axes.legend(fontsize="small")
    return Section(IMAGE_SIZES, _png(figure))


def _histogram(axes: Axes, values: dict[str, list[float]], bins: int = 20) -> None:
    every = [v for vs in values.values() for v in vs]
    low, high = min(every), max(every)
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    for name, vs in values.items():
        if vs:
            axes.hist(
                vs,
                bins=edges.tolist(),
                alpha=0.6,
                color=COLOURS.get(name, "#bcbd22"),
                label=f"{name} ({len(vs)})",
            )


def plot_durations(con: duckdb.DuckDBPyConnection) -> Section:
    """Histograms of audio and video durations, in seconds."""
    values = {
        m: [float(v) for v in _column(con, f"SELECT duration_s FROM {m}_features") if v is not None]
        for m in ("audio", "video")
    }
    if not any(values.values()):
        return Section(DURATIONS, note="No audio or video features yet.")
    figure, axes = _figure()
    _histogram(axes, values)
    axes.set_xlabel("duration (s)")
    axes.set_ylabel("objects")
    _whole_numbers(axes.yaxis)
    axes.set_title(DURATIONS)
    axes.legend(fontsize="small")
    return Section(DURATIONS, _png(figure))


def plot_text_lengths(con: duckdb.DuckDBPyConnection) -> Section:
    """A histogram of words per text."""
    words = [float(v) for v in _column(con, "SELECT words FROM text_features") if v is not None]
    if not words:
        return Section(TEXT_LENGTHS, note="No text features yet.")
    figure, axes = _figure()
    _histogram(axes, {"text": words})
    axes.set_xlabel("words per text")
    axes.set_ylabel("texts")
    _whole_numbers(axes.yaxis)
    axes.set_title(TEXT_LENGTHS)
    return Section(TEXT_LENGTHS, _png(figure))


def project_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``vectors`` on their first two principal axes, and each axis's share of variance."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    points = np.zeros((vectors.shape[0], 2))
    kept = min(2, axes.shape[0])
    points[:, :kept] = centred @ axes[:kept].T
    variance = singular**2
    share = np.zeros(2)
    if variance.sum() > 0:
        share[:kept] = variance[:kept] / variance.sum()
    return points, share


def plot_embeddings(con: duckdb.DuckDBPyConnection) -> Section:
    """Fused embeddings projected on two principal axes; colour is the sample's set of modalities."""
    rows = con.execute(
        "SELECT sample_id, embedding::FLOAT[] AS embedding, modalities FROM fused "
        "WHERE embedding IS NOT NULL ORDER BY sample_id"
    ).fetchall()
    if rows:
        # Two fusion layouts side by side (a model changed) do not share axes: keep the usual one.
        lengths = [len(r[1]) for r in rows]
        common = max(set(lengths), key=lengths.count)
        rows = [r for r in rows if len(r[1]) == common]
    if len(rows) < 2:
        return Section(EMBEDDINGS, note="Needs at least two fused samples.")
    vectors = np.asarray([r[1] for r in rows], dtype=np.float64)
    mixes = ["+".join(r[2] or []) or "none" for r in rows]
    points, share = project_2d(vectors)
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    figure, axes = _figure(8.0, 5.5)
    for i, mix in enumerate(sorted(set(mixes), key=lambda m: (-mixes.count(m), m))):
        chosen = [j for j, m in enumerate(mixes) if m == mix]
        axes.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=40,
            alpha=0.75,
            color=palette(i % 10),
            label=f"{mix} ({len(chosen)})",
        )
    axes.set_xlabel(f"PC1 ({share[0]:.0%} of variance)")
    axes.set_ylabel(f"PC2 ({share[1]:.0%} of variance)")
    axes.set_title(EMBEDDINGS)
    axes.legend(fontsize="small", title="modalities", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return Section(EMBEDDINGS, _png(figure))


def reason_kind(reason: str | None) -> str:
    """A reason without its particulars (numbers, details after a colon), so alike ones group."""
    text = (reason or "no reason").split(": ", 1)[0]
    text = re.sub(r"\d+(\.\d+)?", "N", text).strip()
    return text if len(text) <= 60 else text[:59] + "…"


def plot_quarantine(con: duckdb.DuckDBPyConnection) -> Section:
    """Objects now in quarantine, counted per stage and kind of reason."""
    rows = con.execute("SELECT stage, reason FROM quarantine").fetchall()
    if not rows:
        return Section(QUARANTINE_REASONS, note="Nothing is in quarantine.")
    counts: dict[tuple[str, str], int] = {}
    for stage, reason in rows:
        key = (stage or "?", reason_kind(reason))
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ordered[:20]
    figure, axes = _figure(9.0, max(2.5, 1.2 + 0.4 * len(shown)))
    labels = [f"{stage}: {kind}" for (stage, kind), _ in shown]
    axes.barh(range(len(shown)), [n for _, n in shown], color="#d62728", alpha=0.8)
    axes.set_yticks(range(len(shown)))
    axes.set_yticklabels(labels, fontsize="small")
    axes.invert_yaxis()
    axes.set_xlabel("objects")
    _whole_numbers(axes.xaxis)
    axes.set_title(QUARANTINE_REASONS)
    table = [{"stage": stage, "reason": kind, "objects": n} for (stage, kind), n in ordered]
    return Section(QUARANTINE_REASONS, _png(figure), table=table)


def plot_costs(con: duckdb.DuckDBPyConnection) -> Section | None:
    """CPU and wall seconds per stage, summed over runs; None when the lake records no costs."""
    if not has_relation(con, "costs"):
        return None
    rows = con.execute("SELECT stage, sum(cpu_s), sum(wall_s) FROM costs GROUP BY stage").fetchall()
    if not rows:
        return None
    rows.sort(key=lambda r: (STAGE_ORDER.index(r[0]) if r[0] in STAGE_ORDER else 99, str(r[0])))
    stages = [str(r[0]) for r in rows]
    cpu = [float(r[1] or 0) for r in rows]
    wall = [float(r[2] or 0) for r in rows]
    positions = np.arange(len(stages))
    figure, axes = _figure()
    axes.bar(positions - 0.2, cpu, width=0.4, color="#1f77b4", label="CPU seconds")
    axes.bar(positions + 0.2, wall, width=0.4, color="#aec7e8", label="wall seconds")
    axes.set_xticks(positions)
    axes.set_xticklabels(stages)
    axes.set_ylabel("seconds (all runs)")
    axes.set_title(COST_PER_STAGE)
    axes.legend(fontsize="small")
    return Section(COST_PER_STAGE, _png(figure))


PLOTS: tuple[Callable[[duckdb.DuckDBPyConnection], Section], ...] = (
    plot_objects_over_time,
    plot_image_sizes,
    plot_durations,
    plot_text_lengths,
    plot_embeddings,
    plot_quarantine,
)


# --- the page -----------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; }
.meta { color: #666; margin-top: 0; }
section { margin: 2rem 0; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.75rem; text-align: left; }
td.n { text-align: right; }
.note { color: #666; font-style: italic; }
"""


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{v}</td>'
            if isinstance(v, int | float)
            else f"<td>{html.escape('' if v is None else str(v))}</td>"
            for v in row.values()
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(lake: Path, stats: dict[str, Any], sections: list[Section]) -> str:
    """The report page: a summary, then each section's plot (inline PNG) or note."""
    totals = stats["totals"]
    summary = _table([{k.replace("_", " "): v for k, v in totals.items()}])
    runs = _table(
        [
            {
                "flow run": r["flow_run_id"],
                "finished (UTC)": r["finished_at"].strftime("%Y-%m-%d %H:%M:%S")
                if r["finished_at"]
                else None,
                "objects": r["objects"],
                "landed": r["landed"],
                "quarantined": r["quarantined"],
                "samples fused": r["samples_fused"],
            }
            for r in stats["runs"]
        ]
    )
    parts = []
    for section in sections:
        title = html.escape(section.title)
        body = ""
        if section.png is not None:
            data = base64.b64encode(section.png).decode("ascii")
            body += f'<img alt="{title}" src="data:image/png;base64,{data}">'
        if section.note:
            body += f'<p class="note">{html.escape(section.note)}</p>'
        if section.table:
            body += _table(section.table)
        parts.append(f"<section><h2>{title}</h2>{body}</section>")
    if not any(s.title == COST_PER_STAGE for s in sections):
        parts.append(
            '<p class="note">No cost records in this lake (no costs table, or an empty one): '
            "there is no cost plot.</p>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    modalities = ", ".join(MODALITIES)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Braid lake report: {html.escape(lake.name or str(lake))}</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>Braid lake report</h1>"
        f'<p class="meta">{html.escape(str(lake.resolve()))} · generated {generated} · '
        f"modalities: {modalities}</p>"
        f"<section><h2>Summary</h2>{summary}</section>"
        f"<section><h2>Last runs</h2>{runs or '<p class=note>No runs yet.</p>'}</section>"
        + "".join(parts)
        + "</body></html>\n"
    )
