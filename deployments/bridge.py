"""`braid bridge`: storage notifications in, ``braid.object.created`` events out.

Object stores announce new objects in their own shapes: S3 event notifications
(``Records[].s3``, also what MinIO sends, and what S3 puts on SQS, bare or inside an SNS
envelope) and EventBridge "Object Created" events. ``parse_notification`` turns any of
them into ``ObjectCreated``; two thin transports carry them to the Prefect API:

- ``make_app``: an HTTP endpoint for senders that push (an EventBridge API destination,
  a MinIO webhook), authenticated with a shared secret;
- ``consume_sqs``: a long-polling consumer for the usual S3 → (SNS →) SQS wiring.

Both acknowledge a notification (HTTP 202, SQS delete) only once the Prefect API has
accepted its events, so any failure makes the sender or the queue deliver it again. That
is at-least-once delivery; the ingest flow tolerates repeats because it skips objects
already landed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote_plus

from deployments import secrets
from deployments.events import ObjectCreated, validate_key

if TYPE_CHECKING:
    from starlette.applications import Starlette

logger = logging.getLogger("braid.bridge")

Emit = Callable[[list[ObjectCreated]], Any]  # all of one notification's objects at once

MAX_BODY = 1024 * 1024
DEFAULT_PORT = 8787
SECRET_ENV = "BRAID_BRIDGE_SECRET"
SIGNATURE_HEADER = "x-braid-signature"
MAX_KEY_BYTES = 1024  # S3's limit on a key's UTF-8 length
# S3 bucket names, with the looser legacy rules (capitals, underscores, up to 255 characters)
# that old us-east-1 buckets still follow; nothing that could change the meaning of s3://bucket/.
BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


class NotificationError(ValueError):
    """A body that is not a notification Braid understands, or describes an object it refuses."""


def parse_notification(body: Any) -> list[ObjectCreated]:
    """The objects a notification announces as created; other events in it are ignored.

    Accepts S3 event notifications (AWS ``ObjectCreated:*`` and MinIO ``s3:ObjectCreated:*``
    records), EventBridge events from ``aws.s3`` and either inside an SNS envelope. S3's
    ``s3:TestEvent`` announces nothing. Raises ``NotificationError`` for anything else,
    and for any record that names an object Braid refuses (a key escaping the source root).
    """
    if not isinstance(body, dict):
        raise NotificationError(f"expected a JSON object, got {type(body).__name__}")
    if body.get("Type") == "Notification" and "Message" in body:
        message = _get(body, "Message", str)
        try:
            inner = json.loads(message)
        except (ValueError, RecursionError) as exc:
            raise NotificationError("the SNS envelope's Message is not JSON") from exc
        if not isinstance(inner, dict) or inner.get("Type") == "Notification":
            raise NotificationError("the SNS envelope's Message is not a notification")
        body = inner
    if "Records" in body:
        return _from_records(_get(body, "Records", list))
    if "detail-type" in body or "detail" in body:
        return _from_eventbridge(body)
    if body.get("Event") == "s3:TestEvent":
        return []
    raise NotificationError(
        "not an S3, EventBridge or MinIO notification (expected Records, detail-type or s3:TestEvent)"
    )


def _from_records(records: list[Any]) -> list[ObjectCreated]:
    objects = []
    for index, record in enumerate(records):
        where = f"Records[{index}]"
        name = _get(record, "eventName", str, where)
        # AWS names events "ObjectCreated:Put", MinIO "s3:ObjectCreated:Put".
        if not name.removeprefix("s3:").startswith("ObjectCreated:"):
            continue
        encoded = _get(record, "s3.object.key", str, where)
        try:
            # S3 and MinIO URL-encode keys form-style: "my cat.jpg" arrives as "my+cat.jpg".
            key = unquote_plus(encoded, errors="strict")
        except UnicodeDecodeError as exc:
            raise NotificationError(f"{where}.s3.object.key is not URL-encoded UTF-8") from exc
        objects.append(
            _object(
                bucket=_get(record, "s3.bucket.name", str, where),
                key=key,
                size=_get(record, "s3.object.size", int, where),
                etag=_get(record, "s3.object.eTag", str, where, default=""),
                sequencer=_get(record, "s3.object.sequencer", str, where, default=None),
            )
        )
    return objects


def _from_eventbridge(event: dict[str, Any]) -> list[ObjectCreated]:
    source = event.get("source")
    if source != "aws.s3":
        raise NotificationError(f"EventBridge event from {source!r}, expected 'aws.s3'")
    if _get(event, "detail-type", str) != "Object Created":
        return []
    # Unlike S3 notifications, EventBridge carries the key as is, not URL-encoded.
    return [
        _object(
            bucket=_get(event, "detail.bucket.name", str),
            key=_get(event, "detail.object.key", str),
            size=_get(event, "detail.object.size", int),
            etag=_get(event, "detail.object.etag", str, default=""),
            sequencer=_get(event, "detail.object.sequencer", str, default=None),
        )
    ]


_MISSING = object()


def _get(data: Any, path: str, kind: type, where: str = "", default: Any = _MISSING) -> Any:
    """The value at a dotted ``path`` of nested objects, checked to be of ``kind``."""
    name = f"{where}.{path}" if where else path
    value = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            if default is not _MISSING:
                return default
            raise NotificationError(f"missing {name}")
        value = value[part]
    # bool is an int to Python, never to a JSON producer.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NotificationError(f"{name} should be {kind.__name__}, got {type(value).__name__}")
    return value


def _object(
    bucket: str, key: str, size: int, etag: str, sequencer: str | None = None
) -> ObjectCreated:
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise NotificationError(f"invalid bucket name {bucket!r}")
    try:
        validate_key(key)
        too_long = len(key.encode("utf-8")) > MAX_KEY_BYTES
    except UnicodeEncodeError as exc:  # a lone surrogate, which JSON can spell
        raise NotificationError(f"invalid object key {key!r}: not encodable as UTF-8") from exc
    except ValueError as exc:
        raise NotificationError(str(exc)) from exc
    if too_long:
        raise NotificationError(f"object key longer than {MAX_KEY_BYTES} bytes")
    if size < 0:
        raise NotificationError(f"negative size {size} for {key!r}")
    return ObjectCreated(
        source=f"s3://{bucket}", key=key, size=size, etag=etag, bucket=bucket, sequencer=sequencer
    )


def load_secret(block_name: str | None = None) -> str:
    """The shared secret: the ``Secret`` block named ``block_name``, else $BRAID_BRIDGE_SECRET."""
    return secrets.load_secret(block_name, SECRET_ENV, "shared secret", "--secret-block")


def is_authorized(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether the request carries ``Authorization: Bearer <secret>`` or a valid HMAC of ``body``.

    The HMAC header is ``X-Braid-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.
    Both comparisons take constant time.
    """
    key = secret.encode("utf-8")
    # Header values arrive decoded as latin-1; encoding them back gives the bytes as sent.
    scheme, _, token = headers.get("authorization", "").partition(" ")
    bearer = scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode("latin-1", "replace"), key
    )
    algorithm, _, signature = headers.get(SIGNATURE_HEADER, "").partition("=")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
    signed = algorithm.strip().lower() == "sha256" and hmac.compare_digest(
        signature.strip().encode("latin-1", "replace").lower(), expected
    )
    return bearer or signed


