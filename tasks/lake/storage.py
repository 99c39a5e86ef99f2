"""Reading objects from a source by URI: a local folder, S3 (or any S3-compatible store), or
any other fsspec filesystem by scheme.

Workers receive URIs, not bytes, and read the object themselves, so the flow never
ships media between machines. ``s3://`` goes through boto3 directly, with one client per
process from the default AWS credential chain (or a prefect-aws ``AwsCredentials`` block),
so AWS, MinIO and other S3-compatible endpoints take the same code path.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import fsspec

# Names that mean "still being written" or "not data": never listed as objects.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download")

# Names a prefect-aws AwsCredentials block; unset means the default AWS credential chain.
CREDENTIALS_BLOCK_ENV = "BRAID_AWS_CREDENTIALS_BLOCK"
# botocore's standard mode retries throttling, 5xx and connection errors with jittered backoff.
S3_RETRIES = {"mode": "standard", "max_attempts": 5}
# How many times one read may pick up again where a dropped response stream stopped.
MAX_STREAM_RESUMES = 3
READ_BUFFER_BYTES = 1024 * 1024

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404"}
_DENIED = {
    "AccessDenied",
    "Forbidden",
    "403",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}

_clients: dict[tuple[int, str | None], Any] = {}
_clients_lock = threading.Lock()


def is_s3(uri: str) -> bool:
    return uri.lower().startswith("s3://")


def source_root(source: str) -> str:
    """Canonical root of a source: an absolute path for folders, the URL for remote stores.

    An ``s3://bucket/prefix`` source becomes ``s3://bucket/prefix`` with no trailing slash,
    once the bucket is known to exist and be reachable with the current credentials.
    """
    if is_s3(source):
        bucket, prefix = split_s3(source)
        root = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        with _s3_errors(f"source {source!r}: bucket {bucket!r}"):
            s3_client().head_bucket(Bucket=bucket)
        return root
    if "://" in source and not source.startswith("file://"):
        return source.rstrip("/")
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"source {source!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"source {source!r} is not a folder")
    return str(path.resolve())


def is_listed(name: str) -> bool:
    """Hidden files and partial uploads are not objects."""
    return not name.startswith(".") and not name.lower().endswith(PARTIAL_SUFFIXES)


class Listed(NamedTuple):
    """One name under a source: an object to read, or, with ``refused``, why it is not read."""

    uri: str
    size: int
    refused: str | None = None


def iter_files(root: str) -> Iterator[Listed]:
    """Every object under a root, in a stable order, with the names that are not read.

    In a local folder only regular files inside the source are read: a symbolic link is
    followed only when it resolves inside the source, and a FIFO, device or socket (which
    would block a reader or never end) is listed as refused, as is a link to a folder
    (never entered). Names that are not valid UTF-8 get a ``file://`` URI (``local_uri``).
    """
    if is_s3(root):
        yield from (Listed(uri, size) for uri, size in _iter_s3(root))
        return
    if "://" not in root:
        yield from _iter_local(root)
        return
    fs, base = fsspec.core.url_to_fs(root)
    protocol = root.split("://", 1)[0]
    for path, info in sorted(fs.find(base, detail=True).items()):
        if is_listed(path.rsplit("/", 1)[-1]) and info.get("type") != "directory":
            yield Listed(f"{protocol}://{path}", int(info.get("size") or 0))


def _iter_local(root: str) -> Iterator[Listed]:
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):  # followlinks=False: linked folders not entered
        linked = sorted(d for d in dirs if os.path.islink(os.path.join(folder, d)))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in linked)
        entries = [(name, False) for name in files] + [(name, True) for name in linked]
        for name, is_folder_link in sorted(entries):
            if not is_listed(name):
                continue
            path = os.path.join(folder, name)
            if is_folder_link:
                yield Listed(local_uri(path), 0, "a symbolic link to a folder: not followed")
            else:
                yield _local_entry(path, real_root)


def _local_entry(path: str, real_root: str) -> Listed:
    uri = local_uri(path)
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            target = os.path.realpath(path)
            if os.path.commonpath([real_root, target]) != real_root:
                return Listed(uri, 0, "a symbolic link to a path outside the source")
            info = os.stat(path)
    except OSError as exc:
        return Listed(uri, 0, f"unreadable: {exc.strerror or exc}")
    if not stat.S_ISREG(info.st_mode):
        return Listed(uri, 0, f"not a regular file: {_file_kind(info.st_mode)}")
    return Listed(uri, info.st_size)


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}  # fmt: skip
    return next((kind for test, kind in kinds.items() if test(mode)), "a special file")


def local_uri(path: str) -> str:
    """The URI of a local file: its path, or, where the name holds bytes that are not UTF-8
    (which no Parquet column, log or JSON can carry), ``file://`` and the percent-encoded
    bytes of the path, which ``local_path`` turns back into the same name."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file://" + urllib.parse.quote(os.fsencode(path))
    return path


