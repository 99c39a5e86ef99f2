"""Audio: decode any common format, measure loudness and timbre, embed.

Decoding tries libsndfile (WAV, FLAC, OGG, MP3) and falls back to FFmpeg through PyAV
(M4A/AAC and anything else FFmpeg reads); video files use the same PyAV path for their
audio track. Features are computed on a mono copy resampled to ``Limits.audio_sample_rate``.

Handcrafted embedding (``braid/handcrafted-audio-v1``, 32 floats, L2-normalised):

    [0:13]  MFCC means / 100
    [13:26] MFCC standard deviations / 50
    [26]    log10(RMS + 1e-9) / 5
    [27]    spectral centroid / Nyquist
    [28]    spectral roll-off (85 %) / Nyquist
    [29]    zero-crossing rate
    [30]    spectral flatness
    [31]    log1p(duration in seconds) / 5
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from tasks.common import Analysis, Limits, Models, Rejected, l2_normalise

if TYPE_CHECKING:
    import av.container

HANDCRAFTED_MODEL = "braid/handcrafted-audio-v1"
HANDCRAFTED_DIM = 32
DEPENDS_ON: tuple[str, ...] = ()
N_MFCC = 13

# Bump when the code that computes this table's features or handcrafted vector changes:
# rows of the old version are then recomputed by the next run, beside the old ones.
FEATURE_VERSION = 1

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "duration_s": pl.Float64(),
    "sample_rate": pl.Int32(),
    "channels": pl.Int32(),
    "rms": pl.Float32(),
    "peak": pl.Float32(),
    "mfcc_mean": pl.List(pl.Float32()),
    "mfcc_std": pl.List(pl.Float32()),
    "spectral_centroid_hz": pl.Float32(),
    "spectral_rolloff_hz": pl.Float32(),
    "zero_crossing_rate": pl.Float32(),
    "spectral_flatness": pl.Float32(),
}


@dataclass
class Waveform:
    """Decoded audio: samples shaped (channels, frames), float32 in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate if self.sample_rate else 0.0


def probe(data: bytes) -> dict[str, Any]:
    """Header facts from libsndfile without decoding samples; empty when it cannot tell."""
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except (RuntimeError, soundfile.LibsndfileError):
        return {}
    return {"sample_rate": info.samplerate, "channels": info.channels, "duration_s": info.duration}


def decode(data: bytes, limits: Limits) -> Waveform:
    """Decode to float32 samples; refuse clips with no samples or over the duration limit."""
    import soundfile

    header = probe(data)
    if header.get("duration_s", 0.0) > limits.max_duration_s:
        raise Rejected(
            "decode",
            f"audio lasts {header['duration_s']:.1f} s, over the limit of {limits.max_duration_s:g} s",
        )
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        wave = Waveform(np.ascontiguousarray(samples.T), int(rate))
    except (RuntimeError, soundfile.LibsndfileError):
        wave = decode_with_av(data, limits)
    return _checked(wave, limits)


def decode_with_av(data: bytes, limits: Limits) -> Waveform:
    """Decode the first audio stream of any container FFmpeg reads."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            wave = decode_stream(container, limits)
    except av.FFmpegError as exc:
        raise Rejected("decode", f"not a readable audio file: {exc}") from exc
    if wave is None:
        raise Rejected("decode", "the container has no audio stream")
    return wave


def decode_stream(container: av.container.InputContainer, limits: Limits) -> Waveform | None:
    """Decode a container's first audio stream to planar float32, stopping at the duration limit."""
    import av

    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    rate = stream.codec_context.sample_rate or limits.audio_sample_rate
    channels = stream.codec_context.channels or 1
    resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
    chunks: list[np.ndarray] = []
    total, limit = 0, int(limits.max_duration_s * rate) + 1
    for frame in container.decode(stream):
        for converted in resampler.resample(frame):
            chunk = converted.to_ndarray().reshape(channels, -1)
            chunks.append(chunk)
            total += chunk.shape[1]
        if total > limit:
            raise Rejected("decode", f"audio lasts over the limit of {limits.max_duration_s:g} s")
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    return Waveform(samples.astype(np.float32, copy=False), int(rate))


def _checked(wave: Waveform, limits: Limits) -> Waveform:
    if wave.samples.shape[1] == 0:
        raise Rejected("decode", "no audio samples")
    if wave.duration_s > limits.max_duration_s:
        raise Rejected(
            "decode",
            f"audio lasts {wave.duration_s:.1f} s, over the limit of {limits.max_duration_s:g} s",
        )
    if not np.isfinite(wave.samples).all():
        raise Rejected("decode", "audio samples contain NaN or infinity")
    return wave


