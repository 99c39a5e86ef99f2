"""Images: the original's size and format, colour and sharpness, a fingerprint, a unit vector."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tasks.common import Limits, Rejected
from tasks.media import image


def encode(picture: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def checkerboard(width: int, height: int, square: int = 8) -> Image.Image:
    y, x = np.indices((height, width))
    board = ((x // square + y // square) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([board] * 3, axis=-1))


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_reports_the_original_size_not_the_thumbnail(image_format: str) -> None:
    picture = checkerboard(300, 200).convert("L")  # grey keeps uncompressed BMP and TIFF small
    data = encode(picture, image_format)

    analysis = image.analyze(data, Limits())

    assert len(data) <= 200_000
    row = analysis.features
    assert (row["width"], row["height"]) == (300, 200)
    assert row["format"] == image_format
    # Statistics and model input come from a thumbnail no larger than THUMBNAIL_SIDE.
    assert analysis.model_input.shape == (171, 256, 3)
    assert analysis.model_input.dtype == np.uint8


def test_colour_statistics_of_a_flat_colour() -> None:
    row = image.analyze(
        encode(Image.new("RGB", (40, 30), (200, 100, 50)), "PNG"), Limits()
    ).features
    assert (row["mean_r"], row["mean_g"], row["mean_b"]) == (200, 100, 50)
    assert row["std_r"] == row["std_g"] == row["std_b"] == 0
    assert row["sharpness"] == 0
    assert row["brightness"] == pytest.approx(0.299 * 200 + 0.587 * 100 + 0.114 * 50, abs=1)


def test_blurred_image_is_less_sharp_than_the_original() -> None:
    sharp = checkerboard(128, 128)
    blurred = sharp.filter(ImageFilter.GaussianBlur(3))

    sharp_row = image.analyze(encode(sharp, "PNG"), Limits()).features
    blurred_row = image.analyze(encode(blurred, "PNG"), Limits()).features

    assert blurred_row["sharpness"] < sharp_row["sharpness"] / 10


def test_phash_is_16_hex_digits_and_survives_re_encoding() -> None:
    picture = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ).resize((256, 256), Image.Resampling.BICUBIC)

    as_png = image.analyze(encode(picture, "PNG"), Limits()).features["phash"]
    as_jpeg = image.analyze(encode(picture, "JPEG", quality=90), Limits()).features["phash"]
    other = image.analyze(encode(checkerboard(256, 256), "PNG"), Limits()).features["phash"]

    assert len(as_png) == 16
    int(as_png, 16)  # hexadecimal
    hamming = bin(int(as_png, 16) ^ int(as_jpeg, 16)).count("1")
    assert hamming <= 4
    assert bin(int(as_png, 16) ^ int(other, 16)).count("1") > 10


def test_handcrafted_vector_has_its_dimension_and_unit_norm(sample_dir: Path) -> None:
    for path in sorted(sample_dir.glob("sample-*/image.*")):
        analysis = image.analyze(path.read_bytes(), Limits())
        assert analysis.vector.shape == (image.HANDCRAFTED_DIM,)
        assert analysis.vector.dtype == np.float32
        assert np.linalg.norm(analysis.vector) == pytest.approx(1.0, abs=1e-5)
        with Image.open(path) as original:
            assert (analysis.features["width"], analysis.features["height"]) == original.size


def test_different_images_have_different_vectors() -> None:
    red = image.analyze(encode(Image.new("RGB", (32, 32), (255, 0, 0)), "PNG"), Limits()).vector
    blue = image.analyze(encode(Image.new("RGB", (32, 32), (0, 0, 255)), "PNG"), Limits()).vector
    assert float(red @ blue) < 0.9


def test_transparent_pixels_read_as_white_not_black() -> None:
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    row = image.analyze(encode(clear, "PNG"), Limits()).features
    assert row["mode"] == "RGBA"
    assert (row["mean_r"], row["mean_g"], row["mean_b"]) == (255, 255, 255)


def test_grey_image_keeps_its_mode_and_level() -> None:
    row = image.analyze(encode(Image.new("L", (20, 10), 90), "PNG"), Limits()).features
    assert row["mode"] == "L"
    assert row["mean_r"] == row["mean_g"] == row["mean_b"] == 90


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    # A depth map or scan: 16-bit levels from dark to mid-grey.
    levels = np.linspace(0, 32767, 64 * 64).reshape(64, 64).astype(np.uint16)
    row = image.analyze(encode(Image.fromarray(levels), "PNG"), Limits()).features
    assert row["mode"] == "I;16"
    assert row["brightness"] == pytest.approx(64, abs=3)


def test_exif_rotated_photo_reports_the_size_it_is_shown_at() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    data = encode(checkerboard(60, 40), "JPEG", exif=exif)

    analysis = image.analyze(data, Limits())

    assert (analysis.features["width"], analysis.features["height"]) == (40, 60)
    assert analysis.model_input.shape == (60, 40, 3)


def test_tiny_image_is_measured_without_error() -> None:
    analysis = image.analyze(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), Limits())
    assert (analysis.features["width"], analysis.features["height"]) == (1, 1)
    assert analysis.features["sharpness"] == 0
    assert np.linalg.norm(analysis.vector) == pytest.approx(1.0, abs=1e-5)


def test_sharpness_of_a_known_pattern() -> None:
    # A single bright pixel: the Laplacian is -4*255 there and 255 at its four neighbours.
    grey = np.zeros((5, 5), np.float32)
    grey[2, 2] = 255
    interior = np.zeros((3, 3))
    interior[1, 1] = -4 * 255
    interior[0, 1] = interior[1, 0] = interior[1, 2] = interior[2, 1] = 255
    assert image.sharpness(grey) == pytest.approx(interior.var())


def test_pixel_bomb_is_refused_before_decoding(sample_dir: Path) -> None:
    with pytest.raises(Rejected) as caught:
        image.analyze((sample_dir / "_bad" / "bomb.png").read_bytes(), Limits())
    assert caught.value.stage == "decode"
    assert "100000x100000" in caught.value.reason
    assert "max_image_pixels" in caught.value.reason


def test_pixel_limit_is_configurable() -> None:
    data = encode(checkerboard(100, 100), "PNG")
    with pytest.raises(Rejected, match="over the limit of 9999"):
        image.analyze(data, Limits(max_image_pixels=9_999))
    assert image.analyze(data, Limits(max_image_pixels=10_000)).features["width"] == 100


def test_truncated_jpeg_is_refused(sample_dir: Path) -> None:
    with pytest.raises(Rejected) as caught:
        image.analyze((sample_dir / "_bad" / "truncated.jpg").read_bytes(), Limits())
    assert caught.value.stage == "decode"
    assert "truncated" in caught.value.reason


def test_bytes_that_are_no_image_are_refused() -> None:
    with pytest.raises(Rejected) as caught:
        image.analyze(b"plain words, not pixels", Limits())
    assert caught.value.stage == "decode"
    assert "not a readable image" in caught.value.reason


def test_refusing_a_bomb_leaves_pillows_own_guard_on(sample_dir: Path) -> None:
    guard = Image.MAX_IMAGE_PIXELS
    with pytest.raises(Rejected):
        image.analyze((sample_dir / "_bad" / "bomb.png").read_bytes(), Limits())
    assert Image.MAX_IMAGE_PIXELS == guard is not None


def test_statistics_from_histograms_equal_the_pixels_own() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)

    row, vector = image.features(picture, {"width": 160, "height": 120})

    flat = pixels.reshape(-1, 3).astype(np.float64)
    for i, band in enumerate("rgb"):
        assert row[f"mean_{band}"] == pytest.approx(flat[:, i].mean(), abs=1e-9)
        assert row[f"std_{band}"] == pytest.approx(flat[:, i].std(), abs=1e-9)
    histograms = [
        np.histogram(pixels[..., i], bins=8, range=(0, 256))[0] / 19_200 for i in range(3)
    ]
    expected = np.concatenate(
        [flat.mean(axis=0) / 255, flat.std(axis=0) / 255, *histograms,
         [np.log1p(row["sharpness"]) / 10, np.log(160 / 120)]]
    )  # fmt: skip
    assert vector == pytest.approx(expected / np.linalg.norm(expected), abs=1e-6)
    grey = np.asarray(picture.convert("L"), dtype=np.float64)
    assert row["brightness"] == pytest.approx(grey.mean(), abs=1e-9)


def test_a_jpeg_decoded_at_reduced_scale_measures_like_its_full_decode() -> None:
    """A 640x480 JPEG decodes at half scale (draft) for its 256x192 thumbnail; its
    features stay within the tolerance the README documents of the same pixels decoded
    at full size (here: the same photo as PNG, which has no reduced decode)."""
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((640, 480))
    jpeg = encode(photo, "JPEG", quality=95)
    full = encode(Image.open(io.BytesIO(jpeg)).convert("RGB"), "PNG")  # identical pixels

    reduced, _ = image.decode(jpeg, Limits())
    assert reduced.size == image.thumbnail_size((640, 480)) == (256, 192)
    a = image.analyze(jpeg, Limits()).features
    b = image.analyze(full, Limits()).features
    for key in ("mean_r", "mean_g", "mean_b", "brightness"):
        assert a[key] == pytest.approx(b[key], abs=0.5)
    for key in ("std_r", "std_g", "std_b"):
        assert a[key] == pytest.approx(b[key], abs=1.0)
    assert a["sharpness"] == pytest.approx(b["sharpness"], rel=0.25)
    import imagehash

    assert imagehash.hex_to_hash(a["phash"]) - imagehash.hex_to_hash(b["phash"]) <= 6
