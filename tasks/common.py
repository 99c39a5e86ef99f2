"""Types every processing module shares: what an object is, what a rejection is, what an analysis returns.

Nothing here imports Prefect, so the processing functions can be tested and benchmarked alone.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blocks import defaults

MODALITIES = ("image", "text", "audio", "video", "timeseries")


class Rejected(Exception):
    """An object that cannot go further, with the stage it stopped at and a one-line reason.

    Processing functions raise it for problems they recognise (empty, too large, no
    stream); anything else they raise is turned into a rejection by the caller.
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = one_line(reason)

    def __reduce__(self) -> tuple[type[Rejected], tuple[str, str]]:
        # Rejections travel between Dask workers; rebuild them with both fields.
        return (Rejected, (self.stage, self.reason))


def one_line(text: str, limit: int = 300) -> str:
    """Squash a message to one line so it reads well in a quarantine table."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def reason_for(exc: BaseException) -> str:
    """A one-line reason for an unexpected exception: its type and message."""
    if isinstance(exc, Rejected):
        return exc.reason
    message = one_line(str(exc)) or "no message"
    return f"{type(exc).__name__}: {message}"


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one object from taking a worker down."""

    max_object_bytes: int = defaults.MAX_OBJECT_BYTES
    max_image_pixels: int = defaults.MAX_IMAGE_PIXELS
    max_duration_s: float = defaults.MAX_DURATION_S
    frames_per_second: float = defaults.FRAMES_PER_SECOND
    max_video_frames: int = defaults.MAX_VIDEO_FRAMES
    audio_sample_rate: int = defaults.AUDIO_SAMPLE_RATE
    max_text_chars: int = defaults.MAX_TEXT_CHARS
    max_video_pixels: int = defaults.MAX_VIDEO_PIXELS
    max_csv_columns: int = defaults.MAX_CSV_COLUMNS
    max_csv_rows: int = defaults.MAX_CSV_ROWS
    decode_seconds: float = defaults.DECODE_SECONDS
    decode_memory_mb: float = defaults.DECODE_MEMORY_MB


@dataclass(frozen=True)
class Models:
    """Which encoder produces each modality's embedding; None means the handcrafted vector."""

    text: str = defaults.DEFAULT_TEXT_MODEL
    image: str | None = None
    audio: str | None = None


@dataclass(frozen=True)
class ObjectRef:
    """A reference to one discovered object: passed between tasks instead of its bytes."""

    object_id: str
    uri: str
    sample_id: str
    modality: str
    media_type: str
    size: int


@dataclass
class Analysis:
    """What the per-object function of a modality returns.

    ``features`` are the scalar (or short list) columns of the modality's table;
    ``vector`` is the handcrafted embedding (float32, L2-normalised), used when no
    encoder model is configured; ``model_input`` is the small, preprocessed input an
    encoder model takes (a resized RGB array, a mono waveform, a string, frames).
    """

    features: dict[str, Any]
    vector: np.ndarray
    model_input: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def l2_normalise(vector: np.ndarray) -> np.ndarray:
    """Scale a vector (or each row of a matrix) to unit length; zero rows stay zero."""
    array = np.asarray(vector, dtype=np.float32)
    norm = np.linalg.norm(array, axis=-1, keepdims=True)
    return np.divide(array, norm, out=np.zeros_like(array), where=norm > 0)


def release_memory(collect: bool = True) -> None:
    """Hand freed memory back to the operating system after a large stage.

    Objects a stage freed leave glibc's heaps fragmented, so the process keeps their
    pages and its resident size stays at the stage's peak; ``malloc_trim`` returns them
    (as Dask's documentation advises for its workers). ``collect`` first runs the garbage
    collector (tens of milliseconds in a process holding torch); without it the trim
    alone costs about a millisecond. A no-op where glibc is not the allocator.
    """
    import ctypes
    import ctypes.util
    import gc

    if collect:
        gc.collect()
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # musl, macOS: no malloc_trim
        return


# Byte-order marks and the encodings they declare; UTF-32 LE's mark begins with UTF-16 LE's.
TEXT_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def text_encoding(head: bytes) -> tuple[str, int]:
    """The encoding text declares with a byte-order mark (as Windows tools write UTF-16),
    and the mark's length; UTF-8 and 0 without one."""
    for bom, encoding in TEXT_BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return "utf-8", 0


def decode_text(data: bytes) -> str:
    """Text in the encoding its byte-order mark declares, else strict UTF-8, without the
    mark; raises UnicodeDecodeError with offsets into ``data``."""
    encoding, start = text_encoding(data)
    try:
        return data[start:].decode(encoding)
    except UnicodeDecodeError as exc:
        raise UnicodeDecodeError(
            exc.encoding, data, exc.start + start, exc.end + start, exc.reason
        ) from None