def local_path(uri: str) -> str:
    """The path a local URI (``local_uri``) names."""
    if uri.startswith("file://"):
        return os.fsdecode(urllib.parse.unquote_to_bytes(uri[len("file://") :]))
    return uri


def printable_name(name: str) -> str:
    """A name that holds undecodable bytes (surrogate escapes) with each shown as ``\\xNN``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", errors="backslashreplace")
    return name


def open_binary(uri: str) -> IO[bytes]:
    """Open an object for reading, whatever filesystem it lives on."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return io.BufferedReader(_S3Reader(bucket, key, uri), READ_BUFFER_BYTES)
    if "://" not in uri or uri.startswith("file://"):
        return _open_regular(local_path(uri))
    return fsspec.open(uri, "rb").open()


def _open_regular(path: str) -> IO[bytes]:
    """Open a local file only if it is a regular file. Non-blocking, so a FIFO swapped in
    after listing cannot block the open, and checked on the open descriptor, so a FIFO or
    device swapped in is refused rather than read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file: {_file_kind(info.st_mode)}")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bytes(uri: str) -> bytes:
    """The whole content of an object."""
    with open_binary(uri) as handle:
        return handle.read()


def object_size(uri: str) -> int:
    """The size of one object in bytes; raises OSError when it is gone."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        with _s3_errors(uri):
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
    if "://" not in uri or uri.startswith("file://"):
        return os.path.getsize(local_path(uri))
    fs, path = fsspec.core.url_to_fs(uri)
    return int(fs.size(path))


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI; the key has no leading or trailing slash."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise FileNotFoundError(f"{uri!r} names no bucket (expected s3://bucket/prefix)")
    return bucket, key.strip("/")


def s3_client() -> Any:
    """This process's S3 client, made once and shared by its threads.

    With ``BRAID_AWS_CREDENTIALS_BLOCK`` set, the client comes from that prefect-aws
    ``AwsCredentials`` block (loading it needs the Prefect API, which braid's Dask workers
    reach through ``PREFECT_API_URL``). Otherwise it comes from the default credential chain,
    so ``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``, ``AWS_REGION`` and ``AWS_ENDPOINT_URL`` (or
    ``AWS_ENDPOINT_URL_S3``, for MinIO and other S3-compatible stores) apply as usual.
    """
    block = os.environ.get(CREDENTIALS_BLOCK_ENV) or None
    # The process id is part of the key: a forked child must not share its parent's sockets.
    key = (os.getpid(), block)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _client_from_block(block) if block else _client_from_environment()
            _clients[key] = client
    return client


def reset_s3_clients() -> None:
    """Forget the cached clients, so the next call reads the environment again."""
    with _clients_lock:
        _clients.clear()


def use_credentials_block(name: str | None) -> None:
    """Read ``s3://`` sources with this AwsCredentials block, here and in workers started after.

    None leaves the environment as it is, so ``BRAID_AWS_CREDENTIALS_BLOCK`` set by hand
    still applies.
    """
    if name:
        os.environ[CREDENTIALS_BLOCK_ENV] = name


def _client_from_environment() -> Any:
    import boto3
    from botocore.config import Config

    # A session of its own: boto3's default session is not safe to share between threads.
    return boto3.session.Session().client("s3", config=Config(retries=S3_RETRIES))


def _client_from_block(name: str) -> Any:
    from prefect_aws import AwsCredentials

    try:
        # _sync: load synchronously even when a caller's thread runs an event loop.
        loaded = AwsCredentials.load(name, _sync=True)  # type: ignore[call-arg]
        credentials = cast(AwsCredentials, loaded)
    except Exception as exc:
        raise ValueError(
            f"{CREDENTIALS_BLOCK_ENV}={name!r}: could not load that AwsCredentials block ({exc})"
        ) from exc
    parameters = credentials.aws_client_parameters
    config = dict(parameters.config or {})
    if "retries" not in config:  # the block's own retry settings win
        config["retries"] = S3_RETRIES
        credentials.aws_client_parameters = parameters.model_copy(update={"config": config})
    return credentials.get_s3_client()


def _iter_s3(root: str) -> Iterator[tuple[str, int]]:
    """List a bucket under a prefix, in key order, as folders are listed."""
    bucket, prefix = split_s3(root)
    start = f"{prefix}/" if prefix else ""
    paginator = s3_client().get_paginator("list_objects_v2")
    with _s3_errors(root):
        # General-purpose buckets list in UTF-8 key order, page after page.
        for page in paginator.paginate(Bucket=bucket, Prefix=start):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a "folder" marker made by a console, not an object
                *folders, name = key[len(start) :].split("/")
                if is_listed(name) and not any(f.startswith(".") for f in folders):
                    yield f"s3://{bucket}/{key}", int(item["Size"])


class _S3Reader(io.RawIOBase):
    """An S3 object as a file: one streaming GET, resumed from where it stopped if it drops.

    Each request already has botocore's retries; a resumed request asks for the same ETag,
    so an object replaced mid-read fails instead of mixing two versions' bytes.
    """

    def __init__(self, bucket: str, key: str, uri: str) -> None:
        super().__init__()
        self._bucket, self._key, self._uri = bucket, key, uri
        self._position = 0
        self._resumes = 0
        self._body: Any = None  # so close() works even when the first GET fails
        response = self._get()
        self._etag: str = response["ETag"]
        self._body = response["Body"]

    def _get(self, **extra: str) -> Any:
        with _s3_errors(self._uri):
            return s3_client().get_object(Bucket=self._bucket, Key=self._key, **extra)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import IncompleteReadError, ReadTimeoutError
        from botocore.exceptions import ResponseStreamingError as StreamingError

        while True:
            try:
                count = int(self._body.readinto(buffer))
            except (StreamingError, IncompleteReadError, ReadTimeoutError) as exc:
                if self._resumes >= MAX_STREAM_RESUMES:
                    raise ConnectionError(
                        f"{self._uri}: the response stream dropped {self._resumes + 1} times"
                        f" ({exc})"
                    ) from exc
                self._resumes += 1
                self._body.close()
                self._body = self._get(Range=f"bytes={self._position}-", IfMatch=self._etag)["Body"]
                continue
            self._position += count
            return count

    def close(self) -> None:
        if not self.closed and self._body is not None:
            self._body.close()
        super().close()


@contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """Raise S3 and botocore failures as the OSError a folder would raise, so callers that
    quarantine unreadable files do the same for objects."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or code
        if code in _NOT_FOUND:
            raise FileNotFoundError(f"{what} does not exist ({code})") from exc
        if code in _DENIED:
            raise PermissionError(f"{what}: access denied ({code}: {message})") from exc
        if code in {"PreconditionFailed", "412"}:
            raise OSError(f"{what} changed while it was being read") from exc
        raise OSError(f"{what}: {code}: {message}") from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise PermissionError(
            f"{what}: no AWS credentials ({exc}); set AWS_PROFILE or AWS_ACCESS_KEY_ID, "
            f"or name an AwsCredentials block in {CREDENTIALS_BLOCK_ENV}"
        ) from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        raise ConnectionError(f"{what}: {exc}") from exc
    except BotoCoreError as exc:
        raise OSError(f"{what}: {exc}") from exc
