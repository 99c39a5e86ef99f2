"""S3 as a source, through boto3 against moto's standalone server on 127.0.0.1.

The same client a user gets (default credential chain with ``AWS_ENDPOINT_URL``, or an
``AwsCredentials`` block) talks HTTP to a real local endpoint, so listing, ranged reads,
retries and error codes go through botocore exactly as they would against AWS or MinIO.
"""

from __future__ import annotations

import hashlib
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ResponseStreamingError
from moto.server import ThreadedMotoServer

from tasks.lake import storage
from tasks.common import Limits
from tasks.ingest.discover import discover
from tasks.lake.storage import (
    S3_RETRIES,
    Listed,
    iter_files,
    object_size,
    open_binary,
    read_bytes,
    s3_client,
    source_root,
)

BUCKET = "landing-bucket"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's S3 as a real HTTP endpoint, for this module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def s3_env(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Credentials and endpoint as a user would set them; an empty moto and fresh clients."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"))
    for name, value in {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", storage.CREDENTIALS_BLOCK_ENV):
        monkeypatch.delenv(name, raising=False)
    storage.reset_s3_clients()
    yield moto_url
    storage.reset_s3_clients()


def put(keys: dict[str, bytes], bucket: str = BUCKET) -> None:
    client = s3_client()
    client.create_bucket(Bucket=bucket)
    for key, body in keys.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def upload(folder: Path, prefix: str, bucket: str = BUCKET) -> None:
    put(
        {
            f"{prefix}/{path.relative_to(folder).as_posix()}": path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        },
        bucket,
    )


def test_listing_skips_folder_markers_hidden_and_partial_keys() -> None:
    put(
        {
            "data/a/x.txt": b"x",
            "data/a/b/y.txt": b"yy",
            "data/a/empty.dat": b"",
            "data/top.txt": b"top",
            "data/folder/": b"",  # a console's "folder"
            "data/.cache/z.txt": b"hidden folder",
            "data/a/.dot.txt": b"hidden file",
            "data/a/upload.part": b"partial",
            "data/a/video.MP4.PART": b"partial",
            "data-2/other.txt": b"a sibling prefix, not under data/",
            "elsewhere/q.txt": b"q",
        }
    )

    listed = [(uri, size) for uri, size, _ in iter_files(source_root(f"s3://{BUCKET}/data/"))]

    assert listed == [
        (f"s3://{BUCKET}/data/a/b/y.txt", 2),
        (f"s3://{BUCKET}/data/a/empty.dat", 0),
        (f"s3://{BUCKET}/data/a/x.txt", 1),
        (f"s3://{BUCKET}/data/top.txt", 3),
    ]
    whole_bucket = [uri for uri, _, _ in iter_files(source_root(f"s3://{BUCKET}"))]
    assert f"s3://{BUCKET}/elsewhere/q.txt" in whole_bucket
    assert len(whole_bucket) == 6


def test_source_root_normalises_the_prefix() -> None:
    put({})
    assert source_root(f"s3://{BUCKET}/landing/") == f"s3://{BUCKET}/landing"
    assert source_root(f"s3://{BUCKET}//landing/day-1//") == f"s3://{BUCKET}/landing/day-1"
    assert source_root(f"s3://{BUCKET}/") == f"s3://{BUCKET}"
    assert source_root(f"s3://{BUCKET}") == f"s3://{BUCKET}"


def test_reads_stream_in_chunks_and_sizes_come_from_head() -> None:
    body = bytes(range(256)) * 10_000  # 2.56 MB: several 1 MiB chunks
    put({"blob.bin": body, "empty.dat": b""})
    uri = f"s3://{BUCKET}/blob.bin"

    assert read_bytes(uri) == body
    assert object_size(uri) == len(body)
    with open_binary(uri) as handle:
        chunks = []
        while chunk := handle.read(1024 * 1024):
            chunks.append(chunk)
    assert [len(c) for c in chunks] == [1024 * 1024, 1024 * 1024, len(body) - 2 * 1024 * 1024]
    assert b"".join(chunks) == body
    assert read_bytes(f"s3://{BUCKET}/empty.dat") == b""


def test_missing_objects_and_buckets_raise_clear_os_errors() -> None:
    put({})
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg does not exist"):
        read_bytes(f"s3://{BUCKET}/gone.jpg")
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg does not exist"):
        object_size(f"s3://{BUCKET}/gone.jpg")
    with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket' does not exist"):
        source_root("s3://no-such-bucket/landing")
    with pytest.raises(FileNotFoundError, match="names no bucket"):
        source_root("s3:///landing")


def test_missing_credentials_raise_permission_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))

    with pytest.raises(PermissionError, match="no AWS credentials"):
        source_root(f"s3://{BUCKET}/landing")


def test_client_is_cached_per_process_and_retries_in_standard_mode() -> None:
    client = s3_client()
    assert s3_client() is client
    assert client.meta.config.retries == S3_RETRIES


def test_throttling_is_retried_with_backoff() -> None:
    put({"data/x.txt": b"x"})
    throttled = []

    def slow_down(request: Any, **_: Any) -> AWSResponse | None:
        if not throttled:
            throttled.append(request.url)
            body = (
                b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
            )
            return AWSResponse(request.url, 503, {}, _Raw(body))
        return None

    s3_client().meta.events.register("before-send.s3.ListObjectsV2", slow_down)

    assert list(iter_files(f"s3://{BUCKET}/data")) == [Listed(f"s3://{BUCKET}/data/x.txt", 1)]
    assert len(throttled) == 1


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


