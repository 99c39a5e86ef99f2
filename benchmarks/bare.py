"""The bare loop `braid run` is compared with: the same extraction functions, no Prefect, no Dask.

One process discovers the source, cuts the same batches as the pipeline and calls
``tasks.ingest.extract.extract_batch`` with its default mapper (the builtin ``map``), keeping
every batch's rows as the pipeline does until it lands them. It imports nothing from
Prefect, so its time is the extraction work alone.

    python -m benchmarks.bare SOURCE OUT.json [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tasks.common import Limits, Models
from tasks.ingest.extract import plan_batches


def run(source: str, batch_size: int) -> dict[str, Any]:
    """Discover and extract everything under ``source``; counts, seconds and peak memory."""
    from tasks.ingest.discover import discover
    from tasks.ingest.extract import extract_batch
    from tasks.lake.storage import source_root

    started = time.perf_counter()
    limits, models = Limits(), Models()
    found = discover(source_root(source), set(), limits)
    discovered = time.perf_counter()
    results = [
        extract_batch(modality, refs, models, limits, "bare")
        for modality, refs in plan_batches(found.new, batch_size)
    ]
    finished = time.perf_counter()
    return {
        "objects": len(found.new),
        "batches": len(results),
        "landed": sum(r.landed for r in results),
        "quarantined": sum(r.quarantined for r in results),
        "discover_s": discovered - started,
        "extract_s": finished - discovered,
        "loop_s": finished - started,
        "results_mb": sum(
            frame.estimated_size() for r in results for frame in (r.features, r.objects, r.costs)
        )
        / 2**20,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set since it exec'd (``VmHWM``).

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the peak of the address space
    a process had before ``exec`` into it, so a child of a large parent reports at least
    the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare", description=__doc__)
    parser.add_argument("source")
    parser.add_argument("out", help="where to write the counts and timings (JSON)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args(argv)
    Path(args.out).write_text(json.dumps(run(args.source, args.batch_size), indent=2))


if __name__ == "__main__":
    main()
