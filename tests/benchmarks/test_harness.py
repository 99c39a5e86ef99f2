"""The benchmark harness at its tiny scale: every figure is measured and reported, and each
ratio is made of the parts it reports. Timings are never asserted: a test machine is not
the benchmark's machine, and the tiny scale measures mostly fixed costs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import data
from benchmarks.suite import KEYS, latency_parts

# Every figure of `make bench` at a tiny scale: `make bench-quick` runs the same code paths.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    from benchmarks.__main__ import main

    out = tmp_path_factory.mktemp("bench")
    markdown = out / "BENCHMARKS.md"
    main(["--scale", "tiny", "--work", str(out / "work"), "--results", str(out / "results"),
          "--markdown", str(markdown)])  # fmt: skip
    (saved,) = (out / "results").glob("*.json")
    return json.loads(saved.read_text()), markdown.read_text()


def numbers(value: object) -> list[float]:
    """Every number in a nested structure of parts."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    if isinstance(value, bool):
        return []
    return [float(value)] if isinstance(value, int | float) else []


def test_every_figure_is_measured_with_numbers(bench) -> None:
    results, _ = bench
    figures = results["figures"]
    assert list(figures) == list(KEYS.values())
    for key, figure in figures.items():
        if key in ("g_event_latency", "i_notification_storm", "j_demo_run"):
            # They start a whole stack (see the latency test, and the storm test of test_up),
            # or time make demo's run, which the CLI tests run.
            assert "tiny" in figure["skipped"]
            continue
        assert figure["measures"], key
        for name, value in figure["measures"].items():
            assert isinstance(value, float) and math.isfinite(value), (key, name, value)
        assert numbers(figure["parts"]) and all(math.isfinite(n) for n in numbers(figure["parts"]))
        for spec in figure["targets"]:
            other = spec.get("otherwise")  # c: >= 1.8x, or >= 95 % of the machine's
            met = [
                s["value"] <= s["limit"] if s["op"] == "<=" else s["value"] >= s["limit"]
                for s in (spec, other)
                if s is not None
            ]
            for s in (spec, other):
                if s is not None:
                    assert s["value"] == figure["measures"][s["measure"]]
            assert spec["met"] == any(met)
    for field in ("cpu_model", "cores", "ram_gib", "python", "torch"):
        assert results["machine"][field], field


def test_ratios_are_made_of_the_measured_parts(bench) -> None:
    figures = bench[0]["figures"]
    a = figures["a_end_to_end"]
    p = a["parts"]
    assert a["measures"]["wall_ratio"] == p["braid_run_wall_s"] / p["bare_loop_wall_s"]
    assert a["measures"]["cpu_ratio"] == p["braid_run_cpu_s"] / p["bare_loop_cpu_s"]
    assert a["measures"]["in_process_ratio"] == p["braid_flow_s"] / p["bare_loop_s"]
    # Both sides did the same work: every one of the tiny scale's 10 objects landed.
    assert p["objects"] == p["braid_landed"] == p["bare_landed"] == 10

    b = figures["b_throughput"]
    modalities = b["parts"]["modalities"]
    assert sorted(modalities) == ["audio", "image", "text", "timeseries", "video"]
    assert all(row["objects"] == 2 and row["mb"] > 0 for row in modalities.values())
    image = modalities["image"]
    assert b["measures"]["image_objects_per_s"] == pytest.approx(
        2 / (image["decode_wall_s"] + image["embed_wall_s"])
    )
    shares = [v for k, v in b["measures"].items() if k.endswith("_cpu_share")]
    assert sum(shares) == pytest.approx(1.0)

    c = figures["c_dask_scaling"]["parts"]
    assert figures["c_dask_scaling"]["measures"]["speedup"] == c["wall_s_1"] / c["wall_s_2"]
    assert c["rejected_1"] == c["rejected_2"] == 0

    d = figures["d_rerun"]
    assert d["parts"]["rerun_new_objects"] == 0 and d["parts"]["rerun_known_objects"] == 10
    assert d["measures"]["flow_ratio"] == d["parts"]["rerun_flow_s"] / d["parts"]["first_flow_s"]
    assert d["measures"]["wall_ratio"] == d["parts"]["rerun_wall_s"] / d["parts"]["first_wall_s"]

    e = figures["e_memory"]
    assert (e["parts"]["small_objects"], e["parts"]["large_objects"]) == (10, 40)
    assert (
        e["measures"]["rss_ratio"]
        == e["parts"]["large_peak_rss_mb"] / e["parts"]["small_peak_rss_mb"]
    )

    f = figures["f_similarity"]
    assert f["parts"]["rows"] == 10_000 and f["parts"]["dim"] == 496
    assert f["parts"]["same_top10"]  # index, Parquet, table, view and numpy agree
    assert f["measures"]["parquet_vs_numpy"] == f["parts"]["parquet_s"] / f["parts"]["numpy_s"]
    # The headline is the API's serving path: its vector index, warm, over several samples.
    assert [t["measure"] for t in f["targets"]] == ["api_s"]
    assert len(f["parts"]["api_times_s"]) == 5
    assert f["measures"]["view_vs_api"] == f["parts"]["view_s"] / f["parts"]["api_s"]
    # The refresh after one small landing read that part alone; superseded rows left.
    assert (f["parts"]["refresh_parts_read"], f["parts"]["refresh_rows_read"]) == (1, 10)
    assert f["parts"]["index_rows"] == 10_000 + 5