class _Dropping:
    """A response body whose connection drops after ``after`` bytes."""

    def __init__(self, body: Any, after: int) -> None:
        self.body, self.left = body, after

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            raise ResponseStreamingError(error="Connection reset by peer")
        view = memoryview(buffer)[: self.left]
        count = int(self.body.readinto(view))
        self.left -= count
        return count

    def close(self) -> None:
        self.body.close()


class _FlakyClient:
    """The real client, but the first GET's stream drops part-way."""

    def __init__(self, after: int, before_resume: Any = None) -> None:
        self.real, self.after, self.before_resume = s3_client(), after, before_resume
        self.gets: list[dict[str, Any]] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.gets.append(kwargs)
        if len(self.gets) > 1 and self.before_resume:
            self.before_resume()
        response = self.real.get_object(**kwargs)
        if len(self.gets) == 1:
            response["Body"] = _Dropping(response["Body"], self.after)
        return response


def test_a_dropped_stream_resumes_where_it_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    body = bytes(range(256)) * 8_000
    put({"clip.mp4": body})
    flaky = _FlakyClient(after=300_000)
    monkeypatch.setattr(storage, "s3_client", lambda: flaky)

    assert read_bytes(f"s3://{BUCKET}/clip.mp4") == body
    assert flaky.gets[1]["Range"] == "bytes=300000-"
    assert flaky.gets[1]["IfMatch"] == f'"{hashlib.md5(body).hexdigest()}"'


def test_an_object_replaced_mid_read_fails_instead_of_mixing_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put({"clip.mp4": b"old" * 100_000})
    flaky = _FlakyClient(after=1000, before_resume=lambda: put({"clip.mp4": b"new" * 100_000}))
    monkeypatch.setattr(storage, "s3_client", lambda: flaky)

    with pytest.raises(OSError, match="changed while it was being read"):
        read_bytes(f"s3://{BUCKET}/clip.mp4")


def test_discovering_a_bucket_matches_discovering_the_folder(sample_dir: Path) -> None:
    upload(sample_dir, "landing")

    local = discover(str(sample_dir), set(), Limits())
    remote = discover(f"s3://{BUCKET}/landing/", set(), Limits())

    def new(found: Any) -> set[tuple[str, ...]]:
        return {
            (r.object_id, r.modality, r.media_type, r.sample_id, str(r.size)) for r in found.new
        }

    def rejected(found: Any) -> set[tuple[str, ...]]:
        return {
            (r["uri"].rsplit("/", 1)[-1], r["sample_id"], r["stage"], r["reason"])
            for r in found.rejected
        }

    assert len(remote.new) == 18
    assert new(remote) == new(local)
    assert rejected(remote) == rejected(local)
    assert {r.sample_id for r in remote.new} == {
        "sample-0000",
        "sample-0001",
        "sample-0002",
        "_bad",
    }
    for ref in remote.new:
        relative = Path(ref.uri.removeprefix(f"s3://{BUCKET}/landing/"))
        assert ref.object_id == hashlib.sha256((sample_dir / relative).read_bytes()).hexdigest()
    # A second pass over the bucket knows every object.
    known = {r.object_id for r in remote.new} | {r["object_id"] for r in remote.rejected}
    again = discover(f"s3://{BUCKET}/landing", known, Limits())
    assert (again.new, again.rejected, again.known) == ([], [], 18 + len(remote.rejected))


def test_a_key_deleted_after_listing_is_rejected_as_unreadable(
    sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(sample_dir / "sample-0000", "landing/s0")
    listing = list(iter_files(f"s3://{BUCKET}/landing"))
    s3_client().delete_object(Bucket=BUCKET, Key="landing/s0/caption.txt")
    monkeypatch.setattr("tasks.ingest.discover.iter_files", lambda root: iter(listing))

    found = discover(f"s3://{BUCKET}/landing", set(), Limits())

    assert len(found.new) == 4
    (gone,) = found.rejected
    assert gone["uri"] == f"s3://{BUCKET}/landing/s0/caption.txt"
    assert gone["stage"] == "discover"
    assert gone["reason"].startswith("unreadable: FileNotFoundError:")


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_an_aws_credentials_block_configures_the_client(
    prefect_api: None, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    put({"landing/s1/caption.txt": b"a photo of a cat\n"})
    AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=s3_env),
    ).save("braid-test-s3", overwrite=True)
    # Only the block knows where moto is and how to sign for it now.
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv(storage.CREDENTIALS_BLOCK_ENV, "braid-test-s3")

    root = source_root(f"s3://{BUCKET}/landing")
    assert list(iter_files(root)) == [Listed(f"s3://{BUCKET}/landing/s1/caption.txt", 17)]
    assert read_bytes(f"s3://{BUCKET}/landing/s1/caption.txt") == b"a photo of a cat\n"
    client = s3_client()
    assert client.meta.endpoint_url == s3_env
    assert client.meta.config.retries == S3_RETRIES

    monkeypatch.setenv(storage.CREDENTIALS_BLOCK_ENV, "no-such-block")
    with pytest.raises(ValueError, match="could not load that AwsCredentials block"):
        s3_client()
