"""`braid bridge`: notifications as providers send them, a real HTTP server, SQS on moto, the Prefect API."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.bridge import (
    NotificationError,
    SqsStats,
    consume_sqs,
    load_secret,
    make_app,
    parse_notification,
)
from deployments.events import ObjectCreated, emit_objects_created
from deployments.spool import Spool

SECRET = "correct horse battery staple"
MAX_BODY = 4096  # small, so oversized bodies fit in socket buffers and the client reads the 413


# --- notifications, as each provider sends them ------------------------------------------------


def s3_notification(key: str = "photos/my+cat%3A1.jpg", event: str = "ObjectCreated:Put") -> dict:
    """An S3 event notification (what S3 sends to SQS, SNS and Lambda); keys are URL-encoded."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2024-05-01T12:00:00.000Z",
                "eventName": event,
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "203.0.113.7"},
                "responseElements": {
                    "x-amz-request-id": "C3D13FE58DE4C810",
                    "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "braid-ingest",
                    "bucket": {
                        "name": "braid-landing",
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": "arn:aws:s3:::braid-landing",
                    },
                    "object": {
                        "key": key,
                        "size": 1024,
                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                        "sequencer": "0055AED6DCD90281E5",
                    },
                },
            }
        ]
    }


def eventbridge_event(key: str = "audio/take 1.wav", detail_type: str = "Object Created") -> dict:
    """An EventBridge event from S3; the key is not URL-encoded here."""
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "111122223333",
        "time": "2024-05-01T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:s3:::braid-landing"],
        "detail": {
            "version": "0",
            "bucket": {"name": "braid-landing"},
            "object": {
                "key": key,
                "size": 5,
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                "sequencer": "617f08299329d189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "source-ip-address": "1.2.3.4",
            "reason": "PutObject",
        },
    }


def minio_notification() -> dict:
    """A MinIO webhook notification: S3's record shape, 's3:' event names, the key encoded too."""
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": "braid-landing/text/notes 2024.md",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": "2024-05-01T12:00:00.000Z",
                "eventName": "s3:ObjectCreated:Put",
                "userIdentity": {"principalId": "minioadmin"},
                "requestParameters": {
                    "principalId": "minioadmin",
                    "region": "",
                    "sourceIPAddress": "172.18.0.1",
                },
                "responseElements": {
                    "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
                    "x-amz-request-id": "17CB2A3F2D2E5E10",
                    "x-minio-deployment-id": "4a3a2f9c-7c3d-4b84-9d4e-3bd7c5d8e1f0",
                    "x-minio-origin-endpoint": "http://172.18.0.2:9000",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {
                        "name": "braid-landing",
                        "ownerIdentity": {"principalId": "minioadmin"},
                        "arn": "arn:aws:s3:::braid-landing",
                    },
                    "object": {
                        "key": "text%2Fnotes+2024.md",
                        "size": 311,
                        "eTag": "5eb63bbbe01eeed093cb22bb8f5acdc3",
                        "contentType": "text/markdown",
                        "userMetadata": {"content-type": "text/markdown"},
                        "sequencer": "17CB2A3F2E0A6C42",
                    },
                },
                "source": {"host": "172.18.0.1", "port": "", "userAgent": "MinIO (linux; amd64)"},
            }
        ],
    }


