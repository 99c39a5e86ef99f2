"""How the benchmarks measure: processes timed from outside, the machine described, profiles.

A command is measured as the process a person starts: wall time from spawn to exit,
CPU time from ``wait4`` (the process and the descendants it reaped: Dask workers,
Prefect's temporary server), and the peak of the whole process tree's RSS sampled with
psutil. Not ``ru_maxrss``: it is the largest single process rather than the sum, and
Linux carries into it the size of the parent a process was forked from (this one, with
torch loaded), so a small child reports a large peak.
"""

from __future__ import annotations

import contextlib
import os
import platform
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

# Environment variables a measured `braid` must not inherit: a benchmark run gets its own
# Prefect home and temporary API server, as on a fresh shell.
INHERITED_PREFIXES = ("PREFECT_",)
QUIET = {
    "HF_HUB_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass
class Measured:
    """One process run: what it cost and how it ended."""

    args: list[str]
    wall_s: float
    cpu_s: float
    peak_tree_rss_mb: float
    returncode: int
    output: str
    # CPU seconds per kind of process in the tree, as last sampled (a lower bound).
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    # The peak RSS of the largest single process in the tree, sampled likewise.
    peak_process_rss_mb: float = 0.0
    # Each process in the tree when the total peaked: (kind, RSS MB).
    processes_at_peak: list[tuple[str, float]] = field(default_factory=list)

    def check(self) -> Measured:
        if self.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(self.args)}` exited {self.returncode}:\n{self.output[-3000:]}"
            )
        return self


def clean_env(prefect_home: Path | None = None, **extra: str) -> dict[str, str]:
    """This environment without Prefect settings, quiet and offline, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED_PREFIXES)}
    env.update(QUIET)
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    env.update(extra)
    return env


def run_process(
    args: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 1800.0,
    sample_every: float = 0.1,
) -> Measured:
    """Run a command to its end and measure it (see the module docstring)."""
    import psutil

    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        peak = largest = 0.0
        at_peak: list[tuple[str, float]] = []  # (kind, MB) of each process at the peak
        cpu: dict[int, tuple[str, float]] = {}
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, largest
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(process.pid)
                while not done.is_set():
                    total = 0
                    members: list[tuple[str, float]] = []
                    with contextlib.suppress(psutil.Error):
                        for member in [root, *root.children(recursive=True)]:
                            with contextlib.suppress(psutil.Error):
                                rss = member.memory_info().rss
                                total += rss
                                largest = max(largest, rss / 2**20)
                                times = member.cpu_times()
                                kind = "main" if member is root else process_kind(member.cmdline())
                                cpu[member.pid] = (kind, times.user + times.system)
                                members.append((kind, rss / 2**20))
                    if total / 2**20 > peak:
                        peak = total / 2**20
                        at_peak[:] = members
                    done.wait(sample_every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # A runaway run is stopped (its whole session: the process we started and its children).
        watchdog = threading.Timer(timeout, _kill_session, (process.pid,))
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
            done.set()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.join()
        log.seek(0)
        output = log.read().decode(errors="replace")
    return Measured(
        args=[str(a) for a in args],
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_tree_rss_mb=peak,
        returncode=process.returncode,
        output=output,
        cpu_by_process=cpu_by_kind(cpu.values()),
        peak_process_rss_mb=largest,
        processes_at_peak=[(kind, round(mb, 1)) for kind, mb in at_peak],
    )


def process_kind(cmdline: list[str]) -> str:
    """What a process in a `braid run` tree is, from its command line."""
    line = " ".join(cmdline)
    if "uvicorn" in line or "prefect.server" in line:
        return "prefect API server"
    if "resource_tracker" in line:
        return "other"
    if "spawn_main" in line:
        return "dask workers"
    return "other"


def cpu_by_kind(samples: Iterable[tuple[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for kind, seconds in samples:
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


def tree_cpu(roots: dict[str, list[int]], alone: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each role's processes and their descendants,
    of each process in ``alone`` by itself, and of everything else on the machine ("rest
    of the machine", from /proc/stat)."""
    import psutil

    totals: dict[str, float] = {}
    for role, pids in roots.items():
        seconds = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        seconds += sum(process.cpu_times()[:2])
        totals[role] = seconds
    for role, pid in alone.items():
        with contextlib.suppress(psutil.Error):
            totals[role] = sum(psutil.Process(pid).cpu_times()[:2])
    machine = psutil.cpu_times()
    totals["rest of the machine"] = (
        machine.user + machine.nice + machine.system - sum(totals.values())
    )
    return totals


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def profile_process(
    module_args: list[str], env: dict[str, str] | None, out: Path, top: int = 12
) -> dict[str, Any]:
    """Run ``python -m <module_args>`` under cProfile; the top entries by own and cumulative time.

    Only the main process is profiled; work on Dask workers shows in the costs table.
    """
    measured = run_process(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", *module_args], env=env
    ).check()
    return {"wall_s": measured.wall_s, **top_entries(out, top)}


def top_entries(profile: Path, top: int = 12) -> dict[str, list[str]]:
    """A cProfile dump's heaviest functions, as short lines: seconds, calls, where."""
    stats = pstats.Stats(str(profile)).stats
    rows = [
        (tottime, cumtime, calls, _where(key))
        for key, (_, calls, tottime, cumtime, _) in stats.items()
    ]

    def lines(index: int) -> list[str]:
        chosen = sorted(rows, key=lambda r: r[index], reverse=True)
        # Wrappers that hold the whole run (runpy, main, the engine's entry points) say nothing.
        if index == 1:
            total = chosen[0][1] if chosen else 0.0
            chosen = [r for r in chosen if r[1] < 0.9 * total]
        return [f"{r[index]:8.2f} s  {r[2]:>7} calls  {r[3]}" for r in chosen[:top]]

    return {"by_own_time": lines(0), "by_cumulative_time": lines(1)}


def _where(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":
        return function
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:
        with contextlib.suppress(ValueError):
            filename = str(Path(filename).resolve().relative_to(Path.cwd()))
    return f"{filename}:{line}({function})"


def machine() -> dict[str, Any]:
    """The machine and the versions that shape the figures."""
    meminfo = Path("/proc/meminfo")
    ram = None
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = round(int(line.split()[1]) / 2**20, 1)
    model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("torch", "prefect", "dask", "distributed", "duckdb", "polars", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        **versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