def warm() -> None:
    """Import librosa's feature code now: its numba kernels load (or compile, on a fresh
    machine) at import, seconds once per process."""
    import librosa.feature  # noqa: F401


def compile_kernels() -> None:
    """Compile librosa's numba kernels that ``features`` calls, into numba's on-disk cache
    beside librosa (its ``__pycache__``). On a fresh install the first features call
    compiles them for about 20 s; ``make venv`` calls this once, so no run pays it."""
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 16_000)).astype(np.float32)
    features(Waveform(noise, 16_000), Limits())


def to_mono(wave: Waveform, rate: int) -> np.ndarray:
    """Average the channels and resample: the form features and models take."""
    import librosa

    mono = wave.samples.mean(axis=0)
    if wave.sample_rate != rate:
        mono = librosa.resample(mono, orig_sr=wave.sample_rate, target_sr=rate, res_type="soxr_hq")
    return np.ascontiguousarray(mono, dtype=np.float32)


def features(wave: Waveform, limits: Limits) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Scalar features, the handcrafted vector, and the mono waveform at the analysis rate."""
    import librosa

    rate = limits.audio_sample_rate
    mono = to_mono(wave, rate)
    n_fft = 512 if mono.size >= 512 else max(16, 1 << (mono.size.bit_length() - 1))
    spectrum = np.abs(librosa.stft(mono, n_fft=n_fft, hop_length=n_fft // 4)) ** 2
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(
        librosa.feature.melspectrogram(S=spectrum, sr=rate, n_mels=40)), n_mfcc=N_MFCC)  # fmt: skip
    centroid = float(librosa.feature.spectral_centroid(S=np.sqrt(spectrum), sr=rate).mean())
    rolloff = float(librosa.feature.spectral_rolloff(S=np.sqrt(spectrum), sr=rate).mean())
    flatness = float(librosa.feature.spectral_flatness(S=np.sqrt(spectrum)).mean())
    zcr = float(librosa.feature.zero_crossing_rate(mono, frame_length=n_fft).mean())
    rms = float(np.sqrt(np.mean(np.square(wave.samples, dtype=np.float64))))
    nyquist = rate / 2
    mfcc_mean, mfcc_std = mfcc.mean(axis=1), mfcc.std(axis=1)
    vector = np.concatenate(
        [
            mfcc_mean / 100.0,
            mfcc_std / 50.0,
            [
                np.log10(rms + 1e-9) / 5.0,
                centroid / nyquist,
                rolloff / nyquist,
                zcr,
                flatness,
                np.log1p(wave.duration_s) / 5.0,
            ],
        ]
    )
    row = {
        "duration_s": wave.duration_s,
        "sample_rate": wave.sample_rate,
        "channels": wave.channels,
        "rms": rms,
        "peak": float(np.abs(wave.samples).max()),
        "mfcc_mean": mfcc_mean.astype(np.float32).tolist(),
        "mfcc_std": mfcc_std.astype(np.float32).tolist(),
        "spectral_centroid_hz": centroid,
        "spectral_rolloff_hz": rolloff,
        "zero_crossing_rate": zcr,
        "spectral_flatness": flatness,
    }
    return row, l2_normalise(vector), mono


def analyze(data: bytes, limits: Limits, media_type: str = "") -> Analysis:
    """Decode and measure one clip; the model input is the mono waveform at the analysis rate."""
    row, vector, mono = features(decode(data, limits), limits)
    return Analysis(features=row, vector=vector, model_input=mono)


def embed(inputs: list[np.ndarray], model_id: str, sample_rate: int) -> np.ndarray:
    """Embed mono waveforms (at ``sample_rate``) with an audio model, resampling if it wants another rate."""
    import librosa

    from tasks.media.encoders import audio_sampling_rate, embed_audio

    wanted = audio_sampling_rate(model_id)
    if wanted != sample_rate:
        inputs = [librosa.resample(x, orig_sr=sample_rate, target_sr=wanted) for x in inputs]
    return embed_audio(inputs, wanted, model_id)


def encoder(models: Models) -> tuple[str | None, str]:
    """The configured model that embeds audio (None: the handcrafted vector), and its kind."""
    return models.audio, "audio"


def embed_batch(analyses: list[Analysis], models: Models, limits: Limits) -> dict[str, Any]:
    """The embedding column of a batch: one model call, or the handcrafted vectors."""
    if models.audio is None:
        return {"embedding": np.stack([a.vector for a in analyses])}
    inputs = [a.model_input for a in analyses]
    return {"embedding": embed(inputs, models.audio, limits.audio_sample_rate)}
