"""Benchmark data at any scale in seconds: a few real samples, then byte-distinct copies.

``make_samples`` writes realistic media but spends about half a second per sample
synthesising audio and encoding H.264, and a benchmark wants thousands of objects. So a
handful of real samples are made once and every further sample is a copy of one of them
whose bytes differ where decoders do not look: a JPEG comment, a PNG text chunk, an MP4
``free`` box, the lowest bit of one audio sample, a caption suffix, a freshly drawn sensor
log. Each copy is a new object id (a new SHA-256) that costs as much to decode as its
original, so per-object figures hold for the copies too.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tasks.samples import make_samples, mp4_box, png_chunk, write_sensor_log, write_text

# Real samples a dataset is copied from: enough that images, audio and clips vary.
BASE_SAMPLES = 24
# Salt for the sensor logs of copies, so they never repeat a real sample's stream.
COPY_STREAM = 7_000_003


def make_dataset(root: str | Path, samples: int, seed: int = 0, base: int = BASE_SAMPLES) -> Path:
    """Write ``samples`` sample folders (five objects each) under ``root/source``; return it.

    The first ``base`` are real samples; the rest are copies of them (see the module
    docstring). The bad inputs ``make_samples`` also writes stay out of the source.
    """
    root = Path(root)
    source = root / "source"
    done = root / f"source-{samples}-{seed}.done"
    if done.exists():
        return source
    originals = real_samples(root / "base", min(base, samples), seed)
    for index in range(samples):
        original = originals[index % len(originals)]
        target = source / f"sample-{index:05d}"
        if index < len(originals):
            shutil.copytree(original, target, dirs_exist_ok=True)
        else:
            copy_sample(original, target, seed, index)
    done.touch()
    return source


def make_text_series(
    root: str | Path, objects: int, seed: int = 0, base: int = 4, captions: bool = True
) -> Path:
    """Write ``objects`` captions and sensor logs (half each; all logs without captions)
    under ``root/text-series-<n>``.

    The light modalities, for measuring memory against the number of objects rather
    than against the size of each.
    """
    root = Path(root)
    originals = real_samples(root / "base", base, seed) if captions else []
    source = root / f"text-series-{objects}"
    for index in range(objects // 2 if captions else objects):
        folder = source / f"sample-{index:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        if captions:
            original = originals[index % len(originals)]
            copy_text(original / "caption.txt", folder / "caption.txt", f"{seed}:{index}")
        copy_sensor_log(folder / "sensor.csv", seed, index)
    return source


def real_samples(folder: Path, n: int, seed: int) -> list[Path]:
    """The first ``n`` sample folders of ``make_samples(folder, n, seed)``, made once."""
    folders = [folder / f"sample-{i:04d}" for i in range(n)]
    if not all(f.is_dir() for f in folders):
        make_samples(folder, n=n, seed=seed)
    return folders


def copy_sample(original: Path, target: Path, seed: int, index: int) -> list[Path]:
    """Copy one sample folder, making every file a new object that decodes like its original."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(original.iterdir()):
        destination = target / path.name
        if path.suffix == ".csv":
            copy_sensor_log(destination, seed, index)
        else:
            COPIERS[path.suffix](path, destination, f"{seed}:{index}")
        written.append(destination)
    return written


def copy_jpeg(path: Path, destination: Path, tag: str) -> None:
    """A comment segment right after the start-of-image marker; decoders skip comments."""
    data = path.read_bytes()
    comment = tag.encode()
    destination.write_bytes(
        data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]
    )


def copy_png(path: Path, destination: Path, tag: str) -> None:
    """A tEXt chunk right after IHDR (8-byte signature + 25-byte chunk)."""
    data = path.read_bytes()
    chunk = png_chunk(b"tEXt", b"Comment\x00" + tag.encode())
    destination.write_bytes(data[:33] + chunk + data[33:])


def copy_mp4(path: Path, destination: Path, tag: str) -> None:
    """A top-level ``free`` box at the end; demuxers skip free space."""
    destination.write_bytes(path.read_bytes() + mp4_box(b"free", tag.encode()))


def copy_audio(path: Path, destination: Path, tag: str) -> None:
    """The same clip with the lowest bit of one sample flipped, in the same format."""
    import soundfile

    info = soundfile.info(str(path))
    pcm, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    position = int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16) % pcm.shape[0]
    pcm[position, 0] ^= 1
    soundfile.write(str(destination), pcm, rate, subtype=info.subtype, format=info.format)


def copy_text(path: Path, destination: Path, tag: str) -> None:
    """The text with a short suffix naming the copy."""
    write_text(destination, f"{path.read_text(encoding='utf-8').rstrip()} (copy {tag})")


def copy_sensor_log(destination: Path, seed: int, index: int) -> None:
    """A freshly drawn log (a few milliseconds): same length and rate as the real ones."""
    write_sensor_log(destination, np.random.default_rng([seed, COPY_STREAM, index]))


COPIERS: dict[str, Callable[[Path, Path, str], None]] = {
    ".jpg": copy_jpeg,
    ".png": copy_png,
    ".mp4": copy_mp4,
    ".wav": copy_audio,
    ".flac": copy_audio,
    ".txt": copy_text,
}
