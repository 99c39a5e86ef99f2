"""The bridge's outbox: notifications are acknowledged once their events are on disk, and
a forwarder sends them on to the Prefect API in batches.

Without it a notification waits for the Prefect API to take its events, so the bridge
runs at the API's pace: under a storm, with ingest runs writing to the same server, one
POST took about 0.3 s and eight senders got 29 notifications/s through. With it, a
notification costs one SQLite commit (WAL, fsync'd: it survives a crash of the bridge
and of the machine), and whatever has queued goes to the API in one request of up to
``EMIT_BATCH`` events while the next ones queue.

Delivery stays at least once: an event leaves the spool only after the API accepted it,
a bridge restarted on the same spool sends what its predecessor left, and an event that
is sent twice (a crash between the API's answer and the delete) is one event, since its
id is derived from the notification (``events.event_id``). A notification redelivered
while its first copy is still queued is stored once (the id is the spool's key).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deployments.events import EMIT_BATCH, GroupCommit, ObjectCreated, object_created_event

logger = logging.getLogger("braid.bridge")

Send = Callable[[list[dict[str, Any]]], None]

# Answers that say the request itself is wrong, so sending it again cannot succeed; every
# other failure (no answer, 5xx, 401/403 of a key being rotated, 408, 429) is retried.
REFUSED = frozenset({400, 413, 422})


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _send_to_prefect(events: list[dict[str, Any]]) -> None:
    from deployments.events import _send

    _send(events)


class Spool:
    """A durable queue of ``braid.object.created`` events between sources and the API.

    ``put`` (the bridge's ``Emit``) returns once the events are committed to ``path``;
    ``start`` runs the forwarder thread, ``close`` stops it after trying to send what is
    left for up to ``drain_s`` seconds (what is still queued then stays for the next start).
    """

    def __init__(
        self,
        path: Path,
        send: Send = _send_to_prefect,
        batch: int = EMIT_BATCH,
        max_backoff_s: float = 30.0,
        linger_s: float = 0.2,
    ) -> None:
        self.path = Path(path)
        # How long the forwarder lets events gather before sending a partial batch: in a
        # storm, one request per fifth of a second instead of one per commit (each request
        # costs the Prefect API more than the events in it).
        self._linger_s = linger_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._send = send
        self._batch = batch
        self._max_backoff_s = max_backoff_s
        self._lock = threading.Lock()  # one connection, shared by senders and the forwarder
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")  # a 202 outlives a power cut
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " id TEXT NOT NULL UNIQUE, body TEXT NOT NULL, queued REAL NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rejected (seq INTEGER PRIMARY KEY, body TEXT NOT NULL,"
            " reason TEXT NOT NULL, refused REAL NOT NULL)"
        )
        self._commits = GroupCommit(self._insert)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0  # events the API accepted through this spool
        self.failures = 0  # requests that failed (each retried)
        self.rejected = 0  # events the API refused as malformed (kept in table rejected)

    def put(self, objects: Sequence[ObjectCreated]) -> None:
        """Queue the events of ``objects``; return once they are durable.

        Concurrent callers share commits: while one commit is being written, the events
        other threads hand in wait, and the next commit carries them all (one fsync each
        was 11 ms, so eight senders got about 60 notifications/s through)."""
        if objects:
            self._commits.submit([object_created_event(o).model_dump(mode="json") for o in objects])

    def _insert(self, events: list[dict[str, Any]]) -> None:
        now = time.time()
        rows = [(str(event["id"]), json.dumps(event), now) for event in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (id, body, queued) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def forward_once(self) -> int:
        """Send one batch of the oldest queued events; return how many the API accepted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body FROM events ORDER BY seq LIMIT ?", (self._batch,)
            ).fetchall()
        return self._part(rows) if rows else 0

    def _refused(self, rows: list[tuple[int, str]], exc: Exception) -> int:
        """The API refused a batch as malformed: find the events it refuses by sending
        halves, so one bad event never holds the queue, and move each to ``rejected``."""
        if len(rows) > 1:
            middle = len(rows) // 2
            return sum(self._part(part) for part in (rows[:middle], rows[middle:]))
        ((seq, body),) = rows
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO rejected (seq, body, reason, refused) VALUES (?, ?, ?, ?)",
                (seq, body, f"{type(exc).__name__}: {exc}"[:2000], time.time()),
            )
            self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            self._db.execute("COMMIT")
        self.rejected += 1
        logger.error("the Prefect API refused event %s (%s); kept in %s, table rejected",
                     json.loads(body).get("id"), exc, self.path)  # fmt: skip
        return 0

    def _part(self, rows: list[tuple[int, str]]) -> int:
        try:
            self._send([json.loads(body) for _, body in rows])
        except Exception as exc:
            if _status(exc) not in REFUSED:
                raise  # the API is down, busy or unauthorised: kept, and tried again
            return self._refused(rows, exc)
        self._delete([seq for seq, _ in rows])
        self.sent += len(rows)
        return len(rows)

    def _delete(self, seqs: list[int]) -> None:
        # One transaction: in autocommit each DELETE would be its own commit and fsync.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq in seqs])
            self._db.execute("COMMIT")

    def rejected_events(self) -> list[tuple[dict[str, Any], str]]:
        """The events the API refused as malformed, with its reason (never retried)."""
        with self._lock:
            rows = self._db.execute("SELECT body, reason FROM rejected ORDER BY seq").fetchall()
        return [(json.loads(body), reason) for body, reason in rows]

    def _forward(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                sent = self.forward_once()
            except Exception as exc:  # the API is down or busy: keep the events, try again
                self.failures += 1
                logger.error(
                    "could not send %s queued events to the Prefect API (%s: %s); retrying in %.0f s",
                    self.pending(), type(exc).__name__, exc, backoff,
                )  # fmt: skip
                self._stop.wait(backoff)
                backoff = min(self._max_backoff_s, backoff * 2)
                continue
            backoff = 0.5
            if sent:
                logger.info("sent %d events to the Prefect API", sent)
                if sent < self._batch:
                    self._stop.wait(self._linger_s)
            elif self._wake.wait(1.0):
                self._wake.clear()
                self._stop.wait(self._linger_s)

    def start(self) -> Spool:
        left = self.pending()
        if left:
            logger.info(
                "%d events left queued in %s by an earlier bridge: sending them", left, self.path
            )
        # In the caller's context: the Prefect settings it runs under (the API's URL).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._forward,), name="braid-spool", daemon=True
        )
        self._thread.start()
        return self

    def close(self, drain_s: float = 10.0) -> int:
        """Stop forwarding once the spool is empty or ``drain_s`` has passed; return how
        many events stay queued for the next start."""
        deadline = time.monotonic() + drain_s
        while self._thread is not None and time.monotonic() < deadline and self.pending():
            time.sleep(0.1)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        left = self.pending()
        if left:
            logger.warning("%d events stay queued in %s for the next start", left, self.path)
        with self._lock:
            self._db.close()
        return left