def make_app(secret: str, emit: Emit, max_body: int = MAX_BODY) -> Starlette:
    """The bridge's HTTP app: ``POST /events`` takes notifications, ``GET /health`` answers 200.

    ``POST /events`` answers 202 ``{"emitted": n}`` once ``emit`` returned for every object
    of the notification; 401 without valid credentials; 413 for a body over ``max_body``
    bytes; 415 for a type other than JSON; 400 for anything that is not a notification or
    names a key Braid refuses (then nothing is emitted); 503 when ``emit`` fails, so the
    sender retries.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    if not secret:
        raise ValueError("the bridge needs a non-empty shared secret")

    def refuse(status: int, error: str, **headers: str) -> JSONResponse:
        return JSONResponse({"error": error}, status_code=status, headers=headers or None)

    async def read_body(request: Request) -> bytes | None:
        """The body, or None once it grows past ``max_body`` (a chunked body has no length)."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def events(request: Request) -> JSONResponse:
        client = request.client.host if request.client else "?"
        length = request.headers.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit()):
            return refuse(400, "invalid Content-Length")
        if length is not None and int(length) > max_body:
            logger.warning("refused %s: Content-Length %s over %d", client, length, max_body)
            return refuse(413, f"body over {max_body} bytes")
        try:
            body = await read_body(request)
        except ClientDisconnect:
            return refuse(400, "client disconnected")
        if body is None:
            logger.warning("refused %s: body over %d bytes", client, max_body)
            return refuse(413, f"body over {max_body} bytes")
        if not is_authorized(secret, request.headers, body):
            logger.warning("refused %s: no valid credentials", client)
            return refuse(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            return refuse(415, "expected Content-Type application/json")
        try:
            objects = parse_notification(json.loads(body))
        except (ValueError, RecursionError) as exc:  # NotificationError, JSON, encoding, depth
            reason = str(exc) if isinstance(exc, NotificationError) else "malformed JSON"
            logger.warning("refused %s: %s", client, reason)
            return refuse(400, reason)
        try:
            await run_in_threadpool(emit, objects)
        except Exception as exc:
            logger.error(
                "could not emit %d events for %s: %s: %s",
                len(objects), client, type(exc).__name__, exc,
            )  # fmt: skip
            # Events an earlier batch sent go again on the retry, under the same ids: one each.
            return JSONResponse(
                {"error": "could not emit events, retry later", "emitted": 0},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        logger.info("emitted %d events for %s", len(objects), client)
        return JSONResponse({"emitted": len(objects)}, status_code=202)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/events", events, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def serve(app: Starlette, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve ``app`` with uvicorn until interrupted (SIGINT or SIGTERM)."""
    import uvicorn

    uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, server_header=False, timeout_keep_alive=5)
    ).run()


