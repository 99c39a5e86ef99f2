"""Images: decode safely, measure, fingerprint and embed.

Handcrafted embedding (``braid/handcrafted-image-v1``, 32 floats, L2-normalised), used
when no image model is configured:

    [0:3]   mean R, G, B / 255
    [3:6]   standard deviation R, G, B / 255
    [6:30]  8-bin histogram of each channel (R, then G, then B), each summing to 1
    [30]    log1p(sharpness) / 10   (variance of the Laplacian of the grey image)
    [31]    log(width / height)
"""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
import polars as pl
from PIL import ExifTags, Image, ImageOps

from tasks.common import Analysis, Limits, Models, Rejected, l2_normalise

HANDCRAFTED_MODEL = "braid/handcrafted-image-v1"
HANDCRAFTED_DIM = 32
DEPENDS_ON: tuple[str, ...] = ()  # other modalities whose models and features feed this one
THUMBNAIL_SIDE = 256  # statistics and model input are computed on this reduced size
_pillow_limit_lock = threading.Lock()

# Bump when the code that computes this table's features or handcrafted vector changes:
# rows of the old version are then recomputed by the next run, beside the old ones.
FEATURE_VERSION = 2  # 2: reduced (draft) JPEG decode, statistics from Pillow histograms

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "width": pl.Int32(),
    "height": pl.Int32(),
    "format": pl.String(),
    "mode": pl.String(),
    "mean_r": pl.Float32(),
    "mean_g": pl.Float32(),
    "mean_b": pl.Float32(),
    "std_r": pl.Float32(),
    "std_g": pl.Float32(),
    "std_b": pl.Float32(),
    "brightness": pl.Float32(),
    "sharpness": pl.Float32(),
    "phash": pl.String(),
}


def probe(data: bytes, limits: Limits) -> Image.Image:
    """Open an image's header only, and refuse sizes over the pixel limit before decoding."""
    # Braid checks the claimed size itself (below) so the reason names its own limit;
    # Pillow's global bomb check would otherwise fire first with its own threshold. It is
    # lifted only while the header is read, so the rest of the process keeps Pillow's guard.
    with _pillow_limit_lock:
        pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            image = Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError as exc:
            raise Rejected("decode", "not a readable image (Pillow cannot identify it)") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise Rejected(
            "decode",
            f"image claims {width}x{height} pixels, over the limit of "
            f"{limits.max_image_pixels} (max_image_pixels)",
        )
    return image


def decode(data: bytes, limits: Limits) -> tuple[Image.Image, dict[str, Any]]:
    """Decode to an RGB image no larger than the thumbnail size, plus the original's header facts."""
    image = probe(data, limits)
    width, height = image.size
    if image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):
        width, height = height, width  # a quarter turn: report the size the photo is shown at
    header = {
        "width": width,
        "height": height,
        "format": image.format,
        "mode": image.mode,
    }
    # JPEG draft mode decodes at a reduced DCT scale directly: far cheaper than decoding
    # at full size and resizing. It is asked for the thumbnail's own size (aspect kept), so
    # a 640x480 photo decodes at 320x240 for its 256x192 thumbnail; asked for a square, it
    # would find no scale that covers both sides and decode at full size.
    image.draft("RGB", thumbnail_size(image.size))
    try:
        image.load()
    except OSError as exc:
        raise Rejected("decode", f"corrupt or truncated image: {exc}") from exc
    ImageOps.exif_transpose(image, in_place=True)  # no copy when there is nothing to turn
    # Shrink before converting where resizing works on the decoded mode (Pillow resizes
    # RGBA and LA with premultiplied alpha, so flattening after is the same picture):
    # converting a 64-megapixel RGBA image at full size made four full copies (1.2 GB).
    if image.mode in _RESIZABLE:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    if image.mode != "RGB":
        image = _to_rgb(image)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    return image, header


_RESIZABLE = frozenset({"RGB", "RGBA", "L", "LA"})


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white so alpha does not read as black; scale 16-bit grey."""
    if image.mode.startswith("I;16"):
        # Pillow clips 16-bit levels to 8 bits rather than scaling them: most would read as white.
        return Image.fromarray((np.asarray(image) >> 8).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "P", "PA") and (
        image.mode != "P" or "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def sharpness(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low for blurred images."""
    g = grey.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(laplacian.var())


def thumbnail_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size ``Image.thumbnail`` gives an image of ``size`` in the THUMBNAIL_SIDE box."""
    width, height = size
    scale = min(1.0, THUMBNAIL_SIDE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def features(image: Image.Image, header: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Scalar features and the handcrafted vector of a decoded RGB image.

    Means, standard deviations and histograms all come from Pillow's 256-level histogram
    of each band (one pass in C): exact population statistics, an order of magnitude
    cheaper than reducing the pixel array in numpy.
    """
    import imagehash

    levels = np.arange(256, dtype=np.float64)
    counts = np.asarray(image.histogram(), dtype=np.float64).reshape(3, 256)
    n = max(float(counts[0].sum()), 1.0)
    mean = counts @ levels / n
    std = np.sqrt(np.maximum(counts @ levels**2 / n - mean**2, 0.0))
    grey_image = image.convert("L")
    grey_counts = np.asarray(grey_image.histogram(), dtype=np.float64)
    brightness = float(grey_counts @ levels / n)
    sharp = sharpness(np.asarray(grey_image, dtype=np.float32))
    histograms = counts.reshape(3, 8, 32).sum(axis=2) / n  # 8 bins of 32 levels per band
    vector = np.concatenate(
        [
            mean / 255.0,
            std / 255.0,
            *histograms,
            [np.log1p(sharp) / 10.0, np.log(max(header["width"], 1) / max(header["height"], 1))],
        ]
    )
    row = {
        **header,
        "mean_r": float(mean[0]),
        "mean_g": float(mean[1]),
        "mean_b": float(mean[2]),
        "std_r": float(std[0]),
        "std_g": float(std[1]),
        "std_b": float(std[2]),
        "brightness": brightness,
        "sharpness": sharp,
        "phash": str(imagehash.phash(grey_image)),
    }
    return row, l2_normalise(vector)


def analyze(data: bytes, limits: Limits, media_type: str = "") -> Analysis:
    """Decode and measure one image; the model input is the RGB thumbnail."""
    image, header = decode(data, limits)
    row, vector = features(image, header)
    return Analysis(features=row, vector=vector, model_input=np.asarray(image))


def embed(inputs: list[np.ndarray], model_id: str) -> np.ndarray:
    """Embed RGB arrays with an image model (a Hugging Face id or local path)."""
    from tasks.media.encoders import embed_images

    return embed_images(inputs, model_id)


def encoder(models: Models) -> tuple[str | None, str]:
    """The configured model that embeds images (None: the handcrafted vector), and its kind."""
    return models.image, "image"


def embed_batch(analyses: list[Analysis], models: Models, limits: Limits) -> dict[str, Any]:
    """The embedding column of a batch: one model call, or the handcrafted vectors."""
    if models.image is None:
        return {"embedding": np.stack([a.vector for a in analyses])}
    return {"embedding": embed([a.model_input for a in analyses], models.image)}
