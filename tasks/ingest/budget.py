"""A decode budget per object: a decoder that runs past its time or memory is stopped.

One watchdog thread per process watches every decode in flight (``within``). A decode
past ``decode_seconds``, or one that has grown the process by more than
``decode_memory_mb``, is stopped: the watchdog raises ``OverBudget`` in the decoding
thread (``PyThreadState_SetAsyncExc``), which Python delivers at the decoder's next
bytecode, inside its loops over frames, blocks or rows, or as soon as a native call
(one Pillow decode, one read) returns. Header limits bound each native call beforehand
(pixels, frames, duration, rows, columns), so no single call runs unbounded.

Memory is the process's resident size, which threads share. While several decodes run,
they share one budget (``decode_memory_mb`` in all, so the process's peak is bounded
whatever the number of threads); past it, every decode then running is stopped and asked to run again alone, under ``exclusive``, where the growth is
its own: one that breaks the budget alone is the culprit, and its object is quarantined
with the reason. The others land as if nothing happened.

Nothing here knows of Prefect or of any modality: ``within`` wraps a call.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from tasks.common import Rejected

T = TypeVar("T")
TICK_S = 0.02  # how often the watchdog looks, while a decode is in flight
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class OverBudget(BaseException):
    """Raised inside a decoding thread by the watchdog. A BaseException, so a decoder's
    own ``except Exception`` cannot swallow it."""


class RunAlone(Exception):
    """A decode stopped because the decodes then running broke their shared memory
    budget: it runs again alone (``exclusive``) to find whether it is the culprit."""


@dataclass
class _Watched:
    thread_id: int
    started: float
    deadline: float
    rss_start: int
    memory_bytes: int
    alone: bool
    fired: str | None = None  # "time" or "memory", once the watchdog raised in the thread
    peak: int = 0


def resident_bytes() -> int:
    """This process's resident size (``/proc/self/statm``; ``ru_maxrss`` where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _Watchdog:
    def __init__(self) -> None:
        # A plain lock under the condition, entered with ``with self._mutex``: its
        # ``__enter__`` is C, so the watchdog's exception cannot land between taking the
        # lock and the ``with`` block that releases it (as it can in Condition's Python
        # ``__enter__``, leaving the lock held for ever).
        self._mutex = threading.Lock()
        self._lock = threading.Condition(self._mutex)
        self._watched: dict[int, _Watched] = {}
        self._thread: threading.Thread | None = None

    def enter(self, watched: _Watched) -> None:
        with self._mutex:
            self._watched[id(watched)] = watched
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, daemon=True, name="braid-decode-budget"
                )
                self._thread.start()
            self._lock.notify()

    def leave(self, watched: _Watched) -> None:
        """Stop watching (again, harmlessly); where the watchdog raised, clear the exception
        if it is still pending, so it can never surface in the caller's code."""
        with self._mutex:
            self._watched.pop(id(watched), None)
            if watched.fired is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(watched.thread_id), None)

    def _watch(self) -> None:
        with self._mutex:
            while True:
                if not self._watched:
                    self._lock.wait()
                    continue
                now = time.monotonic()
                self._check(now, resident_bytes())
                deadlines = [w.deadline for w in self._watched.values() if w.fired is None]
                self._lock.wait(max(0.0, min([TICK_S, *(d - now for d in deadlines)])))

    def _check(self, now: float, rss: int) -> None:
        live = [w for w in self._watched.values() if w.fired is None]
        for watched in live:
            watched.peak = max(watched.peak, rss - watched.rss_start)
            if now > watched.deadline:
                self._fire(watched, "time")
        live = [w for w in live if w.fired is None]
        if not live:
            return
        # The growth since the earliest decode in flight began, against one budget they
        # share: the process grows by at most ``decode_memory_mb`` however many decode.
        growth = rss - min(w.rss_start for w in live)
        if growth > max(w.memory_bytes for w in live):
            for watched in live:
                watched.peak = max(watched.peak, growth)
                self._fire(watched, "memory")

    @staticmethod
    def _fire(watched: _Watched, why: str) -> None:
        watched.fired = why
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(watched.thread_id), ctypes.py_object(OverBudget)
        )


class _Gate:
    """Decodes share the gate; one that must run alone holds it exclusively (waiting for
    the others to finish, and keeping new ones out until it is done)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sharing = 0
        self._alone = False
        self._waiting_alone = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._alone or self._waiting_alone:
                self._cond.wait()
            self._sharing += 1
        try:
            yield
        finally:
            with self._cond:
                self._sharing -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_alone += 1
            while self._alone or self._sharing:
                self._cond.wait()
            self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


_WATCHDOG = _Watchdog()
_GATE = _Gate()


def within(seconds: float, memory_mb: float, decode: Callable[[], T]) -> T:
    """``decode()`` under the budget; ``Rejected`` at stage ``decode`` when it breaks it.

    A decode stopped for the memory its companions shared is run again alone first.
    """
    memory_bytes = int(memory_mb * 2**20)
    try:
        with _GATE.shared():
            return _watched(seconds, memory_bytes, decode, alone=False)
    except RunAlone:
        pass
    with _GATE.exclusive():
        return _watched(seconds, memory_bytes, decode, alone=True)


def _watched(seconds: float, memory_bytes: int, decode: Callable[[], T], alone: bool) -> T:
    now = time.monotonic()
    watched = _Watched(
        threading.get_ident(), now, now + seconds, resident_bytes(), memory_bytes, alone
    )
    # The watchdog can raise only between ``enter`` and ``leave`` (it raises once per
    # decode, and ``leave`` clears what it raised and was not yet delivered); wherever in
    # that span it lands, ``leave`` runs again below, so nothing is left watched.
    try:
        try:
            _WATCHDOG.enter(watched)
            return decode()
        finally:
            _WATCHDOG.leave(watched)
    except OverBudget:
        _WATCHDOG.leave(watched)
        elapsed = time.monotonic() - watched.started
        if watched.fired == "time":
            raise Rejected(
                "decode",
                f"decode budget: stopped after {elapsed:.3g} s, over the {seconds:g} s "
                "budget (decode_seconds)",
            ) from None
        if not watched.alone:
            raise RunAlone() from None
        raise Rejected(
            "decode",
            f"decode budget: stopped at {watched.peak / 2**20:.0f} MB, over the "
            f"{memory_bytes / 2**20:g} MB budget (decode_memory_mb)",
        ) from None
