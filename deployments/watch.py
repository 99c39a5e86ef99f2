"""`braid watch DIR`: emit ``braid.object.created`` for files landing in a local folder.

A file is emitted once it is fully written: its size and modification time have not
changed for ``settle`` seconds. Hidden and partial names (``.x``, ``*.part``, ``*.tmp``…)
are ignored, so uploaders that write to a temporary name and rename into place are
seen once, under the final name. A file that changes is emitted again (a new version).

Polling, rather than inotify, works the same on every filesystem (network mounts,
containers' bind mounts) and costs one ``stat`` per file per interval.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployments.events import ObjectCreated
from tasks.lake.storage import is_listed, printable_name

logger = logging.getLogger("braid.watch")


@dataclass
class FolderWatcher:
    """Track files under ``root`` and emit each settled new version once."""

    root: Path
    emit: Callable[[ObjectCreated], Any]
    settle: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[int, int, float]] = field(
        default_factory=dict
    )  # path → size, mtime, since
    _emitted: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    def scan(self) -> list[ObjectCreated]:
        """One pass: emit every file whose version has settled and was not emitted yet."""
        now = self.clock()
        current: set[str] = set()
        emitted = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not is_listed(name):
                    continue
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue  # renamed or removed between listing and stat
                current.add(path)
                version = (stat.st_size, stat.st_mtime_ns)
                seen = self._seen.get(path)
                if seen is None or seen[:2] != version:
                    self._seen[path] = (*version, now)
                    continue
                if now - seen[2] >= self.settle and self._emitted.get(path) != version:
                    obj = self._describe(path, stat.st_size, stat.st_mtime_ns)
                    try:
                        self.emit(obj)
                    except Exception as exc:  # the API is down: try again next scan
                        logger.warning("could not emit %s: %s", obj.uri, exc)
                        continue
                    self._emitted[path] = version
                    emitted.append(obj)
        for gone in set(self._seen) - current:
            self._seen.pop(gone, None)
            self._emitted.pop(gone, None)
        return emitted

    def _describe(self, path: str, size: int, mtime_ns: int) -> ObjectCreated:
        # A name that is not UTF-8 cannot travel in an event: it goes percent-encoded (the
        # run lists the source itself and reads the file under its exact name).
        key = Path(path).relative_to(self.root).as_posix()
        if printable_name(key) != key:
            key = urllib.parse.quote(os.fsencode(key))
        return ObjectCreated(
            source=str(self.root),
            key=key,
            size=size,
            etag=f"{mtime_ns:x}-{size:x}",
            folder=str(self.root),
        )

    def run(self, interval: float = 0.5, stop: threading.Event | None = None) -> None:
        """Scan every ``interval`` seconds until ``stop`` is set (or forever)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            for obj in self.scan():
                logger.info("emitted braid.object.created for %s", obj.uri)
            stop.wait(interval)