def test_the_report_has_a_row_per_measure_and_the_machine(bench) -> None:
    results, markdown = bench
    assert "| CPU |" in markdown and "| torch |" in markdown
    assert "Reproduce: `" in markdown
    for letter in "acdef":
        assert f"| {letter} | " in markdown
    assert "| g | " in markdown and "skipped" in markdown
    missed = [
        f for f in results["figures"].values() if any(not t["met"] for t in f.get("targets", []))
    ]
    assert all(f["why"] and f["why"] in markdown for f in missed if f["title"][0] != "b")


def test_copies_are_new_objects_that_decode_like_their_originals(tmp_path: Path) -> None:
    from tasks.common import Analysis, Limits
    from tasks.ingest.discover import discover
    from tasks.ingest.extract import analyze_object

    source = data.make_dataset(tmp_path, samples=3, base=1)
    found = discover(str(source), set(), Limits())
    assert len(found.new) == 15 and found.duplicates == 0 and not found.rejected
    by_sample: dict[str, dict[str, Analysis]] = {}
    for ref in found.new:
        result = analyze_object(ref, Limits()).result
        assert isinstance(result, Analysis), (ref.uri, result)
        by_sample.setdefault(ref.sample_id, {})[ref.modality] = result
    original, copy = by_sample["sample-00000"], by_sample["sample-00002"]
    for modality in ("image", "video", "audio"):
        assert np.allclose(original[modality].vector, copy[modality].vector, atol=1e-5), modality
    assert copy["text"].features["words"] == original["text"].features["words"] + 2


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        # Started by the first event of a window: no schedule delay.
        ({"created": 103.0, "expected_start": 103.0, "pending": 104.5, "start": 108.0,
          "end": 110.0},
         {"latency_s": 10.5, "to_run_created_s": 3.0, "scheduled_delay_s": 0.0,
          "to_submitted_s": 1.5, "process_start_s": 3.5, "flow_run_s": 2.0, "to_query_s": 0.5}),
        # Scheduled for when a window closes, and submitted ahead of it (workers prefetch).
        ({"created": 103.0, "expected_start": 113.0, "pending": 109.0, "start": 116.0,
          "end": 130.0},
         {"latency_s": 30.5, "to_run_created_s": 3.0, "scheduled_delay_s": 10.0,
          "to_submitted_s": -4.0, "process_start_s": 7.0, "flow_run_s": 14.0,
          "to_query_s": 0.5}),
    ],
)  # fmt: skip
def test_latency_parts_split_the_wait_by_the_ingest_runs_timestamps(run, expected) -> None:
    parts = latency_parts(dropped=100.0, queryable=run["end"] + 0.5, run=run)
    assert parts == expected
    steps = [k for k in parts if k != "latency_s"]
    assert sum(parts[k] for k in steps) == pytest.approx(parts["latency_s"])
