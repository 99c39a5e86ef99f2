"""The sample generator writes realistic, decodable, reproducible media, and bad files that fail."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
import soundfile
from PIL import Image

from tasks.samples import make_samples

REPO = Path(__file__).resolve().parents[2]
SAMPLE_NAMES = {"caption.txt", "clip.mp4", "sensor.csv"}
BAD_NAMES = {
    "empty.dat",
    "truncated.jpg",
    "bomb.png",
    "noise.wav",
    "latin1.txt",
    "nostreams.mp4",
    "image.mp3",
    "notes.jpg",
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("samples")
    return root, make_samples(root, n=3, seed=0)


def digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under root, keyed by its path relative to root."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def sample_files(root: Path, name: str) -> list[Path]:
    """The file of each sample whose name starts with name ('image', 'audio', ...)."""
    return sorted(root.glob(f"sample-*/{name}*"))


def test_layout_is_one_folder_per_sample_plus_bad(samples: tuple[Path, list[Path]]) -> None:
    root, written = samples
    assert sorted(p.name for p in root.iterdir()) == [
        "_bad",
        "sample-0000",
        "sample-0001",
        "sample-0002",
    ]
    for folder in sorted(root.glob("sample-*")):
        names = {p.name for p in folder.iterdir()}
        assert len(names) == 5
        assert names >= SAMPLE_NAMES
        assert len(names & {"image.jpg", "image.png"}) == 1
        assert len(names & {"audio.wav", "audio.flac"}) == 1
    assert {p.name for p in (root / "_bad").iterdir()} == BAD_NAMES
    assert written == sorted(p for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_identical_bytes(samples: tuple[Path, list[Path]], tmp_path: Path) -> None:
    root, _ = samples
    make_samples(tmp_path, n=3, seed=0)
    assert digests(tmp_path) == digests(root)


def test_encoders_do_not_depend_on_memory_contents(
    samples: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    # x264's macroblock-tree code read uninitialised memory and changed the clips from run
    # to run; glibc filling fresh allocations with a pattern exposes that within one test.
    root, _ = samples
    script = f"from tasks.samples import make_samples; make_samples({str(tmp_path)!r}, 3, 0)"
    env = {**os.environ, "MALLOC_PERTURB_": "85"}
    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True)
    assert digests(tmp_path) == digests(root)


def test_a_sample_does_not_depend_on_how_many_are_made(
    samples: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, _ = samples
    make_samples(tmp_path, n=1, seed=0)
    first = {k: v for k, v in digests(root).items() if k.startswith("sample-0000")}
    assert {k: v for k, v in digests(tmp_path).items() if k.startswith("sample-")} == first


def test_another_seed_changes_every_sample_file(
    samples: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    root, _ = samples
    make_samples(tmp_path, n=3, seed=1)
    before = {v for k, v in digests(root).items() if k.startswith("sample-")}
    after = {v for k, v in digests(tmp_path).items() if k.startswith("sample-")}
    assert before.isdisjoint(after)


def test_no_two_sample_files_are_identical(samples: tuple[Path, list[Path]]) -> None:
    root, _ = samples
    hashes = [v for k, v in digests(root).items() if k.startswith("sample-")]
    assert len(hashes) == 15
    assert len(set(hashes)) == 15


def test_every_file_is_small(samples: tuple[Path, list[Path]]) -> None:
    _, written = samples
    assert max(p.stat().st_size for p in written) <= 200_000


def test_images_decode_to_small_rgb(samples: tuple[Path, list[Path]]) -> None:
    root, _ = samples
    for path in sample_files(root, "image"):
        with Image.open(path) as image:
            image.load()
            assert image.format == ("PNG" if path.suffix == ".png" else "JPEG")
            assert image.mode == "RGB"
            assert max(image.size) <= 320
            assert min(image.size) >= 64
            assert np.asarray(image).std() > 10  # a picture, not a flat fill


def test_captions_are_one_or_two_sentences_of_utf8(samples: tuple[Path, list[Path]]) -> None:
    root, _ = samples
    for path in sample_files(root, "caption"):
        caption = path.read_bytes().decode("utf-8").strip()
        assert caption.startswith("A ")
        assert caption.endswith(".")
        assert 1 <= caption.count(". ") + 1 <= 2
        assert any(word in caption for word in ("photograph", "image", "drawn scene"))


def test_audio_is_one_to_three_seconds_and_audible(samples: tuple[Path, list[Path]]) -> None:
    root, _ = samples
    for path in sample_files(root, "audio"):
        info = soundfile.info(path)
        assert info.format == ("FLAC" if path.suffix == ".flac" else "WAV")
        assert info.samplerate in (16_000, 22_050, 44_100)
        assert info.channels in (1, 2)
        assert 1.0 <= info.duration <= 3.0
        signal, _ = soundfile.read(path)
        assert 0.2 < np.abs(signal).max() < 1.0


def test_clips_hold_h264_video_and_aac_audio(samples: tuple[Path, list[Path]]) -> None:
    root, _ = samples
    for path in sample_files(root, "clip"):
        with av.open(str(path)) as container:
            assert [s.codec_context.name for s in container.streams.video] == ["h264"]
            assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
            video = container.streams.video[0]
            assert (video.width, video.height) == (160, 120)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) >= 10
        assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1  # it moves


def test_sensor_logs_are_20_hz_with_increasing_utc_timestamps(
    samples: tuple[Path, list[Path]],
) -> None:
    root, _ = samples
    for path in sample_files(root, "sensor"):
        log = pl.read_csv(path, try_parse_dates=True)
        assert log.columns == ["timestamp", "accel_x", "accel_y", "accel_z", "temperature_c"]
        timestamp = log.schema["timestamp"]
        assert isinstance(timestamp, pl.Datetime)
        assert timestamp.time_zone == "UTC"
        steps_ms = log["timestamp"].diff().drop_nulls().dt.total_milliseconds()
        assert steps_ms.min() > 0
        assert 45 <= steps_ms.median() <= 55
        assert 4.5 <= (log["timestamp"].max() - log["timestamp"].min()).total_seconds() <= 5.5
        assert 8.5 <= log["accel_z"].mean() <= 12.5  # gravity, mostly along z
        assert 10 <= log["temperature_c"].mean() <= 40


def test_bad_files_fail_the_way_they_claim(samples: tuple[Path, list[Path]]) -> None:
    bad = samples[0] / "_bad"
    assert (bad / "empty.dat").stat().st_size == 0

    with pytest.raises(OSError, match="truncated"), Image.open(bad / "truncated.jpg") as image:
        image.load()

    with pytest.raises(Image.DecompressionBombError):
        Image.open(bad / "bomb.png")

    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(bad / "noise.wav")

    with pytest.raises(UnicodeDecodeError):
        (bad / "latin1.txt").read_bytes().decode("utf-8")
    assert "é" in (bad / "latin1.txt").read_bytes().decode("latin-1")

    with av.open(str(bad / "nostreams.mp4")) as container:
        assert len(container.streams) == 0

    assert (bad / "image.mp3").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(bad / "image.mp3") as image:
        image.load()

    assert (bad / "notes.jpg").read_bytes().decode("utf-8").strip()
