"""Reading objects from a source by URI: a local folder now, any fsspec filesystem by scheme.

Workers receive URIs, not bytes, and read the object themselves, so the flow never
ships media between machines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import fsspec

# Names that mean "still being written" or "not data": never listed as objects.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download")


def source_root(source: str) -> str:
    """Canonical root of a source: an absolute path for folders, the URL for remote stores."""
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


def iter_files(root: str) -> Iterator[tuple[str, int]]:
    """Yield (uri, size) for every object under a root, in a stable order."""
    if "://" not in root:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if is_listed(name):
                    path = os.path.join(folder, name)
                    yield path, os.path.getsize(path)
        return
    fs, base = fsspec.core.url_to_fs(root)
    protocol = root.split("://", 1)[0]
    for path, info in sorted(fs.find(base, detail=True).items()):
        if is_listed(path.rsplit("/", 1)[-1]) and info.get("type") != "directory":
            yield f"{protocol}://{path}", int(info.get("size") or 0)


def open_binary(uri: str) -> IO[bytes]:
    """Open an object for reading, whatever filesystem it lives on."""
    if "://" not in uri:
        return open(uri, "rb")
    return fsspec.open(uri, "rb").open()


def read_bytes(uri: str) -> bytes:
    """The whole content of an object."""
    with open_binary(uri) as handle:
        return handle.read()


def object_size(uri: str) -> int:
    """The size of one object in bytes; raises OSError when it is gone."""
    if "://" not in uri:
        return os.path.getsize(uri)
    fs, path = fsspec.core.url_to_fs(uri)
    return int(fs.size(path))
