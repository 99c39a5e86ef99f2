"""The one event Braid's sources emit: ``braid.object.created``.

Every source (the folder watcher, the S3/EventBridge/MinIO bridge, the SQS consumer)
describes what landed as an ``ObjectCreated`` and emits it here, so the event's shape is
defined once. The ``ingest`` deployment's triggers match it (see prefect.yaml) and pass
``payload.source`` to the flow, which lists the source itself: the run the first event
of a burst starts at once, and the one it schedules for when the window closes, see
every object of the burst between them.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.events import Event

EVENT = "braid.object.created"
RESOURCE_PREFIX = "braid.object."
# Event ids are derived from what the notification names (uuid5 in this namespace), so a
# notification delivered twice (S3 and SQS deliver at least once; a sender retries when
# it times out) is one event: Prefect stores an id once and its triggers skip an id seen.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a8e-5d0b-4c8e-9a57-0b7d3e1f2c44")
# Events per POST /events: a notification's records go out together, within the sender's
# timeout, instead of one request (and one new client) each.
EMIT_BATCH = 500


@dataclass(frozen=True)
class ObjectCreated:
    """An object that landed: where (``source`` root and ``key`` under it), how big, which version."""

    source: str  # the root the ingest flow lists: a folder path or s3://bucket[/prefix]
    key: str  # the object's key relative to the root (a path with / separators)
    size: int
    etag: str
    bucket: str | None = None  # for object stores
    folder: str | None = None  # for local folders
    sequencer: str | None = None  # S3's order of events for a key: a redelivery repeats it

    @property
    def uri(self) -> str:
        return f"{self.source.rstrip('/')}/{self.key}"

    def payload(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None} | {"uri": self.uri}


def validate_key(key: str) -> str:
    """Refuse keys that could escape the source root or are not plain relative paths."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {key!r}")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid object key {key!r}: empty, '.' or '..' segments")
    return key


def object_created_event(obj: ObjectCreated) -> Event:
    """The ``braid.object.created`` event for ``obj``."""
    from prefect.events import Event
    from prefect.events.schemas.events import Resource

    validate_key(obj.key)
    return Event(
        id=event_id(obj),
        event=EVENT,
        resource=Resource(
            {
                "prefect.resource.id": f"{RESOURCE_PREFIX}{obj.uri}",
                "prefect.resource.name": obj.key,
            }
        ),
        payload=obj.payload(),
    )


def event_id(obj: ObjectCreated) -> uuid.UUID:
    """The same id for every delivery of one notification of one version of an object."""
    name = "\x00".join((obj.uri, obj.etag, str(obj.size), obj.sequencer or ""))
    return uuid.uuid5(EVENT_ID_NAMESPACE, name)


def emit_object_created(obj: ObjectCreated) -> None:
    """Send ``braid.object.created`` for ``obj``; return only once the Prefect API accepted it.

    Not Prefect's ``emit_event``: it hands the event to a background websocket and never
    reports a failure, so a source could not know the event arrived, and sources must
    know before they acknowledge (the bridge answers 202, the SQS consumer deletes the
    message, the watcher marks the file done). ``POST /events`` answers once the API has
    taken the event, and raises here when it has not (API down, auth refused).
    """
    emit_objects_created([obj])


def emit_objects_created(objects: Sequence[ObjectCreated]) -> None:
    """Send ``braid.object.created`` for each of ``objects``, ``EMIT_BATCH`` per request;
    return once the API accepted them all (raise otherwise, as ``emit_object_created``).

    Concurrent callers share requests (a group commit): while one request is out, the
    events other threads hand in wait, and the next request carries all of them; each
    caller returns when the request holding its events was accepted, or raises its error.
    Notifications of one record each, from many senders at once, then cost the API one
    request per round trip rather than one each.
    """
    if not objects:
        return
    from prefect.settings import PREFECT_API_URL

    events = [object_created_event(obj).model_dump(mode="json") for obj in objects]
    url = PREFECT_API_URL.value() or ""
    with _clients_lock:
        commit = _commits.setdefault(url, GroupCommit())
    commit.submit(events)


class _Ticket:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Events from many threads, handed to ``send`` together by whichever of them finds no
    call of it under way (a request to the API, or a commit to the bridge's spool)."""

    def __init__(self, send: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self._send = send or _send
        self._cond = threading.Condition()
        self._pending: list[tuple[list[dict[str, Any]], _Ticket]] = []
        self._sending = False

    def submit(self, events: list[dict[str, Any]]) -> None:
        ticket = _Ticket()
        with self._cond:
            self._pending.append((events, ticket))
            while not ticket.done and self._sending:
                self._cond.wait()
            if ticket.done:  # another thread's request carried these events
                if ticket.error is not None:
                    raise ticket.error
                return
            self._sending = True
            batch, self._pending = self._pending, []
        error: BaseException | None = None
        try:
            self._send([event for events_, _ in batch for event in events_])
        except BaseException as exc:
            error = exc
        with self._cond:
            for _, waiting in batch:
                waiting.done, waiting.error = True, error
            self._sending = False
            self._cond.notify_all()
        if error is not None:
            raise error


def _send(events: list[dict[str, Any]]) -> None:
    from prefect.context import SettingsContext, get_settings_context

    url, client, settings = _client()
    try:
        with SettingsContext(profile=get_settings_context().profile, settings=settings):
            for start in range(0, len(events), EMIT_BATCH):
                client.request("POST", "/events", json=events[start : start + EMIT_BATCH])
    except BaseException:
        _drop_client(url, client)  # the next call starts afresh: the API may have moved
        raise


_commits: dict[str, GroupCommit] = {}  # one per API URL: each request goes to one API


# Two retries at most (about 6 s of back-off for a busy API), not Prefect's five (a
# minute): longer than a sender waits, and the sender retries anyway; a redelivery is the
# same event.
EMIT_RETRIES = 2
# One client per API for the process, kept open, and the settings it runs under made once:
# a new client per notification (its version check and CSRF handshake) and new settings
# (about 0.1 s to build) held emitting to about 40 events/s in notifications of ten records.
_clients: dict[str, tuple[Any, Any]] = {}
_clients_lock = threading.Lock()


def _client() -> tuple[str, Any, Any]:
    from prefect.client.orchestration import get_client
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES

    url = PREFECT_API_URL.value() or ""
    with _clients_lock:
        if url not in _clients:
            context = get_settings_context()
            settings = context.settings.copy_with_update(
                updates={PREFECT_CLIENT_MAX_RETRIES: EMIT_RETRIES}
            )
            with SettingsContext(profile=context.profile, settings=settings):
                client = get_client(sync_client=True)
                client.__enter__()
            _clients[url] = (client, settings)
        client, settings = _clients[url]
    return url, client, settings


def _drop_client(url: str, client: Any) -> None:
    with _clients_lock:
        if url in _clients and _clients[url][0] is client:
            del _clients[url]
    with contextlib.suppress(Exception):
        client.__exit__(None, None, None)
