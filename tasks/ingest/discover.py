"""Find what is new in a source: list, hash (object id), sniff the modality, group into samples.

The modality comes from the bytes (magic numbers through the `filetype` library, then
UTF-8 and CSV-header checks for text and sensor logs); the extension is only a hint,
used to catch mislabelled objects rather than to decide what they are.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import filetype

from tasks.common import Limits, ObjectRef, Rejected, reason_for, text_encoding
from tasks.lake.storage import iter_files, local_path, open_binary, printable_name, source_root
from tasks.media.timeseries import TIMESTAMP_COLUMNS

HEAD_BYTES = 8192
CHUNK_BYTES = 1024 * 1024

# Extension hints: what an extension promises the bytes are.
EXTENSION_HINTS: dict[str, str] = {
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"), "image"),
    **dict.fromkeys((".txt", ".md", ".json", ".jsonl", ".srt", ".vtt"), "text"),
    **dict.fromkeys((".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"), "audio"),
    **dict.fromkeys((".mp4", ".mov", ".mkv", ".webm", ".m4v", ".avi"), "video"),
    ".csv": "timeseries",
}
SUPPORTED_IMAGE = {"jpg", "png", "webp", "gif", "tif", "bmp"}
SUPPORTED_AUDIO = {"wav", "flac", "mp3", "ogg", "m4a", "aac"}
SUPPORTED_VIDEO = {"mp4", "mov", "mkv", "webm", "m4v", "avi"}
# Families whose members share containers or encodings: a hint inside the family is fine.
COMPATIBLE = [{"text", "timeseries"}, {"audio", "video"}]


@dataclass
class Discovery:
    """What discovery found: new objects to process, rejected ones, and how many were known.

    ``new`` holds one reference per object (the first URI its bytes were found under);
    ``members`` holds every URI that sniffed as a known modality, duplicates included, so
    identical bytes in two samples are a member of both.
    """

    new: list[ObjectRef] = field(default_factory=list)
    members: list[ObjectRef] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    known: int = 0
    duplicates: int = 0
    seen: set[str] = field(default_factory=set)


def sniff_modality(head: bytes, name: str) -> tuple[str, str]:
    """Return (modality, media type) from an object's first bytes; raise Rejected if unknown.

    The extension of ``name`` is a hint: when it promises another modality than the
    bytes show, the object is mislabelled and rejected rather than guessed at.
    """
    suffix = PurePosixPath(name).suffix.lower()
    hint = EXTENSION_HINTS.get(suffix)
    kind = filetype.guess(head)
    if kind is not None:
        modality = _modality_of(kind.extension, kind.mime)
        if modality is None:
            raise Rejected("sniff", f"unsupported content type {kind.mime}")
        media_type = kind.mime
        if modality == "video" and hint == "audio":
            modality = "audio"  # an audio-only MP4/WebM (.m4a, .webm) shares the video container
    elif _looks_like_text(head):
        modality, media_type = _text_modality(head, suffix)
    else:
        expected = f" (extension {suffix} suggests {hint})" if hint else ""
        raise Rejected(
            "sniff",
            f"unrecognised content: no known media signature and not UTF-8 (or BOM-marked UTF-16/32) text{expected}",
        )
    if hint is not None and not _compatible(hint, modality):
        raise Rejected(
            "sniff",
            f"mislabelled: extension {suffix} suggests {hint} but the bytes are {media_type} ({modality})",
        )
    return modality, media_type


def _modality_of(extension: str, mime: str) -> str | None:
    if extension in SUPPORTED_IMAGE:
        return "image"
    if extension in SUPPORTED_AUDIO:
        return "audio"
    if extension in SUPPORTED_VIDEO:
        return "video"
    return None


def _compatible(hint: str, modality: str) -> bool:
    return hint == modality or any({hint, modality} <= family for family in COMPATIBLE)


def _looks_like_text(head: bytes) -> bool:
    """UTF-8, or UTF-16/32 behind a byte-order mark, with no NUL characters; a character cut
    at the end of the head is fine."""
    encoding, start = text_encoding(head)
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        text = decoder.decode(head[start:], final=False)
    except UnicodeDecodeError:
        return False
    return "\x00" not in text


def _text_modality(head: bytes, suffix: str) -> tuple[str, str]:
    """Tell a timed sensor log (CSV with a timestamp column) from plain text."""
    encoding, start = text_encoding(head)
    first_line = head[start:].decode(encoding, errors="ignore").splitlines()[:1]
    if first_line and "," in first_line[0]:
        header = next(csv.reader(io.StringIO(first_line[0])), [])
        if any(column.strip().lower() in TIMESTAMP_COLUMNS for column in header):
            return "timeseries", "text/csv"
    media_types = {
        ".md": "text/markdown",
        ".json": "application/json",
        ".jsonl": "application/jsonl",
        ".srt": "application/x-subrip",
        ".vtt": "text/vtt",
        ".csv": "text/csv",
    }
    return "text", media_types.get(suffix, "text/plain")


def sample_id_for(uri: str, root: str) -> str:
    """The sample an object belongs to: its parent folder relative to the root, else its stem
    (bytes of a local name that are not UTF-8 shown as ``\\xNN``)."""
    relative = PurePosixPath(local_path(uri)).relative_to(PurePosixPath(root))
    parent = relative.parent
    return printable_name(str(parent) if str(parent) != "." else relative.stem)


def hash_and_head(uri: str) -> tuple[str, bytes, int]:
    """Stream an object once: its SHA-256 (the object id), its first bytes and its size."""
    digest = hashlib.sha256()
    head = b""
    size = 0
    with open_binary(uri) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            if not head:
                head = chunk[:HEAD_BYTES]
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), head, size


def discover(source: str, known: set[str], limits: Limits) -> Discovery:
    """List a source and sort each object into new, known (skipped) or rejected."""
    found = Discovery()
    root = source_root(source)
    for uri, listed_size, refused in iter_files(root):
        sample_id = sample_id_for(uri, root)
        if refused is None:
            inspect_object(found, uri, listed_size, sample_id, known, limits)
        elif _uri_id(uri, listed_size) not in known:
            found.rejected.append(
                {"uri": uri, "sample_id": sample_id, "discovered_at": datetime.now(UTC),
                 "object_id": _uri_id(uri, listed_size), "modality": _hint(uri),
                 "media_type": None, "size_bytes": listed_size, "stage": "discover",
                 "reason": refused}
            )  # fmt: skip
        else:
            found.known += 1
    return found


def _hint(uri: str) -> str:
    return EXTENSION_HINTS.get(PurePosixPath(uri).suffix.lower(), "unknown")


def inspect_object(
    found: Discovery, uri: str, listed_size: int, sample_id: str, known: set[str], limits: Limits
) -> str | None:
    """Hash and sniff one object and file it under ``found``: new, known, duplicate or rejected.

    Returns the id it was filed under as new or rejected; None when known or a duplicate.
    """
    hint = _hint(uri)
    base = {"uri": uri, "sample_id": sample_id, "discovered_at": datetime.now(UTC)}
    if _uri_id(uri, listed_size) in known:
        found.known += 1
        return None
    if listed_size > limits.max_object_bytes:
        found.rejected.append(
            {**base, "object_id": _uri_id(uri, listed_size), "modality": hint,
             "media_type": None, "size_bytes": listed_size, "stage": "discover",
             "reason": f"object is {listed_size} bytes, over the limit of "
                       f"{limits.max_object_bytes} (max_object_bytes)"}
        )  # fmt: skip
        return _uri_id(uri, listed_size)
    try:
        object_id, head, size = hash_and_head(uri)
    except OSError as exc:
        found.rejected.append(
            {**base, "object_id": _uri_id(uri, listed_size), "modality": hint,
             "media_type": None, "size_bytes": listed_size, "stage": "discover",
             "reason": f"unreadable: {reason_for(exc)}"}
        )  # fmt: skip
        return _uri_id(uri, listed_size)
    if object_id in known:
        found.known += 1
        return None
    duplicate = object_id in found.seen
    found.seen.add(object_id)
    try:
        if size == 0:
            raise Rejected("discover", "empty object (0 bytes)")
        modality, media_type = sniff_modality(head, uri)
    except Rejected as rejection:
        if duplicate:
            found.duplicates += 1
            return None
        found.rejected.append(
            {**base, "object_id": object_id, "modality": hint, "media_type": None,
             "size_bytes": size, "stage": rejection.stage, "reason": rejection.reason}
        )  # fmt: skip
        return object_id
    ref = ObjectRef(object_id, uri, sample_id, modality, media_type, size)
    found.members.append(ref)
    if duplicate:
        found.duplicates += 1  # identical bytes under another name: one object, two members
        return None
    found.new.append(ref)
    return object_id


def _uri_id(uri: str, size: int) -> str:
    """An id for an object whose bytes were not read (too large, unreadable)."""
    return "uri:" + hashlib.sha256(f"{uri}\x00{size}".encode()).hexdigest()
