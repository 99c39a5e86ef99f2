"""`braid run` exactly as the command line runs it, with its run summary kept as JSON.

    python -m benchmarks.braid_run SUMMARY.json SOURCE [braid run options…]

The summary (flow seconds, counts, the flow run id whose costs the lake holds) is the
dict ``braid run`` prints; it is written to SUMMARY.json as well, rather than parsed back
out of the printed text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from deployments import cli


def main(argv: list[str]) -> None:
    """Run as the ``braid`` command does, its prompt exit included (``cli.entry``);
    under a profiler, return as a module does instead, so the profile gets written."""
    out, *run_args = argv
    printed = cli.print_summary

    def keep(summary: dict[str, Any]) -> None:
        Path(out).write_text(json.dumps(summary, indent=2, default=str))
        printed(summary)

    cli.print_summary = keep
    if sys.getprofile() is not None:  # under cProfile (figures a, d): its dump is written
        sys.exit(cli.main(["run", *run_args]))  # as the module returns, which the prompt
    cli.entry(["run", *run_args])  # exit would skip


if __name__ == "__main__":
    main(sys.argv[1:])
