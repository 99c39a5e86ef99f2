"""The photo-and-caption job of figure h: N sample folders, each a 640x480 JPEG and a caption.

Every photo is a crop of one of scikit-image's bundled colour photos (scaled up first
where the photo is smaller than 640x480, then by a random factor up to 1.6), with a
colour variant applied (channel gains, a gamma, a channel swap or greyscale), saved as a baseline JPEG at quality 90;
every caption is one line naming what the photo shows and how it was varied. A sample
folder holds ``photo.jpg`` and ``caption.txt``. The same ``n`` and ``seed`` always write
the same bytes.

    python -m benchmarks.photos ROOT N [--seed 0]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 640, 480
# scikit-image's bundled colour photos, and what each shows (for the captions).
PHOTOS = {
    "astronaut": "an astronaut in a white suit beside a flag",
    "chelsea": "a ginger cat looking up",
    "coffee": "a cup of coffee on a saucer",
    "rocket": "a rocket on its launch pad",
    "hubble_deep_field": "distant galaxies in deep space",
    "immunohistochemistry": "stained tissue under a microscope",
    "retina": "the retina of an eye",
}
VARIANTS = ("as shot", "warm", "cool", "faded", "punchy", "swapped colours", "black and white")


def make_photos(root: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` sample folders under ``root/photos-<n>-<seed>`` (once); return that folder."""
    source = Path(root) / f"photos-{n}-{seed}"
    done = source.with_suffix(".done")
    if done.exists():
        return source
    bases = _bases()
    names = sorted(bases)
    rng = np.random.default_rng([seed, n])
    for index in range(n):
        name = names[index % len(names)]
        variant = VARIANTS[int(rng.integers(len(VARIANTS)))]
        pixels = _crop(bases[name], rng)
        folder = source / f"sample-{index:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "photo.jpg").write_bytes(_jpeg(_vary(pixels, variant, rng)))
        caption = f"{PHOTOS[name]}, {variant}, frame {index}"
        (folder / "caption.txt").write_text(caption + "\n", encoding="utf-8")
    done.touch()
    return source


def _bases() -> dict[str, np.ndarray]:
    """Each bundled photo as RGB uint8, at least 640x480 (scaled up where smaller)."""
    from PIL import Image
    from skimage import data

    bases = {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        scale = max(WIDTH / image.width, HEIGHT / image.height, 1.0)
        if scale > 1.0:
            size = (round(image.width * scale + 0.5), round(image.height * scale + 0.5))
            image = image.resize(size, Image.Resampling.BICUBIC)
        bases[name] = np.asarray(image)
    return bases


def _crop(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random 640x480 window of a photo scaled by a random factor (so no two are alike)."""
    from PIL import Image

    scale = float(rng.uniform(1.0, 1.6))
    height, width = pixels.shape[:2]
    size = (max(WIDTH, round(width * scale)), max(HEIGHT, round(height * scale)))
    pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    top = int(rng.integers(pixels.shape[0] - HEIGHT + 1))
    left = int(rng.integers(pixels.shape[1] - WIDTH + 1))
    return pixels[top : top + HEIGHT, left : left + WIDTH]


def _vary(pixels: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    """One colour variant of an RGB crop."""
    x = pixels.astype(np.float32) / 255.0
    jitter = rng.uniform(0.95, 1.05, size=3).astype(np.float32)
    if variant == "warm":
        x = x * np.array([1.12, 1.0, 0.85], np.float32) * jitter
    elif variant == "cool":
        x = x * np.array([0.85, 1.0, 1.12], np.float32) * jitter
    elif variant == "faded":
        x = 0.25 + 0.6 * x**0.8
    elif variant == "punchy":
        x = x**1.4 * 1.1
    elif variant == "swapped colours":
        x = x[..., [2, 0, 1]]
    elif variant == "black and white":
        x = np.repeat((x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=2)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.photos", description=__doc__)
    parser.add_argument("root")
    parser.add_argument("n", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_photos(args.root, args.n, args.seed))


if __name__ == "__main__":
    main()
