"""Audio: header facts of the original, loudness and timbre of a known tone, and refusals."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tasks.common import Limits, Rejected
from tasks.media import audio


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def encode(samples: np.ndarray, rate: int, audio_format: str = "WAV", **options: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=audio_format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100])
def test_a_440_hz_tone(rate: int) -> None:
    analysis = audio.analyze(encode(tone(440, rate, 1.0), rate), Limits())

    row = analysis.features
    assert row["duration_s"] == pytest.approx(1.0)
    assert row["sample_rate"] == rate  # the original's rate, not the analysis rate
    assert row["channels"] == 1
    assert row["peak"] == pytest.approx(0.5, abs=1e-3)
    assert row["rms"] == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert row["spectral_centroid_hz"] == pytest.approx(440, abs=20)
    assert row["zero_crossing_rate"] == pytest.approx(2 * 440 / 16_000, rel=0.05)
    assert len(row["mfcc_mean"]) == len(row["mfcc_std"]) == audio.N_MFCC
    # The model input is mono at the analysis rate, whatever the original's rate.
    assert analysis.model_input.shape == (16_000,)
    assert analysis.model_input.dtype == np.float32


def test_higher_tone_has_higher_centroid() -> None:
    low = audio.analyze(encode(tone(300, 16_000, 0.5), 16_000), Limits()).features
    high = audio.analyze(encode(tone(3000, 16_000, 0.5), 16_000), Limits()).features
    assert high["spectral_centroid_hz"] == pytest.approx(3000, abs=100)
    assert high["spectral_centroid_hz"] > 5 * low["spectral_centroid_hz"]


def test_white_noise_is_flat_and_a_tone_is_not() -> None:
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 16_000)
    flat = audio.analyze(encode(noise, 16_000), Limits()).features["spectral_flatness"]
    tonal = audio.analyze(encode(tone(440, 16_000, 1.0), 16_000), Limits()).features
    assert flat > 0.3
    assert tonal["spectral_flatness"] < 0.01


def test_handcrafted_vector_has_its_dimension_and_unit_norm(sample_dir: Path) -> None:
    files = sorted(sample_dir.glob("sample-*/audio.*"))
    assert len(files) == 3
    for path in files:
        analysis = audio.analyze(path.read_bytes(), Limits())
        info = soundfile.info(path)
        assert analysis.features["sample_rate"] == info.samplerate
        assert analysis.features["channels"] == info.channels
        assert analysis.features["duration_s"] == pytest.approx(info.duration)
        assert analysis.vector.shape == (audio.HANDCRAFTED_DIM,)
        assert np.linalg.norm(analysis.vector) == pytest.approx(1.0, abs=1e-5)


def test_stereo_keeps_its_channels_and_is_mixed_to_mono_for_the_model() -> None:
    left = tone(440, 16_000, 0.5)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)

    analysis = audio.analyze(encode(stereo, 16_000), Limits())

    assert analysis.features["channels"] == 2
    assert analysis.features["peak"] == pytest.approx(0.5, abs=1e-3)
    assert np.abs(analysis.model_input).max() == pytest.approx(0.25, abs=1e-3)


def test_silence_gives_zero_loudness_and_a_finite_unit_vector() -> None:
    analysis = audio.analyze(encode(np.zeros(8_000), 16_000), Limits())

    row = analysis.features
    assert row["rms"] == row["peak"] == 0
    assert row["spectral_centroid_hz"] == 0
    assert all(np.isfinite(v) for v in row["mfcc_mean"])
    assert np.isfinite(analysis.vector).all()
    assert np.linalg.norm(analysis.vector) == pytest.approx(1.0, abs=1e-5)


def test_a_few_samples_are_still_measured() -> None:
    analysis = audio.analyze(encode(tone(440, 8_000, 0.01), 8_000), Limits())
    assert analysis.features["duration_s"] == pytest.approx(0.01)
    assert np.isfinite(analysis.vector).all()


@pytest.mark.parametrize(
    ("audio_format", "options"),
    [("FLAC", {}), ("OGG", {"subtype": "VORBIS"}), ("MP3", {"subtype": "MPEG_LAYER_III"})],
)
def test_compressed_formats_decode(audio_format: str, options: dict[str, str]) -> None:
    data = encode(tone(440, 16_000, 1.0), 16_000, audio_format, **options)

    row = audio.analyze(data, Limits()).features

    assert row["duration_s"] == pytest.approx(1.0, abs=0.06)  # MP3 pads its frames
    assert row["sample_rate"] == 16_000
    assert row["spectral_centroid_hz"] == pytest.approx(440, abs=20)


def test_over_long_clip_is_rejected() -> None:
    data = encode(tone(440, 8_000, 1.0), 8_000)
    with pytest.raises(Rejected) as caught:
        audio.analyze(data, Limits(max_duration_s=0.5))
    assert caught.value.stage == "decode"
    assert caught.value.reason == "audio lasts 1.0 s, over the limit of 0.5 s"
    assert audio.analyze(data, Limits(max_duration_s=1.0)).features["duration_s"] == 1.0


def test_clip_with_no_samples_is_rejected() -> None:
    with pytest.raises(Rejected, match="no audio samples"):
        audio.analyze(encode(np.zeros(0), 16_000), Limits())


def test_random_bytes_are_rejected(sample_dir: Path) -> None:
    with pytest.raises(Rejected) as caught:
        audio.analyze((sample_dir / "_bad" / "noise.wav").read_bytes(), Limits())
    assert caught.value.stage == "decode"
    assert "not a readable audio file" in caught.value.reason


def encode_m4a(samples: np.ndarray, rate: int) -> bytes:
    """AAC in an MP4 container: what libsndfile cannot read, so FFmpeg decodes it."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        pcm = samples.astype(np.float32)
        for start in range(0, len(pcm), 1024):
            frame = av.AudioFrame.from_ndarray(
                pcm[None, start : start + 1024], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def test_m4a_decodes_through_ffmpeg() -> None:
    data = encode_m4a(tone(440, 16_000, 1.0), 16_000)

    row = audio.analyze(data, Limits(), "audio/mp4").features

    assert audio.probe(data) == {}  # libsndfile cannot tell
    assert row["duration_s"] == pytest.approx(1.0, abs=0.1)  # AAC adds priming samples
    assert (row["sample_rate"], row["channels"]) == (16_000, 1)
    # Lossy coding and its quiet padding at the end pull the mean centroid up a little.
    assert row["spectral_centroid_hz"] == pytest.approx(440, abs=60)


def test_over_long_m4a_is_rejected_while_decoding() -> None:
    data = encode_m4a(tone(440, 16_000, 2.0), 16_000)
    with pytest.raises(Rejected) as caught:
        audio.analyze(data, Limits(max_duration_s=0.5))
    assert caught.value.stage == "decode"
    assert "over the limit of 0.5 s" in caught.value.reason


def test_compile_kernels_leaves_librosa_kernels_in_numbas_cache() -> None:
    # make venv calls it so that no run compiles them (about 20 s on a fresh install).
    import librosa

    from tasks.media.audio import compile_kernels

    compile_kernels()
    cached = list(Path(librosa.__file__).parent.rglob("__pycache__/*.nbi"))
    assert cached, "no numba cache index beside librosa"
