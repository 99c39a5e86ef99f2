"""A notification storm: N objects put in an S3 bucket (moto's server), each announced
by its own S3 notification, half through `braid bridge`'s HTTP endpoint (eight senders
at once) and half through SQS, and a share of both delivered twice, as at-least-once
senders and queues do. Used by figure i of `make bench` (1,000 notifications) and by
the end-to-end test of `braid up` (a few hundred).

``notify`` does the sending and timing; the caller owns the stack, the bridges and the
checks of what landed.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

SENDERS = 8  # concurrent HTTP senders, as an EventBridge API destination fans out
SQS_BATCH = 10  # send_message_batch's limit


@dataclass
class Storm:
    """What was sent and how fast the bridges took it."""

    objects: int
    http_notifications: int  # including redeliveries
    sqs_notifications: int
    http_seconds: float  # first POST sent to last 202 received
    sqs_seconds: float  # first message sent to the queue drained (every message deleted)
    started: float  # epoch seconds, for the runs the storm caused
    finished: float

    @property
    def http_events_per_s(self) -> float:
        return self.http_notifications / self.http_seconds

    @property
    def sqs_events_per_s(self) -> float:
        return self.sqs_notifications / self.sqs_seconds

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def caption(i: int) -> bytes:
    colours = ("red", "green", "blue", "amber", "violet", "grey", "white")
    things = ("kite", "boat", "lamp", "bicycle", "teapot", "violin", "tractor", "cactus")
    return (
        f"note {i}: a {colours[i % len(colours)]} {things[(i // 7) % len(things)]} "
        f"photographed on day {i // 56} of the storm"
    ).encode()


def put_objects(s3: Any, bucket: str, prefix: str, n: int) -> list[dict[str, Any]]:
    """Put ``n`` distinct captions, one sample folder each; return each one's S3 record."""

    def put(i: int) -> dict[str, Any]:
        key, body = f"{prefix}/s{i:05d}/note.txt", caption(i)
        etag = s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
        return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket},
                       "object": {"key": key, "size": len(body), "eTag": etag,
                                  "sequencer": f"{i:016X}"}}}  # fmt: skip

    with ThreadPoolExecutor(SENDERS) as pool:
        return list(pool.map(put, range(n)))


def notify(
    records: list[dict[str, Any]],
    bridge_url: str,
    secret: str,
    sqs: Any,
    queue_url: str,
    redeliver: float = 0.1,
) -> Storm:
    """Announce the first half of ``records`` over HTTP and the rest over SQS, one record per
    notification, the first ``redeliver`` share of each half twice; both at once."""
    import httpx

    half = len(records) // 2
    http_part, sqs_part = records[:half], records[half:]
    http_bodies = [json.dumps({"Records": [r]}) for r in http_part]
    http_bodies += http_bodies[: int(len(http_bodies) * redeliver)]
    sqs_bodies = [json.dumps({"Records": [r]}) for r in sqs_part]
    sqs_bodies += sqs_bodies[: int(len(sqs_bodies) * redeliver)]
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    started = time.time()

    def over_sqs() -> float:
        began = time.perf_counter()
        for i in range(0, len(sqs_bodies), SQS_BATCH):
            entries = [{"Id": str(j), "MessageBody": body}
                       for j, body in enumerate(sqs_bodies[i : i + SQS_BATCH])]  # fmt: skip
            sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        while True:  # drained: every message received, emitted and deleted
            attributes = sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=["ApproximateNumberOfMessages",
                                "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]  # fmt: skip
            if not any(int(v) for v in attributes.values()):
                return time.perf_counter() - began
            # Not faster: each poll is a request to the same queue server the bridge is
            # draining (moto's, one process), and at 20/s they slowed it measurably.
            time.sleep(0.2)

    def over_http() -> float:
        began = time.perf_counter()
        with httpx.Client(timeout=30) as client:

            def post(body: str) -> None:
                response = client.post(f"{bridge_url}/events", content=body, headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"bridge answered {response.status_code}: {response.text}")

            with ThreadPoolExecutor(SENDERS) as pool:
                list(pool.map(post, http_bodies))
        return time.perf_counter() - began

    with ThreadPoolExecutor(2) as pool:
        sqs_future, http_future = pool.submit(over_sqs), pool.submit(over_http)
        http_seconds, sqs_seconds = http_future.result(), sqs_future.result()
    return Storm(
        objects=len(records),
        http_notifications=len(http_bodies),
        sqs_notifications=len(sqs_bodies),
        http_seconds=http_seconds,
        sqs_seconds=sqs_seconds,
        started=started,
        finished=time.time(),
    )


def drain(sqs: Any, queue_url: str, n: int, loops: int = 4) -> float:
    """Messages per second a bare consumer takes from ``queue_url`` as ``notify`` measures
    the bridge: ``n`` messages sent in batches of ten while ``loops`` threads receive (ten
    at a time) and delete them, nothing else; from the first send to the last delete. The
    queue server's own ceiling, to read the bridge's SQS rate against."""
    import threading

    import boto3

    body = json.dumps({"Records": [{"eventName": "reference", "padding": "x" * 300}]})
    clients = [boto3.client("sqs") for _ in range(loops)]  # a client each, as the bridge's loops
    taken, lock, done = [0], threading.Lock(), threading.Event()

    def consume(client: Any) -> None:
        try:
            _consume(client)
        finally:  # a loop that failed ends the others too (and then raises below)
            done.set()

    def _consume(client: Any) -> None:
        while not done.is_set():
            messages = client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=SQS_BATCH, WaitTimeSeconds=1
            ).get("Messages", [])
            if not messages:
                continue
            client.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(messages)
            ])  # fmt: skip
            with lock:
                taken[0] += len(messages)
                if taken[0] >= n:
                    done.set()

    began = time.perf_counter()
    with ThreadPoolExecutor(loops) as pool:
        consumers = [pool.submit(consume, client) for client in clients]
        for i in range(0, n, SQS_BATCH):
            entries = [{"Id": str(j), "MessageBody": body} for j in range(min(SQS_BATCH, n - i))]
            sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        done.wait(600)
        seconds = time.perf_counter() - began
        for consumer in consumers:
            consumer.result()
    return taken[0] / seconds
