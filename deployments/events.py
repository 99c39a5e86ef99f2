"""The one event Braid's sources emit: ``braid.object.created``.

Every source (the folder watcher, the S3/EventBridge/MinIO bridge, the SQS consumer)
describes what landed as an ``ObjectCreated`` and emits it here, so the event's shape is
defined once. The ``ingest`` deployment's triggers match it (see prefect.yaml) and pass
``payload.source`` to the flow, which lists the source itself: the run the first event
of a burst starts at once, and the one it schedules for when the window closes, see
every object of the burst between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.events import Event

EVENT = "braid.object.created"
RESOURCE_PREFIX = "braid.object."


@dataclass(frozen=True)
class ObjectCreated:
    """An object that landed: where (``source`` root and ``key`` under it), how big, which version."""

    source: str  # the root the ingest flow lists: a folder path or s3://bucket[/prefix]
    key: str  # the object's key relative to the root (a path with / separators)
    size: int
    etag: str
    bucket: str | None = None  # for object stores
    folder: str | None = None  # for local folders

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
        event=EVENT,
        resource=Resource(
            {
                "prefect.resource.id": f"{RESOURCE_PREFIX}{obj.uri}",
                "prefect.resource.name": obj.key,
            }
        ),
        payload=obj.payload(),
    )


def emit_object_created(obj: ObjectCreated) -> None:
    """Send ``braid.object.created`` for ``obj``; return only once the Prefect API accepted it.

    Not Prefect's ``emit_event``: it hands the event to a background websocket and never
    reports a failure, so a source could not know the event arrived, and sources must
    know before they acknowledge (the bridge answers 202, the SQS consumer deletes the
    message, the watcher marks the file done). ``POST /events`` answers once the API has
    taken the event, and raises here when it has not (API down, auth refused).
    """
    from prefect.client.orchestration import get_client

    event = object_created_event(obj)
    # A client per call: a fresh client fails at once when the API is down, where a
    # long-lived one retries for a while, longer than an HTTP sender waits for an answer.
    with get_client(sync_client=True) as client:
        client.request("POST", "/events", json=[event.model_dump(mode="json")])
