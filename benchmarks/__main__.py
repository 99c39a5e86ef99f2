"""`python -m benchmarks`: measure the figures, save the JSON, print (and write) the table."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from datetime import date
from pathlib import Path

from benchmarks import report
from benchmarks.suite import FIGURES, SCALES, run_all, say

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure Braid against its performance targets (figures a-j) on this machine.",
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="quick")
    parser.add_argument(
        "--only", default="".join(FIGURES), help="figures to measure, e.g. ace (default: all)"
    )
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--markdown", type=Path, help="also write the report here (BENCHMARKS.md)")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="measure nothing: report a saved results file"
    )
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        report.explain(results)
        args.render.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print("\n".join(report.table(results)))
        if args.markdown:
            args.markdown.write_text(report.markdown(results, results["command"]) + "\n")
        return
    only = [f for f in FIGURES if f in args.only]
    scale = SCALES[args.scale]
    work = (args.work or Path(tempfile.mkdtemp(prefix="braid-bench-"))).resolve()
    say(f"scale {scale.name}, figures {''.join(only)}, scratch {work}")
    try:
        results = run_all(scale, work, only)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report.explain(results)
    results["command"] = command_for(scale.name, only)
    name = date.today().isoformat()
    name += "" if scale.name == "full" else f"-{scale.name}"
    name += "" if len(only) == len(FIGURES) else f"-{''.join(only)}"
    saved = report.write_json(results, args.results, name)
    print("\n".join(report.table(results)))
    for figure in results["figures"].values():
        if figure.get("why"):
            print(f"\n{figure['title']}: {figure['why']}")
    if scale.name != "full":
        print(
            f"\n(scale {scale.name}: smaller than `make bench`; see BENCHMARKS.md for what each scale runs)"
        )
    print(f"\nresults: {saved}")
    if args.markdown:
        args.markdown.write_text(report.markdown(results, results["command"]) + "\n")
        print(f"report: {args.markdown}")


def command_for(scale: str, only: list[str]) -> str:
    """The command that reproduces a run."""
    if len(only) == len(FIGURES) and scale in ("full", "quick"):
        return "make bench" if scale == "full" else "make bench-quick"
    return f".venv/bin/python -m benchmarks --scale {scale} --only {''.join(only)}"


if __name__ == "__main__":
    main()