@dataclass
class SqsStats:
    """What a ``consume_sqs`` run did, message by message."""

    received: int = 0
    deleted: int = 0  # emitted (or announced nothing) and deleted
    malformed: int = 0  # left for the queue's redrive policy
    failed: int = 0  # emit or delete failed: left to come back after the visibility timeout
    emitted: int = 0  # events, not messages


def sqs_client(aws_credentials_block: str | None = None) -> Any:
    """An SQS client: from the prefect-aws ``AwsCredentials`` block named, else boto3's default chain.

    The default chain honours AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, profiles and roles.
    """
    if aws_credentials_block:
        from prefect_aws import AwsCredentials

        credentials = cast(AwsCredentials, AwsCredentials.load(aws_credentials_block))
        return credentials.get_client("sqs")
    import boto3

    return boto3.client("sqs")


def consume_sqs(
    queue_url: str,
    emit: Emit,
    client: Any = None,
    wait_seconds: int = 20,
    stop: threading.Event | None = None,
    max_messages: int = 10,
    failure_backoff: float = 5.0,
) -> SqsStats:
    """Emit the objects of every S3 notification on an SQS queue, until ``stop`` is set.

    Long-polls the queue; a message (an S3 notification, bare or SNS-wrapped, or an
    EventBridge event) is deleted only after all its objects were emitted. A malformed
    message is logged and left for the queue's redrive policy (a dead-letter queue after
    maxReceiveCount); one whose emit fails comes back after the visibility timeout.
    Errors reaching the queue are logged and retried after ``failure_backoff`` seconds;
    a queue that does not exist fails at once.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    client = client or sqs_client()
    stop = stop or threading.Event()
    stats = SqsStats()
    client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    logger.info("consuming %s", queue_url)
    while not stop.is_set():
        try:
            response = client.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except (BotoCoreError, ClientError) as exc:
            logger.error("could not receive from %s: %s", queue_url, exc)
            stop.wait(failure_backoff)
            continue
        messages = response.get("Messages", [])
        stats.received += len(messages)
        if _handle_messages(client, queue_url, messages, emit, stats):
            stop.wait(failure_backoff)
    logger.info("stopped consuming %s: %s", queue_url, stats)
    return stats


def _handle_messages(
    client: Any, queue_url: str, messages: list[dict[str, Any]], emit: Emit, stats: SqsStats
) -> int:
    """Emit the objects of one receive's messages in one call, then delete them in one
    request; returns how many failed (left to come back after the visibility timeout)."""
    from botocore.exceptions import BotoCoreError, ClientError

    parsed: list[tuple[dict[str, Any], list[ObjectCreated]]] = []
    for message in messages:
        objects = _parse_message(message, stats)
        if objects is not None:
            parsed.append((message, objects))
    if not parsed:
        return 0
    objects = [obj for _, of_message in parsed for obj in of_message]
    try:
        emit(objects)
    except Exception as exc:
        logger.error(
            "could not emit %d events, leaving %d messages: %s: %s",
            len(objects), len(parsed), type(exc).__name__, exc,
        )  # fmt: skip
        stats.failed += len(parsed)
        return len(parsed)
    stats.emitted += len(objects)
    entries = [
        {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
        for index, (message, _) in enumerate(parsed)
    ]
    try:
        response = client.delete_message_batch(QueueUrl=queue_url, Entries=entries)
    except (BotoCoreError, ClientError) as exc:
        # Their events went out; they come back after the visibility timeout and go out
        # again, under the same event ids.
        logger.error("could not delete %d messages: %s", len(entries), exc)
        stats.failed += len(entries)
        return len(entries)
    for failure in response.get("Failed", []):
        logger.error("could not delete message %s: %s", failure.get("Id"), failure.get("Message"))
    failed = len(response.get("Failed", []))
    stats.failed += failed
    stats.deleted += len(entries) - failed
    return failed


def _parse_message(message: dict[str, Any], stats: SqsStats) -> list[ObjectCreated] | None:
    """A message's objects; None (logged, counted) for a malformed one, which stays on the
    queue for its redrive policy."""
    message_id = message.get("MessageId", "?")
    receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    try:
        return parse_notification(json.loads(message.get("Body", "")))
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, NotificationError) else "body is not JSON"
        logger.warning(
            "leaving malformed message %s (received %s times) for the redrive policy: %s",
            message_id,
            receives,
            reason,
        )
        stats.malformed += 1
        return None
