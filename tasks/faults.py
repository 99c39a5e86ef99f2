"""Crash points: named places in a run where a test can kill the process outright.

``BRAID_CRASH_AT=<name>`` makes the run SIGKILL itself when it reaches the point of that
name (``extracted``, ``landed:<modality>``, ``landed:fused``, ``catalog``), as a power
cut or an OOM kill would. The crash tests use it to prove that the next plain run
repairs whatever a crash at each stage boundary left. Unset, it costs one lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "BRAID_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if ``BRAID_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
