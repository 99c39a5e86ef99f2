"""Video: container facts, about one frame per second through the image path, and the
audio track through the audio path.

The video embedding is the mean of its sampled frames' image embeddings (handcrafted or
model), L2-normalised, so a video and a still of the same scene land near each other.
The audio track's features and embedding sit beside it in ``audio_*`` columns.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import polars as pl
from PIL import Image

from tasks.common import Analysis, Limits, Models, Rejected, l2_normalise
from tasks.media import audio, image

# Bump when the code that computes this table's features or handcrafted vector changes:
# rows of the old version are then recomputed by the next run, beside the old ones.
FEATURE_VERSION = 1
HANDCRAFTED_MODEL = image.HANDCRAFTED_MODEL  # frames: the image path
HANDCRAFTED_DIM = image.HANDCRAFTED_DIM
# Frames go through the image path and the track through the audio path: their models and
# feature versions are part of a video row's identity.
DEPENDS_ON: tuple[str, ...] = ("image", "audio")

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "duration_s": pl.Float64(),
    "fps": pl.Float32(),
    "width": pl.Int32(),
    "height": pl.Int32(),
    "codec": pl.String(),
    "frames_sampled": pl.Int32(),
    "has_audio": pl.Boolean(),
    "audio_duration_s": pl.Float64(),
    "audio_sample_rate": pl.Int32(),
    "audio_channels": pl.Int32(),
    "audio_rms": pl.Float32(),
    "audio_mfcc_mean": pl.List(pl.Float32()),
    "audio_spectral_centroid_hz": pl.Float32(),
    "audio_embedding": pl.List(pl.Float32()),
    "audio_model_id": pl.String(),
}


def probe(data: bytes) -> dict[str, Any]:
    """Container facts from the first video stream's header; refuses files with none."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise Rejected(
                    "decode",
                    f"no video stream (the container holds {len(container.streams)} streams)",
                )
            stream = container.streams.video[0]
            duration = _duration(container, stream)
            rate = stream.average_rate or stream.guessed_rate
            return {
                "duration_s": duration,
                "fps": float(rate) if rate else None,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "codec": stream.codec_context.name,
                "frames": int(stream.frames or 0),
            }
    except av.FFmpegError as exc:
        raise Rejected("decode", f"not a readable video: {exc}") from exc


def _check_pixels(header: dict[str, Any], limits: Limits) -> None:
    """Refuse, from the header and before any frame is decoded, a frame larger than an image
    may be, or more pixels to decode than the budget (width x height x frames)."""
    width, height = header["width"] or 0, header["height"] or 0
    pixels = width * height
    if pixels > limits.max_image_pixels:
        raise Rejected(
            "decode",
            f"video frames are {width}x{height} pixels, over the limit of "
            f"{limits.max_image_pixels} (max_image_pixels)",
        )
    frames = header.get("frames") or 0
    if not frames and header["duration_s"] and header["fps"]:
        frames = round(header["duration_s"] * header["fps"])
    if pixels * frames > limits.max_video_pixels:
        raise Rejected(
            "decode",
            f"video holds {frames} frames of {width}x{height}: {pixels * frames} pixels to "
            f"decode, over the limit of {limits.max_video_pixels} (max_video_pixels)",
        )


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def sample_frames(data: bytes, limits: Limits) -> list[Image.Image]:
    """Decode about ``frames_per_second`` frames per second (always the first), up to the cap,
    each kept as the thumbnail its features are measured on: one full-size frame is held at
    a time, never ``max_video_frames`` of them."""
    import av

    step = 1.0 / limits.frames_per_second
    frames: list[Image.Image] = []
    next_time = 0.0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else next_time
                if t + 1e-6 >= next_time:
                    kept = frame.to_image().convert("RGB")
                    kept.thumbnail((image.THUMBNAIL_SIDE, image.THUMBNAIL_SIDE))
                    frames.append(kept)
                    next_time = t + step
                if len(frames) >= limits.max_video_frames:
                    break
    except av.FFmpegError as exc:
        if not frames:
            raise Rejected("decode", f"video frames cannot be decoded: {exc}") from exc
    if not frames:
        raise Rejected("decode", "video stream holds no decodable frames")
    return frames


