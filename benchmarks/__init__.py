"""Braid's benchmarks: `make bench` (and `make bench-quick`) measure the performance targets.

Every figure is a ratio of two measurements taken in the same run on the same machine
(a shared two-core box drifts by tens of percent from one minute to the next, so an
absolute number from one run says little about the next). The data is generated at the
chosen scale (`benchmarks.data`), each figure is one function of `benchmarks.suite`,
and `benchmarks.report` writes `benchmarks/results/<date>.json` and BENCHMARKS.md.
"""
