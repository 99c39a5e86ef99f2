"""The one event Braid's sources emit: ``braid.object.created``.

Every source (the folder watcher, the S3/EventBridge/MinIO bridge, the SQS consumer)
describes what landed as an ``ObjectCreated`` and emits it here, so the event's shape is
defined once. The ``ingest`` deployment's trigger matches it (see prefect.yaml) and
passes ``payload.source`` to the flow, which lists the source itself: a debounced run
triggered by the first event of a burst still sees every object of the burst.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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


def emit_object_created(obj: ObjectCreated) -> Any:
    """Emit ``braid.object.created`` for one object to the Prefect API in PREFECT_API_URL."""
    from prefect.events import emit_event

    validate_key(obj.key)
    return emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": f"{RESOURCE_PREFIX}{obj.uri}",
            "prefect.resource.name": obj.key,
        },
        payload=obj.payload(),
    )