def sns_envelope(message: dict) -> dict:
    """An SNS notification as SQS receives it without raw message delivery."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:braid-landing",
        "Subject": "Amazon S3 Notification",
        "Message": json.dumps(message),
        "Timestamp": "2024-05-01T12:00:00.123Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:braid-landing:c9135db0-26c4-47ec-8998-413945fb5a96",
    }


S3_TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2024-05-01T12:00:00.000Z",
    "Bucket": "braid-landing",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}


# --- parse_notification -------------------------------------------------------------------------


def test_s3_record_key_is_url_decoded() -> None:
    [obj] = parse_notification(s3_notification())
    assert obj == ObjectCreated(
        source="s3://braid-landing",
        key="photos/my cat:1.jpg",
        size=1024,
        etag="d41d8cd98f00b204e9800998ecf8427e",
        bucket="braid-landing",
        sequencer="0055AED6DCD90281E5",
    )
    assert obj.uri == "s3://braid-landing/photos/my cat:1.jpg"


def test_s3_record_keeps_an_encoded_plus() -> None:
    [obj] = parse_notification(s3_notification(key="c%2B%2B/a+b.txt"))
    assert obj.key == "c++/a b.txt"


def test_eventbridge_object_created() -> None:
    [obj] = parse_notification(eventbridge_event())
    assert (obj.bucket, obj.key, obj.size, obj.etag) == (
        "braid-landing",
        "audio/take 1.wav",
        5,
        "b1946ac92492d2347c6235b4d2611184",
    )
    assert obj.uri == "s3://braid-landing/audio/take 1.wav"


def test_eventbridge_other_s3_events_are_ignored() -> None:
    assert parse_notification(eventbridge_event(detail_type="Object Deleted")) == []


def test_minio_put() -> None:
    [obj] = parse_notification(minio_notification())
    assert obj.uri == "s3://braid-landing/text/notes 2024.md"
    assert (obj.size, obj.etag) == (311, "5eb63bbbe01eeed093cb22bb8f5acdc3")


def test_sns_wrapped_s3_notification() -> None:
    [obj] = parse_notification(sns_envelope(s3_notification()))
    assert obj.uri == "s3://braid-landing/photos/my cat:1.jpg"


def test_s3_test_event_announces_nothing() -> None:
    assert parse_notification(S3_TEST_EVENT) == []
    assert parse_notification(sns_envelope(S3_TEST_EVENT)) == []


def test_only_object_created_records_count() -> None:
    body = s3_notification(event="ObjectRemoved:Delete")
    created = s3_notification(key="video/clip.mp4", event="ObjectCreated:CompleteMultipartUpload")
    body["Records"] += created["Records"]
    assert [obj.key for obj in parse_notification(body)] == ["video/clip.mp4"]
    assert parse_notification(s3_notification(event="ObjectRemoved:Delete")) == []


def _with(body: dict, path: str, value: Any) -> dict:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return body


S3_KEY = "Records.0.s3.object.key"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([s3_notification()], "expected a JSON object"),
        ({"hello": "world"}, "not an S3, EventBridge or MinIO notification"),
        ({"Records": "nope"}, "Records should be list"),
        ({"Records": [{"eventName": "ObjectCreated:Put"}]}, "missing Records[0].s3.object.key"),
        (_with(s3_notification(), "Records.0.s3.object.size", "1024"), "size should be int"),
        (_with(s3_notification(), "Records.0.s3.object.size", True), "size should be int"),
        (_with(s3_notification(), "Records.0.s3.object.size", -1), "negative size"),
        (_with(s3_notification(), S3_KEY, "..%2Fetc%2Fpasswd"), "invalid object key"),
        (_with(s3_notification(), S3_KEY, "a/../../b"), "invalid object key"),
        (_with(s3_notification(), S3_KEY, "%2Fabs"), "invalid object key"),
        (_with(s3_notification(), S3_KEY, "a//b"), "invalid object key"),
        (_with(s3_notification(), S3_KEY, ""), "invalid object key"),
        (_with(s3_notification(), S3_KEY, "bad%ff"), "not URL-encoded UTF-8"),
        (_with(s3_notification(), S3_KEY, "k" * 1025), "longer than 1024 bytes"),
        (_with(s3_notification(), "Records.0.s3.bucket.name", "a/b"), "invalid bucket"),
        (_with(s3_notification(), "Records.0.s3.bucket.name", "a..b"), "invalid bucket"),
        (_with(eventbridge_event(), "detail.object.key", "../etc/passwd"), "invalid object key"),
        (_with(eventbridge_event(), "detail.object.key", "/abs"), "invalid object key"),
        (_with(eventbridge_event(), "detail.object.key", "\ud800"), "not encodable"),
        (_with(eventbridge_event(), "source", "aws.ec2"), "expected 'aws.s3'"),
        (_with(sns_envelope(S3_TEST_EVENT), "Message", "{not json"), "Message is not JSON"),
        (sns_envelope(sns_envelope(s3_notification())), "not a notification"),
    ],
)
def test_refuses_what_it_cannot_trust(body: Any, reason: str) -> None:
    with pytest.raises(NotificationError, match=re.escape(reason)):
        parse_notification(body)


def test_garbled_notifications_raise_only_notification_error() -> None:
    """Thousands of realistic bodies with one part swapped for junk: a list or a clean refusal."""
    rng = random.Random(0)
    junk = [None, True, 0, -5, 2**70, 1.5, "", "../x", "%", [], {}, [{}], {"a": 1}, "x" * 2000]
    seeds = [
        s3_notification(),
        eventbridge_event(),
        minio_notification(),
        sns_envelope(s3_notification()),
        S3_TEST_EVENT,
    ]

    def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for name, child in items:
            yield (*prefix, name)
            if isinstance(child, dict | list):
                yield from paths(child, (*prefix, name))

    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(3000):
        body = copy.deepcopy(rng.choice(seeds))
        *parents, last = rng.choice(list(paths(body)))
        node = body
        for part in parents:
            node = node[part]
        if rng.random() < 0.3 and isinstance(node, dict):
            del node[last]
        else:
            node[last] = copy.deepcopy(rng.choice(junk))
        try:
            assert isinstance(parse_notification(body), list)
            outcomes["parsed"] += 1
        except NotificationError:
            outcomes["refused"] += 1
    assert outcomes["parsed"] > 100 and outcomes["refused"] > 100


# --- the HTTP endpoint, served by a real uvicorn ------------------------------------------------


class Recorder:
    """The emit target: records objects, or raises while ``error`` is set."""

    def __init__(self) -> None:
        self.objects: list[ObjectCreated] = []
        self.error: Exception | None = None

    def __call__(self, objects: list[ObjectCreated]) -> None:
        if self.error is not None:
            raise self.error
        self.objects.extend(objects)


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port, in a thread; yield its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def recording_bridge() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    with served(make_app(SECRET, recorder, max_body=MAX_BODY)) as url:
        yield url, recorder


@pytest.fixture
def bridge(recording_bridge: tuple[str, Recorder]) -> Iterator[tuple[httpx.Client, Recorder]]:
    url, recorder = recording_bridge
    recorder.objects.clear()
    recorder.error = None
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client, recorder


def bearer(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Braid-Signature": f"sha256={digest}", "Content-Type": "application/json"}


@pytest.mark.integration
def test_bearer_token_emits_each_object(bridge) -> None:
    client, recorder = bridge
    response = client.post("/events", json=s3_notification(), headers=bearer())
    assert response.status_code == 202 and response.json() == {"emitted": 1}
    assert [obj.uri for obj in recorder.objects] == ["s3://braid-landing/photos/my cat:1.jpg"]


@pytest.mark.integration
def test_hmac_signature_emits(bridge) -> None:
    client, recorder = bridge
    body = json.dumps(eventbridge_event()).encode()
    response = client.post("/events", content=body, headers=signed(body))
    assert response.status_code == 202 and response.json() == {"emitted": 1}
    assert recorder.objects[0].key == "audio/take 1.wav"


@pytest.mark.integration
def test_minio_webhook_and_test_event(bridge) -> None:
    client, recorder = bridge
    assert client.post("/events", json=minio_notification(), headers=bearer()).json() == {
        "emitted": 1
    }
    response = client.post("/events", json=S3_TEST_EVENT, headers=bearer())
    assert response.status_code == 202 and response.json() == {"emitted": 0}
    assert [obj.key for obj in recorder.objects] == ["text/notes 2024.md"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        bearer("wrong secret"),
        bearer(SECRET + "x"),
        {"Authorization": f"Basic {SECRET}", "Content-Type": "application/json"},
        {"X-Braid-Signature": "sha256=" + "0" * 64, "Content-Type": "application/json"},
        {"X-Braid-Signature": "sha256=zz", "Content-Type": "application/json"},
        {"Authorization": "Bearer ünïcode", "Content-Type": "application/json"},
    ],
    ids=["none", "wrong-bearer", "longer-bearer", "basic", "wrong-hmac", "junk-hmac", "non-ascii"],
)
def test_refuses_without_valid_credentials(bridge, headers: dict[str, str]) -> None:
    client, recorder = bridge
    body = json.dumps(s3_notification()).encode()
    response = client.post(
        "/events", content=body, headers={k: v.encode() for k, v in headers.items()}
    )
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}  # nothing about what was wrong
    assert recorder.objects == []


@pytest.mark.integration
def test_hmac_of_another_body_is_refused(bridge) -> None:
    client, recorder = bridge
    body = json.dumps(s3_notification()).encode()
    other = json.dumps(s3_notification(key="other.jpg")).encode()
    assert client.post("/events", content=body, headers=signed(other)).status_code == 401
    assert client.post("/events", content=body, headers=signed(body, "other")).status_code == 401
    assert recorder.objects == []


@pytest.mark.integration
def test_refuses_a_declared_length_over_the_limit_without_reading(recording_bridge) -> None:
    url, _ = recording_bridge
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /events HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {SECRET}\r\n".encode()
            + b"Content-Length: 10000000000\r\n\r\n"
        )
        head = sock.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413 ")


@pytest.mark.integration
def test_refuses_bodies_over_the_limit(bridge) -> None:
    client, recorder = bridge
    body = json.dumps({**s3_notification(), "padding": "x" * (MAX_BODY * 4)}).encode()
    response = client.post("/events", content=body, headers=bearer())
    assert response.status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: only counting the bytes catches it
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = client.post("/events", content=chunked(), headers=bearer())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert recorder.objects == []


@pytest.mark.integration
def test_refuses_other_content_types(bridge) -> None:
    client, recorder = bridge
    body = json.dumps(s3_notification()).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        headers = {**bearer(), "Content-Type": content_type}
        assert client.post("/events", content=body, headers=headers).status_code == 415
    assert recorder.objects == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe\x00garbage", "malformed JSON"),
        (b"[" * 2000 + b"]" * 2000, "malformed JSON"),  # deeper than the parser recurses
        (json.dumps({"hello": "world"}).encode(), "not an S3, EventBridge or MinIO"),
        (b"42", "expected a JSON object"),
    ],
    ids=["syntax", "encoding", "depth", "unknown-shape", "scalar"],
)
def test_refuses_what_is_not_a_notification(bridge, body: bytes, reason: str) -> None:
    client, recorder = bridge
    response = client.post("/events", content=body, headers=bearer())
    assert response.status_code == 400 and reason in response.json()["error"]
    assert recorder.objects == []


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "/abs"])
@pytest.mark.integration
def test_refuses_keys_that_escape_the_root(bridge, key: str) -> None:
    client, recorder = bridge
    good = s3_notification(key="fine.jpg")
    bad = s3_notification(key=key)
    body = {"Records": good["Records"] + bad["Records"]}  # one bad record refuses them all
    response = client.post("/events", json=body, headers=bearer())
    assert response.status_code == 400 and "invalid object key" in response.json()["error"]
    response = client.post("/events", json=eventbridge_event(key=key), headers=bearer())
    assert response.status_code == 400
    assert recorder.objects == []


@pytest.mark.integration
def test_answers_503_when_emitting_fails(bridge) -> None:
    client, recorder = bridge
    recorder.error = ConnectionError("Prefect API unreachable")
    response = client.post("/events", json=s3_notification(), headers=bearer())
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    recorder.error = None
    assert client.post("/events", json=s3_notification(), headers=bearer()).status_code == 202


@pytest.mark.integration
def test_health_needs_no_credentials(bridge) -> None:
    client, _ = bridge
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert client.get("/events").status_code == 405


@pytest.mark.integration
def test_still_answers_after_abuse(recording_bridge) -> None:
    url, _ = recording_bridge
    host, port = url.removeprefix("http://").split(":")
    abuse = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # TLS to a plain port
        b"GARBAGE / HTTP/9.9\r\n\r\n",
        b'POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"Records"',  # hangs up
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST /events HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    ]
    for payload in abuse:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                sock.recv(4096)
            except OSError:
                pass  # the server may hang up first; what matters is that it stays up
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        assert client.post("/events", json=s3_notification(), headers=bearer()).status_code == 202


# --- the real Prefect API -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as patch:
        # The test server persists events in batches; flush often so reading back is quick.
        patch.setenv("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "0.2")
        with prefect_test_harness(server_startup_timeout=60):
            # An events worker started against another API (an earlier harness in this
            # session) would keep sending there: start a fresh one against this API.
            EventsWorker.drain_all()
            url = PREFECT_API_URL.value()
            patch.setenv("PREFECT_API_URL", url)  # for threads and subprocesses
            yield url


def read_events(resource_id: str, count: int = 1, timeout: float = 15) -> list[Any]:
    """The ``braid.object.created`` events for ``resource_id``, once there are ``count``."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["braid.object.created"]),
                    resource=EventResourceFilter(id=[resource_id]),
                ),
                limit=10,  # the client's default, 100, is over what the 3.9 server accepts (50)
            )
            if len(page.events) >= count:
                return page.events
            assert time.monotonic() < deadline, f"{len(page.events)} events for {resource_id}"
            time.sleep(0.2)


@pytest.mark.integration
def test_bridge_emits_to_the_prefect_api(prefect_api: str) -> None:
    run = uuid.uuid4().hex[:8]
    with served(make_app(SECRET, emit_objects_created)) as url:
        response = httpx.post(
            f"{url}/events", json=s3_notification(key=f"{run}/my+cat.jpg"), headers=bearer()
        )
    assert response.status_code == 202 and response.json() == {"emitted": 1}

    [event] = read_events(f"braid.object.s3://braid-landing/{run}/my cat.jpg")
    assert event.event == "braid.object.created"
    assert event.resource.id == f"braid.object.s3://braid-landing/{run}/my cat.jpg"
    assert event.resource.name == f"{run}/my cat.jpg"
    assert event.payload == {
        "source": "s3://braid-landing",
        "key": f"{run}/my cat.jpg",
        "size": 1024,
        "etag": "d41d8cd98f00b204e9800998ecf8427e",
        "bucket": "braid-landing",
        "sequencer": "0055AED6DCD90281E5",
        "uri": f"s3://braid-landing/{run}/my cat.jpg",
    }


@pytest.mark.integration
def test_a_notification_goes_out_in_one_batch_and_a_redelivery_is_one_event(
    prefect_api: str,
) -> None:
    """S3, SQS and senders that retry on their timeout deliver at least once: the event ids
    come from the notification (key, ETag, size, sequencer), so Prefect keeps one event
    per record however often it arrives. And a notification's records go out together:
    2,000 records one request each took about 150 s."""
    run = uuid.uuid4().hex[:8]
    records = [s3_notification(key=f"{run}/burst/{i:04d}.jpg")["Records"][0] for i in range(600)]
    body = {"Records": records}
    with served(make_app(SECRET, emit_objects_created)) as url:
        started = time.monotonic()
        first = httpx.post(f"{url}/events", json=body, headers=bearer(), timeout=30)
        seconds = time.monotonic() - started
        again = httpx.post(f"{url}/events", json=body, headers=bearer(), timeout=30)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() == {"emitted": 600}
    assert seconds < 20  # two requests (EMIT_BATCH is 500), not 600 (not a timing target)
    (event,) = read_events(f"braid.object.s3://braid-landing/{run}/burst/0007.jpg")
    assert event.payload["key"] == f"{run}/burst/0007.jpg"
    # A new version of the key (another sequencer) is a new event.
    newer = s3_notification(key=f"{run}/burst/0007.jpg")
    newer["Records"][0]["s3"]["object"]["sequencer"] = "0055AED6DCD90281F0"
    with served(make_app(SECRET, emit_objects_created)) as url:
        assert httpx.post(f"{url}/events", json=newer, headers=bearer()).status_code == 202
    resource = f"braid.object.s3://braid-landing/{run}/burst/0007.jpg"
    read_events(resource, 2)
    # The server persists events in batches, in no promised order: watch the count settle.
    deadline, counts = time.monotonic() + 8, []
    while time.monotonic() < deadline:
        counts.append(len(read_events(resource, 1)))
        time.sleep(0.5)
    assert set(counts) == {2}, counts  # the first delivery and the new version; no duplicate


@pytest.mark.integration
def test_secret_from_a_prefect_secret_block(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    name = f"bridge-{uuid.uuid4().hex[:8]}"
    Secret(value="from the block").save(name)
    monkeypatch.setenv("BRAID_BRIDGE_SECRET", "from the environment")
    assert load_secret(name) == "from the block"
    assert load_secret() == "from the environment"
    with pytest.raises(ValueError, match="could not load Secret block 'no-such-block'"):
        load_secret("no-such-block")


@pytest.mark.integration
def test_answers_503_when_the_prefect_api_is_down() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/api"

    def emit_to_dead_api(objects: list[ObjectCreated]) -> None:
        with temporary_settings({PREFECT_API_URL: dead}):
            emit_objects_created(objects)

    with served(make_app(SECRET, emit_to_dead_api)) as url:
        response = httpx.post(f"{url}/events", json=s3_notification(), headers=bearer())
        assert response.status_code == 503
        assert httpx.get(f"{url}/health").status_code == 200


@pytest.mark.integration
def test_braid_bridge_command_serves_and_emits(prefect_api: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "BRAID_BRIDGE_SECRET": SECRET}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "bridge",
            "--port",
            str(port),
            "--spool",
            str(spool),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "braid bridge did not start"
                time.sleep(0.1)
        run = uuid.uuid4().hex[:8]
        body = json.dumps(eventbridge_event(key=f"{run}/take 1.wav")).encode()
        response = httpx.post(f"http://127.0.0.1:{port}/events", content=body, headers=signed(body))
        assert response.status_code == 202
        [event] = read_events(f"braid.object.s3://braid-landing/{run}/take 1.wav")
        assert event.payload["size"] == 5
    finally:
        process.send_signal(signal.SIGTERM)  # as docker stop, ECS and systemd do
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0 and "Application shutdown complete" in err, err
    assert f"POST http://127.0.0.1:{port}/events" in out
    assert f"acknowledging once queued in {spool}" in out
    assert Spool(spool).pending() == 0  # forwarded, and the spool closed cleanly


@pytest.mark.integration
def test_the_spool_acknowledges_while_the_api_is_down_and_a_restart_sends_what_it_kept(
    prefect_api: str, tmp_path: Path
) -> None:
    """A notification is acknowledged once its events are committed to the spool, API or
    not; what the API has not taken stays there across a restart of the bridge, and a
    redelivery while queued is stored once."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    run = uuid.uuid4().hex[:8]
    notification = {
        "Records": [s3_notification(key=f"{run}/{i}.jpg")["Records"][0] for i in range(3)]
    }
    path = tmp_path / "spool.sqlite"
    with temporary_settings({PREFECT_API_URL: dead}):
        spool = Spool(path).start()
        with served(make_app(SECRET, spool.put)) as url:
            for _ in range(2):  # delivered twice, as at-least-once senders do
                response = httpx.post(f"{url}/events", json=notification, headers=bearer())
                assert response.status_code == 202 and response.json() == {"emitted": 3}
        assert spool.pending() == 3
        assert spool.close(drain_s=1) == 3  # the API never answered: kept for the next start
    assert spool.failures >= 1 and spool.sent == 0
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        restarted = Spool(path).start()
        events = [read_events(f"braid.object.s3://braid-landing/{run}/{i}.jpg") for i in range(3)]
        assert restarted.close(drain_s=10) == 0
    assert [len(e) for e in events] == [1, 1, 1] and restarted.sent == 3


def test_senders_at_once_share_commits_and_each_event_is_stored_once(tmp_path: Path) -> None:
    """32 threads putting at once: every event is committed once they return (redeliveries
    once), in fewer commits than puts."""
    from concurrent.futures import ThreadPoolExecutor

    spool = Spool(tmp_path / "spool.sqlite")
    commits: list[int] = []
    insert = spool._insert

    def counting(events: list[dict[str, Any]]) -> None:
        commits.append(len(events))
        insert(events)

    spool._commits._send = counting
    objects = [ObjectCreated("s3://b", f"k/{i}.jpg", 10, f"e{i}", bucket="b") for i in range(200)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda o: spool.put([o]), objects + objects[:20]))  # a tenth twice
    assert spool.pending() == 200
    assert sum(commits) == 220 and len(commits) < 220
    spool.close(drain_s=0)


def test_a_storm_reaches_the_api_in_a_few_requests_not_one_per_put(tmp_path: Path) -> None:
    """The forwarder lets a storm's events gather before sending a part-filled batch: 50
    notifications put one after another go out in a handful of requests (one per put
    without the wait), each event once."""
    sent: list[list[str]] = []
    spool = Spool(tmp_path / "spool.sqlite", send=lambda events: sent.append(
        [e["id"] for e in events]))  # fmt: skip
    spool.start()
    objects = [ObjectCreated("s3://b", f"k/{i}.jpg", 10, f"e{i}", bucket="b") for i in range(50)]
    for obj in objects:
        spool.put([obj])
    assert spool.close(drain_s=30) == 0
    ids = [i for batch in sent for i in batch]
    assert len(ids) == len(set(ids)) == 50
    assert len(sent) <= 10, [len(batch) for batch in sent]


@pytest.mark.integration
def test_an_event_the_api_refuses_is_set_aside_and_the_rest_goes_on(
    prefect_api: str, tmp_path: Path
) -> None:
    """One malformed event in the spool (here written there by hand: the API answers it
    422) must not hold the queue: the forwarder isolates it, keeps it in ``rejected`` with
    the API's reason, and sends every other event."""
    import sqlite3

    from prefect.settings import PREFECT_API_URL, temporary_settings

    path = tmp_path / "spool.sqlite"
    Spool(path).close(drain_s=0)  # creates the tables
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO events (id, body, queued) VALUES (?, ?, ?)",
            ("bad", json.dumps({"event": "braid.object.created", "id": "not-a-uuid"}), time.time()),
        )
    run = uuid.uuid4().hex[:8]
    objects = [
        ObjectCreated("s3://braid-landing", f"{run}/{i}.jpg", 10, f"e{i}", bucket="braid-landing")
        for i in range(3)
    ]
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        spool = Spool(path)
        spool.put(objects)
        spool.start()
        events = [read_events(f"braid.object.s3://braid-landing/{run}/{i}.jpg") for i in range(3)]
        assert spool.close(drain_s=10) == 0
    assert [len(e) for e in events] == [1, 1, 1] and spool.sent == 3 and spool.rejected == 1
    ((body, reason),) = Spool(path).rejected_events()
    assert body["id"] == "not-a-uuid" and "422" in reason


# --- SQS, on moto's server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def sqs(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("sqs")


def make_queue(sqs: Any) -> str:
    name = f"braid-{uuid.uuid4().hex[:8]}"
    return sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "1"})["QueueUrl"]


@contextmanager
def consuming(queue_url: str, emit: Callable[[list[ObjectCreated]], Any]) -> Iterator[dict]:
    """Run ``consume_sqs`` in a thread (client from the default chain); stop it on exit."""
    stop, result = threading.Event(), {}

    def run() -> None:
        result["stats"] = consume_sqs(
            queue_url, emit, wait_seconds=1, stop=stop, failure_backoff=0.1
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def in_flight(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


@pytest.mark.integration
def test_consume_sqs_emits_then_deletes_and_leaves_malformed_messages(sqs: Any) -> None:
    queue_url = make_queue(sqs)
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(s3_notification()))
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(sns_envelope(minio_notification())))
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(S3_TEST_EVENT))
    sqs.send_message(QueueUrl=queue_url, MessageBody="{this is not a notification")
    recorder = Recorder()
    with consuming(queue_url, recorder) as result:
        wait_for(lambda: len(recorder.objects) == 2 and in_flight(sqs, queue_url) == 1)
    stats: SqsStats = result["stats"]
    assert sorted(obj.uri for obj in recorder.objects) == [
        "s3://braid-landing/photos/my cat:1.jpg",
        "s3://braid-landing/text/notes 2024.md",
    ]
    assert (stats.deleted, stats.emitted) == (3, 2)  # the test event too: it announced nothing
    assert stats.malformed >= 1 and stats.failed == 0

    # The malformed message is still there, back after its visibility timeout.
    time.sleep(1.1)
    left = sqs.receive_message(
        QueueUrl=queue_url,
        WaitTimeSeconds=2,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )["Messages"]
    assert [m["Body"] for m in left] == ["{this is not a notification"]
    assert int(left[0]["Attributes"]["ApproximateReceiveCount"]) >= 2


@pytest.mark.integration
def test_consume_sqs_keeps_a_message_whose_emit_fails(sqs: Any) -> None:
    queue_url = make_queue(sqs)
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(eventbridge_event()))
    attempts = []

    def failing(objects: list[ObjectCreated]) -> None:
        attempts.extend(objects)
        raise ConnectionError("Prefect API unreachable")

    with consuming(queue_url, failing) as result:
        wait_for(lambda: len(attempts) >= 1)
    assert result["stats"].failed >= 1 and result["stats"].deleted == 0

    recorder = Recorder()  # the API is back: the same message goes out, then is deleted
    with consuming(queue_url, recorder):
        wait_for(lambda: len(recorder.objects) == 1 and in_flight(sqs, queue_url) == 0)
    assert recorder.objects[0].uri == "s3://braid-landing/audio/take 1.wav"


@pytest.mark.integration
def test_consume_sqs_fails_at_once_for_a_missing_queue(sqs: Any, moto_url: str) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match=r"NonExistentQueue|QueueDoesNotExist"):
        consume_sqs(f"{moto_url}/123456789012/no-such-queue", Recorder(), wait_seconds=1)


# --- the command line ---------------------------------------------------------------------------


def braid_bridge(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BRAID_BRIDGE_SECRET"} | env
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", "bridge", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def test_bridge_refuses_to_start_without_a_secret() -> None:
    result = braid_bridge()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "braid bridge: error: no shared secret: pass --secret-block NAME "
        "(a Prefect Secret block) or set BRAID_BRIDGE_SECRET"
    ]


@pytest.mark.integration
def test_bridge_reports_a_missing_queue_in_one_line(moto_url: str) -> None:
    result = braid_bridge(
        "--sqs-queue-url",
        f"{moto_url}/123456789012/no-such-queue",
        AWS_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("braid bridge: error: cannot use SQS queue")