def warm() -> None:
    """Import PyAV and the audio track's feature code now (seconds, once per process)."""
    import av  # noqa: F401

    audio.warm()


def decode_audio_track(data: bytes, limits: Limits) -> audio.Waveform | None:
    """The first audio track as a waveform, or None when the video is silent."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            return audio.decode_stream(container, limits)
    except av.FFmpegError:
        return None


def analyze(data: bytes, limits: Limits, media_type: str = "") -> Analysis:
    """Measure one video; the model input holds its sampled frames and mono audio track."""
    header = probe(data)
    duration = header["duration_s"]
    if duration is not None and duration > limits.max_duration_s:
        raise Rejected(
            "decode",
            f"video lasts {duration:.1f} s, over the limit of {limits.max_duration_s:g} s",
        )
    _check_pixels(header, limits)
    del header["frames"]
    frames = sample_frames(data, limits)
    frame_arrays, frame_vectors = [], []
    size = {"width": header["width"] or 0, "height": header["height"] or 0}
    for rgb in frames:
        _, vector = image.features(rgb, size)
        frame_vectors.append(vector)
        frame_arrays.append(np.asarray(rgb))
    row: dict[str, Any] = {**header, "frames_sampled": len(frames), "has_audio": False}
    extra: dict[str, Any] = {}
    mono = None
    wave = decode_audio_track(data, limits)
    if wave is not None and wave.samples.shape[1] > 0:
        track, track_vector, mono = audio.features(wave, limits)
        row |= {
            "has_audio": True,
            "audio_duration_s": track["duration_s"],
            "audio_sample_rate": track["sample_rate"],
            "audio_channels": track["channels"],
            "audio_rms": track["rms"],
            "audio_mfcc_mean": track["mfcc_mean"],
            "audio_spectral_centroid_hz": track["spectral_centroid_hz"],
        }
        extra["audio_vector"] = track_vector
    if row["duration_s"] is None:
        row["duration_s"] = len(frames) / limits.frames_per_second
    return Analysis(
        features=row,
        vector=l2_normalise(np.mean(frame_vectors, axis=0)),
        model_input={"frames": frame_arrays, "audio": mono},
        extra=extra,
    )


def pool_frames(frame_embeddings: np.ndarray, counts: list[int]) -> np.ndarray:
    """Mean-pool consecutive runs of frame embeddings (one run per video), L2-normalised."""
    pooled, start = [], 0
    for count in counts:
        pooled.append(frame_embeddings[start : start + count].mean(axis=0))
        start += count
    return l2_normalise(np.stack(pooled)) if pooled else frame_embeddings[:0]


def encoder(models: Models) -> tuple[str | None, str]:
    """Frames go through the image model (None: the handcrafted image vector)."""
    return models.image, "image"


def embed_batch(analyses: list[Analysis], models: Models, limits: Limits) -> dict[str, Any]:
    """The batch's pooled frame embeddings and its audio tracks' embeddings, one model call each."""
    if models.image is None:
        frames = np.stack([a.vector for a in analyses])
    else:
        counts = [len(a.model_input["frames"]) for a in analyses]
        flat = [f for a in analyses for f in a.model_input["frames"]]
        frames = pool_frames(image.embed(flat, models.image), counts)
    tracks: list[np.ndarray | None] = [a.extra.get("audio_vector") for a in analyses]
    if models.audio is not None:
        with_audio = [i for i, a in enumerate(analyses) if a.model_input["audio"] is not None]
        if with_audio:
            inputs = [analyses[i].model_input["audio"] for i in with_audio]
            vectors = audio.embed(inputs, models.audio, limits.audio_sample_rate)
            for i, vector in zip(with_audio, vectors, strict=True):
                tracks[i] = vector
    track_model = models.audio or audio.HANDCRAFTED_MODEL
    return {
        "embedding": frames,
        "audio_embedding": [
            None if t is None else np.asarray(l2_normalise(t), np.float32).tolist() for t in tracks
        ],
        "audio_model_id": [None if t is None else track_model for t in tracks],
    }
