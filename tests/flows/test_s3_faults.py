"""S3 faults end to end: the pipeline reads a bucket through a proxy in front of moto's
server that answers some GETs with 500s and cuts others off mid-body (a TCP reset).
Transient faults are retried (botocore's retries, then a resumed ranged GET) and land;
persistent ones are quarantined with the reason, never lost, and a redrive lands them
once the store is healthy again."""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from moto.server import ThreadedMotoServer

from flows.pipeline import pipeline, redrive
from tasks.lake import storage
from tasks.lake.store import CATALOG_FILE

pytestmark = pytest.mark.integration

BUCKET = "braid-faults"
ERROR = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Faults:
    """Which GETs fail: by a marker in the key, counted per key."""

    def __init__(self) -> None:
        self.enabled = True
        self.gets: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.lock = threading.Lock()

    def decide(self, path: str) -> str | None:
        with self.lock:
            self.gets[path] += 1
            count = self.gets[path]
        if not self.enabled:
            return None
        for marker, fault, times in (
            ("flaky-500", "500", 2),  # two 500s, then the object: within botocore's retries
            ("always-500", "500", None),
            ("reset-once", "reset", 1),  # one GET cut off mid-body, then served
            ("always-reset", "reset", None),
        ):
            if marker in path and (times is None or count <= times):
                with self.lock:
                    self.injected[fault] += 1
                return fault
        return None


def proxy_handler(upstream: int, faults: Faults) -> type[http.server.BaseHTTPRequestHandler]:
    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            return

        def _forward(self) -> None:
            fault = faults.decide(self.path) if self.command == "GET" else None
            if fault == "500":
                self.send_response(500)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(ERROR)))
                self.end_headers()
                self.wfile.write(ERROR)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if fault == "reset" and len(payload) > 64:
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                # A reset, not a clean close: SO_LINGER 0 sends RST.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                self.connection.close()
                return
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    return Proxy


def objects(lake: Path) -> dict[str, str]:
    with duckdb.connect(str(lake / CATALOG_FILE), read_only=True) as con:
        # An object first filed under its URI (unreadable) is superseded by its content's id.
        rows = con.execute(
            "SELECT uri, status FROM objects WHERE status <> 'superseded'"
        ).fetchall()
    return {uri.rsplit("/", 1)[-1]: status for uri, status in rows}


def quarantine(lake: Path) -> dict[str, tuple[str, str]]:
    with duckdb.connect(str(lake / CATALOG_FILE), read_only=True) as con:
        rows = con.execute("SELECT uri, stage, reason FROM quarantine").fetchall()
    return {uri.rsplit("/", 1)[-1]: (stage, reason) for uri, stage, reason in rows}


@pytest.fixture(scope="module")
def runs(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    moto_port, proxy_port = free_port(), free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    faults = Faults()
    proxy = http.server.ThreadingHTTPServer(
        ("127.0.0.1", proxy_port), proxy_handler(moto_port, faults)
    )
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    sample = sample_dir / "sample-0000"
    files = {
        "clean": sample / "image.jpg",
        "flaky-500": sample / "clip.mp4",
        "always-500": sample / "sensor.csv",
        "reset-once": next(sample.glob("audio.*")),
        "always-reset": sample / "caption.txt",
    }
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy_port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", storage.CREDENTIALS_BLOCK_ENV):
            env.delenv(name, raising=False)
        storage.reset_s3_clients()
        try:
            direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}")
            direct.create_bucket(Bucket=BUCKET)
            for marker, path in files.items():
                direct.upload_file(str(path), BUCKET, f"in/s1/{marker}{path.suffix}")
            lake = tmp_path_factory.mktemp("lake")
            first = pipeline(source=f"s3://{BUCKET}/in", lake_path=str(lake))
            after_first = {"objects": objects(lake), "quarantine": quarantine(lake)}
            injected = dict(faults.injected)
            faults.enabled = False  # the store recovers
            again = redrive(lake_path=str(lake))
            yield {"first": first, "after_first": after_first, "injected": injected,
                   "redrive": again, "lake": lake, "files": files}  # fmt: skip
        finally:
            storage.reset_s3_clients()
            proxy.shutdown()
            moto.stop()


def test_faults_were_injected(runs: dict[str, Any]) -> None:
    assert runs["injected"]["500"] >= 2 + 5  # flaky twice; always-500 on every attempt
    assert runs["injected"]["reset"] >= 1 + 4  # reset once; always-reset on every resume


def test_transient_faults_are_retried_and_land(runs: dict[str, Any]) -> None:
    statuses = runs["after_first"]["objects"]
    assert statuses["clean.jpg"] == "landed"
    assert statuses["flaky-500.mp4"] == "landed"
    reset_once = next(name for name in statuses if name.startswith("reset-once"))
    assert statuses[reset_once] == "landed"


def test_persistent_faults_are_quarantined_with_the_reason_never_lost(runs: dict[str, Any]) -> None:
    statuses, held = runs["after_first"]["objects"], runs["after_first"]["quarantine"]
    assert len(statuses) == len(runs["files"])  # every object is accounted for
    assert statuses["always-500.csv"] == "quarantined"
    assert statuses["always-reset.txt"] == "quarantined"
    stage, reason = held["always-500.csv"]
    assert stage in ("discover", "read")
    assert "InternalError" in reason
    stage, reason = held["always-reset.txt"]
    assert stage in ("discover", "read")
    assert "dropped" in reason or "reset" in reason.lower()


def test_a_redrive_lands_them_once_the_store_is_healthy(runs: dict[str, Any]) -> None:
    statuses = objects(runs["lake"])
    assert statuses["always-500.csv"] == "landed"
    assert statuses["always-reset.txt"] == "landed"
    assert quarantine(runs["lake"]) == {}
