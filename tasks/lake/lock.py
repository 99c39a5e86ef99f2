"""One writer per lake: an exclusive lock that a second run waits on, and staging cleanup.

The lock is an ``flock`` on ``<lake>/.braid.lock``, which the kernel releases when its
holder dies, however it dies: a lock file left by a crashed run holds no lock and is
taken at once (the next holder says whose it was). The file records the holder (pid,
host, run id, since when) so a waiting run can say whom it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LOCK_FILE = ".braid.lock"
STAGING = "_staging"


class LakeBusy(RuntimeError):
    """Another run holds the lake's lock and this one would not wait (longer)."""


def _holder(handle: Any) -> dict[str, Any]:
    handle.seek(0)
    try:
        return dict(json.loads(handle.read() or "{}"))
    except ValueError:
        return {}


def describe(holder: dict[str, Any]) -> str:
    """The holder of a lock as a person reads it."""
    if not holder:
        return "another run"
    return (
        f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {holder.get('since', '?')})"
    )


@contextmanager
def lake_lock(
    lake: str | Path,
    run_id: str,
    timeout_s: float | None = None,
    on_wait: Callable[[str], None] = print,
    on_stale: Callable[[str], None] = print,
    poll_s: float = 0.5,
) -> Iterator[dict[str, Any]]:
    """Hold the lake's writer lock for the body; wait for another holder up to ``timeout_s``
    seconds (None: as long as it takes; 0: not at all), then raise LakeBusy.

    Yields the previous holder's record (``run_id``, ``pid``, ``host``, ``since`` and
    ``released``; empty for a new lake), so the new holder can tidy up after it."""
    root = Path(lake)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+", encoding="utf-8") as handle:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = describe(_holder(handle))
                if deadline is not None and time.monotonic() >= deadline:
                    raise LakeBusy(
                        f"lake {str(lake)!r} is being written by {holder}; "
                        f"gave up after {timeout_s:g} s (lock_timeout_s)"
                    ) from None
                if not told:
                    on_wait(f"lake {str(lake)!r} is being written by {holder}: waiting for it")
                    told = True
                time.sleep(poll_s)
        previous = _holder(handle)
        if previous.get("pid") and not previous.get("released"):
            on_stale(f"taking over a stale lock of {describe(previous)}, which ended without releasing it")
        _write(handle, {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                        "since": datetime.now(UTC).isoformat(timespec="seconds")})  # fmt: skip
        try:
            yield previous
        finally:
            _write(handle, {**_holder(handle), "released": True})
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_locked(lake: str | Path) -> bool:
    """Whether a live run holds the lake's writer lock now (a crashed run's lock is free)."""
    path = Path(lake) / LOCK_FILE
    if not path.is_file():
        return False
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _write(handle: Any, holder: dict[str, Any]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(holder))
    handle.flush()


def staging_dir(lake: str | Path, run_id: str) -> Path:
    """Where a run stages what it hands between processes (its plan, child runs' rows)."""
    return Path(lake) / STAGING / run_id


def remove_stale_staging(lake: str | Path, run_id: str) -> list[str]:
    """Remove what crashed runs left under ``_staging`` (call while holding the lock)."""
    root = Path(lake) / STAGING
    if not root.is_dir():
        return []
    removed = []
    for entry in root.iterdir():
        if entry.name != run_id:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed
