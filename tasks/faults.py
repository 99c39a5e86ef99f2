"""Fault points: named places in a run where a test can kill or stall the process.

``BRAID_CRASH_AT=<name>`` makes the run SIGKILL itself when it reaches the point of that
name (``extracted``, ``landed:<modality>``, ``landed:fused``, ``catalog``), as a power
cut or an OOM kill would. The crash tests use it to prove that the next plain run
repairs whatever a crash at each stage boundary left. ``BRAID_STALL_AT=<name>:<seconds>``
makes the run print ``braid: stalled at <name>`` to stderr and sleep there, so a test
can break something around the run (stop its Prefect API) at a known point. Unset,
each costs one lookup.
"""

from __future__ import annotations

import os
import signal
import sys
import time

CRASH_ENV = "BRAID_CRASH_AT"
STALL_ENV = "BRAID_STALL_AT"


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``BRAID_CRASH_AT`` names this point; stall here
    if ``BRAID_STALL_AT`` does."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    point, _, seconds = os.environ.get(STALL_ENV, "").rpartition(":")
    if point == name:
        print(f"braid: stalled at {name} for {seconds} s", file=sys.stderr, flush=True)
        time.sleep(float(seconds))
