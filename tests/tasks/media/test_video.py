"""Video: container facts, about one sampled frame per second, and the audio track's features."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from tasks.common import Limits, Rejected
from tasks.media import image, video

SIZE = (64, 48)


def make_video(
    seconds: int = 3,
    fps: int = 10,
    audio_rate: int | None = None,
    codec: str = "libx264",
    container_format: str = "mp4",
) -> bytes:
    """A clip fading from blue to red, with a 440 Hz tone when audio_rate is given."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        if audio_rate:
            track = container.add_stream("aac", rate=audio_rate)
            track.layout = "mono"
        count = seconds * fps
        for index in range(count):
            level = index * 255 // count
            pixels = np.full((SIZE[1], SIZE[0], 3), (level, 100, 255 - level), np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio_rate:
            t = np.arange(audio_rate * seconds) / audio_rate
            pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, len(pcm), 1024):
                chunk = av.AudioFrame.from_ndarray(
                    pcm[None, start : start + 1024], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = audio_rate, start
                container.mux(track.encode(chunk))
            container.mux(track.encode(None))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def silent_clip() -> bytes:
    return make_video()


@pytest.fixture(scope="module")
def clip_with_tone() -> bytes:
    return make_video(audio_rate=16_000)


def test_container_facts(silent_clip: bytes) -> None:
    row = video.analyze(silent_clip, Limits()).features

    assert len(silent_clip) <= 200_000
    assert row["duration_s"] == pytest.approx(3.0, abs=0.1)
    assert row["fps"] == pytest.approx(10.0)
    assert (row["width"], row["height"]) == SIZE
    assert row["codec"] == "h264"


def test_about_one_frame_per_second_is_sampled(silent_clip: bytes) -> None:
    analysis = video.analyze(silent_clip, Limits())

    assert analysis.features["frames_sampled"] == 3
    frames = analysis.model_input["frames"]
    assert len(frames) == 3
    assert all(frame.shape == (SIZE[1], SIZE[0], 3) for frame in frames)
    # The first frame is blue, later ones redder: they are taken across the clip, not at its start.
    assert frames[0][..., 2].mean() > frames[0][..., 0].mean() + 100
    assert frames[-1][..., 0].mean() > frames[0][..., 0].mean() + 100


def test_sampling_rate_and_frame_cap_are_configurable(silent_clip: bytes) -> None:
    assert video.analyze(silent_clip, Limits(frames_per_second=2)).features["frames_sampled"] == 6
    assert video.analyze(silent_clip, Limits(max_video_frames=2)).features["frames_sampled"] == 2


def test_vector_is_the_normalised_mean_of_the_frames(silent_clip: bytes) -> None:
    analysis = video.analyze(silent_clip, Limits())

    assert analysis.vector.shape == (image.HANDCRAFTED_DIM,)
    assert np.linalg.norm(analysis.vector) == pytest.approx(1.0, abs=1e-5)
    frames = video.sample_frames(silent_clip, Limits())
    vectors = [image.features(f, {"width": f.width, "height": f.height})[1] for f in frames]
    mean = np.mean(vectors, axis=0)
    np.testing.assert_allclose(analysis.vector, mean / np.linalg.norm(mean), atol=1e-5)


def test_video_without_audio_says_so(silent_clip: bytes) -> None:
    analysis = video.analyze(silent_clip, Limits())
    assert analysis.features["has_audio"] is False
    assert "audio_rms" not in analysis.features
    assert analysis.model_input["audio"] is None
    assert "audio_vector" not in analysis.extra


def test_audio_track_features_are_present(clip_with_tone: bytes) -> None:
    analysis = video.analyze(clip_with_tone, Limits())

    row = analysis.features
    assert row["has_audio"] is True
    assert row["audio_duration_s"] == pytest.approx(3.0, abs=0.1)
    assert (row["audio_sample_rate"], row["audio_channels"]) == (16_000, 1)
    assert row["audio_rms"] == pytest.approx(0.3 / np.sqrt(2), rel=0.05)
    assert row["audio_spectral_centroid_hz"] == pytest.approx(440, abs=60)
    assert len(row["audio_mfcc_mean"]) == 13
    track = analysis.extra["audio_vector"]
    assert track.shape == (32,)
    assert np.linalg.norm(track) == pytest.approx(1.0, abs=1e-5)
    assert analysis.model_input["audio"].shape[0] == pytest.approx(3 * 16_000, rel=0.05)


def test_sample_clips(sample_dir: Path) -> None:
    for path in sorted(sample_dir.glob("sample-*/clip.mp4")):
        row = video.analyze(path.read_bytes(), Limits()).features
        assert row["duration_s"] == pytest.approx(2.0, abs=0.1)
        assert row["fps"] in (10, 12, 15)
        assert (row["width"], row["height"], row["codec"]) == (160, 120, "h264")
        assert row["frames_sampled"] == 2
        assert row["has_audio"] is True


@pytest.mark.parametrize(
    ("codec", "container_format", "name"),
    [("mpeg4", "mp4", "mpeg4"), ("libx264", "matroska", "h264"), ("libvpx-vp9", "webm", "vp9")],
)
def test_other_codecs_and_containers(codec: str, container_format: str, name: str) -> None:
    row = video.analyze(make_video(2, 5, None, codec, container_format), Limits()).features
    assert row["codec"] == name
    assert row["duration_s"] == pytest.approx(2.0, abs=0.25)
    assert row["frames_sampled"] == 2


def test_over_long_video_is_rejected(silent_clip: bytes) -> None:
    with pytest.raises(Rejected) as caught:
        video.analyze(silent_clip, Limits(max_duration_s=1.5))
    assert caught.value.stage == "decode"
    assert caught.value.reason == "video lasts 3.0 s, over the limit of 1.5 s"


def test_container_without_streams_is_rejected(sample_dir: Path) -> None:
    with pytest.raises(Rejected) as caught:
        video.analyze((sample_dir / "_bad" / "nostreams.mp4").read_bytes(), Limits())
    assert caught.value.stage == "decode"
    assert "no video stream" in caught.value.reason


def test_audio_only_container_is_no_video() -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        track = container.add_stream("aac", rate=16_000)
        track.layout = "mono"
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        chunk.sample_rate, chunk.pts = 16_000, 0
        container.mux(track.encode(chunk))
        container.mux(track.encode(None))

    with pytest.raises(Rejected, match=r"no video stream \(the container holds 1 streams\)"):
        video.analyze(buffer.getvalue(), Limits())


def test_garbage_is_rejected() -> None:
    with pytest.raises(Rejected) as caught:
        video.analyze(b"\x00\x00\x00\x18ftypisom" + bytes(100), Limits())
    assert caught.value.stage == "decode"
    assert "not a readable video" in caught.value.reason


def test_pool_frames_averages_each_video_run() -> None:
    frames = np.array([[1, 0], [1, 0], [0, 2], [2, 0], [0, 0]], np.float32)
    pooled = video.pool_frames(frames, [2, 3])
    np.testing.assert_allclose(pooled, [[1, 0], [np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-6)
    assert video.pool_frames(frames, []).shape == (0, 2)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (Limits(max_image_pixels=100), r"video frames are \d+x\d+ pixels, over the limit of 100"),
        (Limits(max_video_pixels=1000), r"video holds \d+ frames of \d+x\d+: \d+ pixels to decode"),
    ],
)
def test_frame_size_and_decode_work_are_refused_from_the_header(
    silent_clip: bytes, limits: Limits, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 295 KB MP4 of 10000x10000 frames once took 5 GB before its size was checked."""

    def decoded(*_: object) -> None:
        raise AssertionError("a frame was decoded before the header's limits were checked")

    monkeypatch.setattr(video, "sample_frames", decoded)
    with pytest.raises(Rejected, match=reason):
        video.analyze(silent_clip, limits)
