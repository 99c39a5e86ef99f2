"""Realistic sample data for demos, tests and benchmarks, made locally and deterministically.

Braid needs multimodal input that looks like the real thing (photographs with captions,
speech-like audio, H.264 clips, sensor logs, and files that are broken in the ways real
files are broken) without downloading anything. Everything here is derived from
``(seed, sample index)`` alone, so the same call writes byte-identical files: content
hashes are object ids downstream, and a sample that changed on every run would look like
a new object every time.

Only the ``braid samples`` command uses this module, so it may import PIL and numpy at
the top; the heavier media libraries are imported where they are used.
"""

from __future__ import annotations

import csv
import io
import itertools
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageEnhance

Signal = npt.NDArray[np.float64]
Rgb = tuple[int, int, int]

MAX_SIDE = 320
VIDEO_SIZE = (160, 120)
SAMPLE_RATES = (16_000, 22_050, 44_100)
# Keeps each file within the ≤ 200 KB budget that media fixtures have.
MAX_FILE_BYTES = 190_000
# Salt for the _bad/ folder's random stream, so it never coincides with a sample's.
BAD_STREAM = 2**31 - 1


def make_samples(out_dir: str | Path, n: int = 24, seed: int = 0) -> list[Path]:
    """Write n sample folders plus a _bad/ folder under out_dir; return the files written (sorted)."""
    out = Path(out_dir)
    written: list[Path] = []
    seen_captions: set[str] = set()
    for index in range(n):
        # Seeding by (seed, index) rather than one running stream keeps sample-0003 the
        # same whether 3 or 300 samples are made.
        rng = np.random.default_rng([seed, index])
        written += write_sample(out / f"sample-{index:04d}", rng, seen_captions)
    written += write_bad_files(out / "_bad", np.random.default_rng([seed, BAD_STREAM]))
    return sorted(written)


def write_sample(folder: Path, rng: np.random.Generator, seen_captions: set[str]) -> list[Path]:
    """Write one sample's image, caption, audio, clip and sensor log into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    # One child stream per modality, so changing how one is drawn leaves the others alone.
    image_rng, audio_rng, video_rng, sensor_rng = rng.spawn(4)
    image, caption = draw_image_with_unique_caption(image_rng, seen_captions)
    return [
        write_image(folder, image, image_rng),
        write_text(folder / "caption.txt", caption),
        write_audio(folder, audio_rng),
        write_clip(folder / "clip.mp4", video_rng),
        write_sensor_log(folder / "sensor.csv", sensor_rng),
    ]


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text with a trailing newline."""
    path.write_text(text + "\n", encoding="utf-8")
    return path


def replace_variant(folder: Path, stem: str, suffix: str, alternatives: Iterable[str]) -> Path:
    """Return folder/stem+suffix after removing its siblings with other suffixes.

    A rerun with another seed may pick PNG where JPEG was before; the old file must go so
    each sample keeps exactly one image and one audio file.
    """
    for other in alternatives:
        if other != suffix:
            (folder / f"{stem}{other}").unlink(missing_ok=True)
    return folder / f"{stem}{suffix}"


# Images ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    """A photograph bundled with scikit-image, and how a caption names it."""

    loader: str
    kind: str
    subject: str
    grey: bool = False


# Only images that ship inside the scikit-image wheel: the others are fetched with pooch.
PHOTOS = (
    Photo(
        "astronaut",
        "photograph",
        "the astronaut Eileen Collins in an orange flight suit, in front of an American flag",
    ),
    Photo("chelsea", "close-up photograph", "the face of a tabby cat (Chelsea) with green eyes"),
    Photo("coffee", "photograph", "a cup of coffee with a spoon on its saucer"),
    Photo("rocket", "photograph", "a rocket standing on its launch pad"),
    Photo(
        "camera", "black-and-white photograph", "a man in a coat behind a camera on a tripod", True
    ),
    Photo("coins", "black-and-white photograph", "rows of old coins on a dark background", True),
    Photo("moon", "black-and-white photograph", "the cratered surface of the moon", True),
    Photo("hubble_deep_field", "telescope image", "distant galaxies in the Hubble Deep Field"),
)

NUMBER_WORDS = ("no", "one", "two", "three", "four")


@cache
def load_photo(loader: str) -> Image.Image:
    """Load a bundled scikit-image photograph as RGB (grayscale ones are converted)."""
    from skimage import data

    pixels = np.asarray(getattr(data, loader)())
    image = Image.fromarray(pixels)
    return image.convert("RGB")


def draw_image_with_unique_caption(
    rng: np.random.Generator, seen_captions: set[str]
) -> tuple[Image.Image, str]:
    """Draw images until one has a caption no earlier sample used.

    Captions are files too, and no two samples may share a file; redrawing rather than
    numbering the caption keeps it a plain description of its image.
    """
    for _ in range(100):
        image, caption = draw_image(rng)
        if caption not in seen_captions:
            seen_captions.add(caption)
            return image, caption
    raise RuntimeError("could not find an unused caption in 100 draws")


def draw_image(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A jittered photograph or a drawn scene, with a caption that describes it."""
    if rng.random() < 0.3:
        return draw_scene(rng)
    return jitter_photo(rng)


def jitter_photo(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Crop, rotate, tint and resize one bundled photograph; describe what was done."""
    photo = PHOTOS[rng.integers(len(PHOTOS))]
    image = load_photo(photo.loader)
    angle = int(rng.integers(-12, 13))
    # PIL turns counter-clockwise for positive angles.
    image = image.rotate(angle, resample=Image.Resampling.BICUBIC)
    image, region = crop_inside_rotation(image, angle, rng)
    image, colour_note = jitter_colours(image, rng, grey=photo.grey)
    image = fit_longest_side(image, int(rng.integers(200, MAX_SIDE + 1)))

    degrees = f"{abs(angle)} degree{'' if abs(angle) == 1 else 's'}"
    turned = f" and rotated {degrees} {'counter-clockwise' if angle > 0 else 'clockwise'}"
    caption = (
        f"A {photo.kind} of {photo.subject}, cropped to {region}{turned if angle else ''}. "
        f"{colour_note}."
    )
    return image, caption


def crop_inside_rotation(
    image: Image.Image, angle: int, rng: np.random.Generator
) -> tuple[Image.Image, str]:
    """Crop a random window that avoids the black corners rotation leaves; name its region."""
    width, height = image.size
    margin = int(np.ceil(abs(np.sin(np.radians(angle))) * max(width, height) / 2))
    usable_w, usable_h = width - 2 * margin, height - 2 * margin
    # Similar scales in both directions keep the crop close to the photo's own shape.
    scale = rng.uniform(0.55, 0.85)
    crop_w, crop_h = int(usable_w * scale), int(usable_h * scale * rng.uniform(0.9, 1.1))
    left = margin + int(rng.integers(0, usable_w - crop_w + 1))
    top = margin + int(rng.integers(0, usable_h - crop_h + 1))
    centre_x = (left + crop_w / 2) / width
    centre_y = (top + crop_h / 2) / height
    return image.crop((left, top, left + crop_w, top + crop_h)), name_region(centre_x, centre_y)


def name_region(x: float, y: float) -> str:
    """Name where a point lies in a 3-by-3 grid over the image, the way a person would."""
    vertical = "upper" if y < 0.42 else "lower" if y > 0.58 else ""
    horizontal = "left" if x < 0.42 else "right" if x > 0.58 else ""
    place = "-".join(part for part in (vertical, horizontal) if part)
    return f"the {place} part" if place else "the centre"


def jitter_colours(
    image: Image.Image, rng: np.random.Generator, grey: bool
) -> tuple[Image.Image, str]:
    """Shift warmth and brightness; return the image and a sentence describing the colours."""
    warmth = rng.uniform(-0.15, 0.15)
    brightness = rng.uniform(0.8, 1.2)
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.85, 1.2))
    image = ImageEnhance.Brightness(image).enhance(brightness)
    pixels = np.asarray(image, dtype=np.float64)
    pixels = pixels * np.array([1 + warmth, 1.0, 1 - warmth])
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    if warmth > 0.05:
        tone = "It has a warm sepia tint" if grey else "Colours are warm"
    elif warmth < -0.05:
        tone = "It has a cool blue tint" if grey else "Colours are cool and bluish"
    else:
        tone = "It keeps its grey tones" if grey else "Colours are natural"
    if brightness > 1.08:
        tone += ", a little brighter than the original"
    elif brightness < 0.92:
        tone += ", a little darker than the original"
    return image, tone


def fit_longest_side(image: Image.Image, side: int) -> Image.Image:
    """Resize so the longest side is at most side pixels, keeping the aspect ratio."""
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class Scene:
    """The choices behind one drawn scene; the caption is written from these."""

    sunset: bool
    house: str
    roof: str
    trees: int
    clouds: int
    kite: str | None


COLOURS: dict[str, Rgb] = {
    "red": (200, 40, 40),
    "blue": (50, 90, 200),
    "white": (240, 240, 235),
    "yellow": (240, 210, 60),
    "pink": (235, 140, 170),
    "brown": (120, 70, 30),
    "grey": (120, 120, 125),
    "black": (30, 30, 30),
    "purple": (130, 60, 160),
    "orange": (240, 140, 40),
    "green": (40, 140, 50),
}


def draw_scene(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Draw a sky, sun, house, trees and clouds with PIL; caption what was drawn."""
    scene = Scene(
        sunset=bool(rng.random() < 0.3),
        house=str(rng.choice(["red", "blue", "white", "yellow", "pink"])),
        roof=str(rng.choice(["brown", "grey", "black"])),
        trees=int(rng.integers(0, 4)),
        clouds=int(rng.integers(0, 4)),
        kite=str(rng.choice(["red", "purple", "orange"])) if rng.random() < 0.3 else None,
    )
    width, height = (MAX_SIDE, 240) if rng.random() < 0.5 else (MAX_SIDE, MAX_SIDE)
    image = render_scene(scene, width, height, rng)
    return image, describe_scene(scene)


def render_scene(scene: Scene, width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Paint a scene's elements at random but sensible positions."""
    top, horizon = (
        ((90, 60, 140), (250, 150, 70)) if scene.sunset else ((60, 120, 220), (170, 210, 245))
    )
    image = vertical_gradient(width, height, top, horizon)
    draw = ImageDraw.Draw(image)
    ground_y = int(height * rng.uniform(0.62, 0.75))
    draw.rectangle((0, ground_y, width, height), fill=(70, 150, 60))

    # Five slots across the picture: the house takes one, and the sun, kite and trees take
    # others, so nothing the caption names is hidden behind something else.
    slot = width / 5
    house_slot = int(rng.integers(1, 4))
    sun_slot, kite_slot = rng.choice([s for s in range(5) if s != house_slot], 2, replace=False)
    centre = [s * slot + slot / 2 for s in range(5)]

    sun_r = int(rng.integers(14, 26))
    sun_y = ground_y * (rng.uniform(0.35, 0.45) if scene.sunset else rng.uniform(0.15, 0.3))
    sun_box = (centre[sun_slot] - sun_r, sun_y - sun_r, centre[sun_slot] + sun_r, sun_y + sun_r)
    draw.ellipse(sun_box, fill=COLOURS["orange" if scene.sunset else "yellow"])

    cloud_fill = COLOURS["pink" if scene.sunset else "white"]
    for _ in range(scene.clouds):
        x, y = int(rng.integers(0, width - 58)), int(rng.integers(5, max(6, ground_y // 3)))
        for dx in (0, 15, 30):
            draw.ellipse((x + dx, y, x + dx + 28, y + 16), fill=cloud_fill)

    draw_house(draw, centre[house_slot], ground_y, slot * 1.1, scene)
    tree_slots = [s for s in range(5) if s != house_slot]
    for tree_slot in rng.choice(tree_slots, size=scene.trees, replace=False):
        draw_tree(draw, centre[tree_slot], ground_y, slot * 0.4)

    if scene.kite:
        kite_x, kite_y = centre[kite_slot], ground_y * rng.uniform(0.3, 0.45)
        diamond = [
            (kite_x, kite_y - 14),
            (kite_x + 10, kite_y),
            (kite_x, kite_y + 18),
            (kite_x - 10, kite_y),
        ]
        draw.polygon(diamond, fill=COLOURS[scene.kite])
        string = (kite_x, kite_y + 18, kite_x + slot / 3, ground_y + 10)
        draw.line(string, fill=COLOURS["black"])
    return image


def vertical_gradient(width: int, height: int, top: Rgb, bottom: Rgb) -> Image.Image:
    """An RGB image fading from top colour to bottom colour."""
    weight = np.linspace(0, 1, height)[:, None, None]
    pixels = (1 - weight) * np.array(top) + weight * np.array(bottom)
    rows = np.broadcast_to(pixels, (height, width, 3))
    return Image.fromarray(rows.astype(np.uint8))


def draw_house(draw: ImageDraw.ImageDraw, x: float, ground: int, w: float, scene: Scene) -> None:
    """A box with a triangular roof, a door and a window, standing on the ground."""
    h = w * 0.8
    body = (x - w / 2, ground - h, x + w / 2, ground)
    draw.rectangle(body, fill=COLOURS[scene.house], outline=COLOURS["black"])
    roof = [(x - w / 2 - 6, ground - h), (x + w / 2 + 6, ground - h), (x, ground - h - w * 0.5)]
    draw.polygon(roof, fill=COLOURS[scene.roof])
    draw.rectangle((x - w * 0.1, ground - h * 0.45, x + w * 0.1, ground), fill=COLOURS["brown"])
    draw.rectangle(
        (x + w * 0.2, ground - h * 0.75, x + w * 0.4, ground - h * 0.5), fill=(200, 230, 250)
    )


def draw_tree(draw: ImageDraw.ImageDraw, x: float, ground: int, radius: float) -> None:
    """A brown trunk under a round green crown."""
    draw.rectangle((x - 4, ground - radius * 1.6, x + 4, ground), fill=COLOURS["brown"])
    crown_y = ground - radius * 2
    draw.ellipse(
        (x - radius, crown_y - radius, x + radius, crown_y + radius), fill=COLOURS["green"]
    )


def describe_scene(scene: Scene) -> str:
    """Write the caption of a drawn scene from its choices."""
    sun = "an orange sun" if scene.sunset else "a yellow sun"
    things = [f"{sun} above a {scene.house} house with a {scene.roof} roof"]
    if scene.trees:
        things.append(count_phrase(scene.trees, "green tree"))
    if scene.clouds:
        things.append(count_phrase(scene.clouds, "pink cloud" if scene.sunset else "white cloud"))
    if scene.kite:
        things.append(f"{'an' if scene.kite == 'orange' else 'a'} {scene.kite} kite")
    listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    sky = "an evening sky at sunset" if scene.sunset else "a blue sky"
    return f"A drawn scene: {listed}, on green grass under {sky}."


def count_phrase(count: int, noun: str) -> str:
    """'one green tree', 'three white clouds'."""
    return f"{NUMBER_WORDS[count]} {noun}{'' if count == 1 else 's'}"


def write_image(folder: Path, image: Image.Image, rng: np.random.Generator) -> Path:
    """Save as JPEG, or sometimes as PNG, the two formats cameras and tools write most."""
    suffix = ".png" if rng.random() < 0.25 else ".jpg"
    path = replace_variant(folder, "image", suffix, (".jpg", ".png"))
    if suffix == ".png":
        # Photographs compress poorly as PNG; a smaller one stays within the size budget.
        fit_longest_side(image, 200).save(path, format="PNG", optimize=True)
    else:
        image.save(path, format="JPEG", quality=int(rng.integers(80, 93)))
    return path


# Audio -------------------------------------------------------------------------------

# First three formants (Hz) of adult vowels: what makes a buzz sound like a voice.
VOWEL_FORMANTS = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (270, 2290, 3010),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
}
# Gain and bandwidth (Hz) of the first, second and third formant: higher ones are weaker and wider.
FORMANT_SHAPE = ((1.0, 60), (0.5, 90), (0.25, 120))
SENTENCES = (
    "The cat is sleeping on the warm windowsill.",
    "Please bring the coffee to the meeting room.",
    "The rocket launch is scheduled for tomorrow morning.",
    "Two green trees stand next to the red house.",
    "Sensor readings look normal for this afternoon.",
    "The coins were found in an old wooden box.",
)


def write_audio(folder: Path, rng: np.random.Generator) -> Path:
    """Synthesise a 1-3 s clip and write it as WAV or FLAC, mono or stereo."""
    rate = int(rng.choice(SAMPLE_RATES))
    channels = int(rng.integers(1, 3))
    suffix = ".flac" if rng.random() < 0.5 else ".wav"
    pcm_bytes_per_second = rate * channels * 2
    # FLAC about halves 16-bit PCM, so a FLAC clip may last twice as long within the size
    # budget; where a WAV could not last 1.2 s, it has to be FLAC.
    if MAX_FILE_BYTES / pcm_bytes_per_second < 1.2:
        suffix = ".flac"
    compression = 2 if suffix == ".flac" else 1
    longest = min(3.0, compression * MAX_FILE_BYTES / pcm_bytes_per_second)
    seconds = round(float(rng.uniform(1.0, longest)), 2)

    kind = str(rng.choice(["tone", "chord", "noise", "vowels", "speech"]))
    mono = synthesise(kind, rng, rate, seconds)
    signal = to_stereo(mono, rng, rate) if channels == 2 else mono[:, None]

    import soundfile

    path = replace_variant(folder, "audio", suffix, (".wav", ".flac"))
    audio_format = "FLAC" if suffix == ".flac" else "WAV"
    soundfile.write(path, signal, rate, format=audio_format, subtype="PCM_16")
    return path


def synthesise(kind: str, rng: np.random.Generator, rate: int, seconds: float) -> Signal:
    """A mono signal of the given kind, peaking below full scale."""
    synths: dict[str, Callable[[np.random.Generator, int, float], Signal]] = {
        "tone": synth_tone,
        "chord": synth_chord,
        "noise": synth_noise,
        "vowels": synth_vowels,
        "speech": speech_or_vowels,
    }
    signal = synths[kind](rng, rate, seconds)
    peak = np.max(np.abs(signal)) or 1.0
    return signal / peak * rng.uniform(0.3, 0.8)


def time_axis(rate: int, seconds: float) -> Signal:
    """Sample times in seconds."""
    return np.arange(int(rate * seconds)) / rate


def fade(signal: Signal, rate: int, seconds: float = 0.02) -> Signal:
    """Ramp the ends so the clip starts and stops without a click."""
    ramp = min(len(signal) // 2, int(rate * seconds))
    envelope = np.ones(len(signal))
    envelope[:ramp] = np.linspace(0, 1, ramp)
    envelope[len(signal) - ramp :] = np.linspace(1, 0, ramp)
    return signal * envelope


def synth_tone(rng: np.random.Generator, rate: int, seconds: float) -> Signal:
    """A steady note with one overtone and a gentle vibrato."""
    t = time_axis(rate, seconds)
    freq = rng.uniform(200, 1000) * (1 + 0.005 * np.sin(2 * np.pi * rng.uniform(4, 6) * t))
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return fade(np.sin(phase) + 0.3 * np.sin(2 * phase), rate)


def synth_chord(rng: np.random.Generator, rate: int, seconds: float) -> Signal:
    """A struck major or minor triad that decays, like a piano chord."""
    t = time_axis(rate, seconds)
    root = int(rng.integers(48, 68))
    third = 4 if rng.random() < 0.5 else 3
    signal = np.zeros_like(t)
    for note in (root, root + third, root + 7):
        freq = 440 * 2 ** ((note - 69) / 12)
        for harmonic in range(1, 5):
            signal += np.sin(2 * np.pi * freq * harmonic * t) / harmonic
    return fade(signal * np.exp(-t * rng.uniform(1.0, 3.0)), rate, 0.005)


def synth_noise(rng: np.random.Generator, rate: int, seconds: float) -> Signal:
    """Band-passed noise with slow gusts, like wind or a distant road."""
    from scipy.signal import butter, sosfilt

    t = time_axis(rate, seconds)
    low = rng.uniform(100, 800)
    band = butter(4, [low, low * rng.uniform(1.5, 4)], btype="bandpass", fs=rate, output="sos")
    noise = sosfilt(band, rng.standard_normal(len(t)))
    gusts = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, np.pi))
    return fade(noise * gusts, rate, 0.1)


def synth_vowels(rng: np.random.Generator, rate: int, seconds: float) -> Signal:
    """Speech-like syllables: a buzzing voice shaped by vowel formants, with falling pitch."""
    from scipy.signal import lfilter

    t = time_axis(rate, seconds)
    # Pitch falls over the clip, as it does at the end of a spoken statement.
    pitch = rng.uniform(100, 220) * (1 - 0.2 * t / seconds)
    buzz = 2 * (np.cumsum(pitch) / rate % 1) - 1  # a sawtooth has a voice's falling harmonics
    bounds = np.linspace(0, len(t), int(rng.integers(3, 7)) + 1).astype(int)
    voice = np.zeros_like(t)
    for start, stop in itertools.pairwise(bounds):
        formants = VOWEL_FORMANTS[str(rng.choice(list(VOWEL_FORMANTS)))]
        syllable = np.zeros(stop - start)
        for freq, (gain, bandwidth) in zip(formants, FORMANT_SHAPE, strict=True):
            b, a = resonator(freq, bandwidth, rate)
            syllable += gain * lfilter(b, a, buzz[start:stop])
        # Voiced in the middle, quiet at the edges: the gaps between syllables.
        voice[start:stop] = syllable * np.sin(np.linspace(0, np.pi, stop - start)) ** 2
    return fade(voice, rate)


def resonator(freq: float, bandwidth: float, rate: int) -> tuple[list[float], list[float]]:
    """Coefficients of a two-pole filter ringing at freq: one formant of the vocal tract."""
    radius = np.exp(-np.pi * bandwidth / rate)
    theta = 2 * np.pi * freq / rate
    return [1 - radius], [1.0, -2 * radius * np.cos(theta), radius**2]


def speech_or_vowels(rng: np.random.Generator, rate: int, seconds: float) -> Signal:
    """Real speech from espeak-ng where it is installed, otherwise formant-synthesised vowels.

    The fallback keeps the random draws of every other sample the same on machines
    without espeak-ng; only the samples that chose speech differ between the two.
    """
    sentence = str(rng.choice(SENTENCES))
    speed, pitch = int(rng.integers(140, 190)), int(rng.integers(30, 70))
    speech = speak(sentence, speed, pitch, rate)
    if speech is None:
        return synth_vowels(rng, rate, seconds)
    length = int(rate * seconds)
    return fade(np.pad(speech, (0, max(0, length - len(speech))))[:length], rate)


def speak(sentence: str, speed: int, pitch: int, rate: int) -> Signal | None:
    """Say a sentence with espeak-ng at the given sample rate, or None if it is unavailable."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    import soundfile
    from scipy.signal import resample_poly

    command = [espeak, "--stdout", "-v", "en", "-s", str(speed), "-p", str(pitch), sentence]
    try:
        wav = subprocess.run(command, capture_output=True, check=True, timeout=30).stdout
        speech, native_rate = soundfile.read(io.BytesIO(wav), dtype="float64", always_2d=True)
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return None
    step = Fraction(rate, native_rate)
    return resample_poly(speech[:, 0], step.numerator, step.denominator)


def to_stereo(mono: Signal, rng: np.random.Generator, rate: int) -> Signal:
    """Place a mono source off-centre: one channel a little later and quieter, as two mics hear it."""
    delay = int(rate * rng.uniform(0.0, 0.0006))
    later = np.concatenate([np.zeros(delay), mono[: len(mono) - delay]]) * rng.uniform(0.6, 0.95)
    pair = [mono, later] if rng.random() < 0.5 else [later, mono]
    return np.stack(pair, axis=1)


# Video -------------------------------------------------------------------------------


def write_clip(path: Path, rng: np.random.Generator) -> Path:
    """Encode about 2 s of moving pictures as H.264 with an AAC tone, reproducibly."""
    import av

    fps = int(rng.choice([10, 12, 15]))
    frame_count = 2 * fps
    if rng.random() < 0.5:
        frames = bouncing_ball_frames(rng, frame_count)
    else:
        frames = panning_frames(rng, frame_count)
    tone_rate = int(rng.choice([22_050, 44_100]))
    tone = 0.2 * fade(
        np.sin(2 * np.pi * rng.uniform(220, 880) * time_axis(tone_rate, 2.0)), tone_rate
    )

    # Same frames in, same bytes out, which takes three settings:
    # - bit-exact mode drops library version strings from the container and AAC stream;
    # - one x264 thread keeps the bitstream the same on machines with any core count;
    # - no macroblock-tree rate control: its assembly reads uninitialised memory, so its
    #   output changed between runs (caught by running under MALLOC_PERTURB_).
    # x264 still writes its version into an SEI message, so the bytes are stable for one
    # installed PyAV, not across upgrades.
    bitexact = {"flags": "+bitexact"}
    x264 = {"preset": "veryfast", "crf": "26", "threads": "1", "x264-params": "mbtree=0"}
    with av.open(
        str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}
    ) as container:
        video = container.add_stream("libx264", rate=fps, options={**bitexact, **x264})
        video.width, video.height = VIDEO_SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=tone_rate, options=bitexact)
        audio.layout = "mono"
        audio.bit_rate = 48_000

        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))

        samples = tone.astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(
                samples[None, start : start + 1024], format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = tone_rate, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return path


def bouncing_ball_frames(rng: np.random.Generator, count: int) -> list[npt.NDArray[np.uint8]]:
    """A ball falling and bouncing off the walls and floor in front of a gradient."""
    width, height = VIDEO_SIZE
    background = vertical_gradient(
        width, height, random_colour(rng, 20, 120), random_colour(rng, 120, 230)
    )
    colour = COLOURS[str(rng.choice(["red", "yellow", "white", "orange", "purple"]))]
    radius = float(rng.uniform(8, 16))
    x, y = rng.uniform(radius, width - radius), rng.uniform(radius, height / 2)
    vx, vy = rng.uniform(-8, 8), rng.uniform(-2, 2)
    frames = []
    for _ in range(count):
        image = background.copy()
        ImageDraw.Draw(image).ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
        frames.append(np.asarray(image))
        vy += 1.5  # gravity, in pixels per frame squared
        x, y = x + vx, y + vy
        if not radius <= x <= width - radius:
            vx, x = -vx, float(np.clip(x, radius, width - radius))
        if y > height - radius:
            vy, y = -abs(vy) * 0.9, height - radius
    return frames


def random_colour(rng: np.random.Generator, low: int, high: int) -> Rgb:
    """A colour whose channels lie in [low, high)."""
    red, green, blue = (int(channel) for channel in rng.integers(low, high, size=3))
    return red, green, blue


def panning_frames(rng: np.random.Generator, count: int) -> list[npt.NDArray[np.uint8]]:
    """A camera window sliding across a bundled photograph."""
    width, height = VIDEO_SIZE
    photo = load_photo(PHOTOS[rng.integers(len(PHOTOS))].loader)
    # Scale so the window has room to travel at least 40 % of its width in x and a little in y.
    scale = max(width * 1.4 / photo.width, height * 1.15 / photo.height)
    scaled = photo.resize((round(photo.width * scale), round(photo.height * scale)))
    start = np.array([0.0, rng.uniform(0, scaled.height - height)])
    end = np.array([scaled.width - width, rng.uniform(0, scaled.height - height)])
    if rng.random() < 0.5:
        start, end = end, start
    frames = []
    for step in np.linspace(0, 1, count):
        left, upper = np.round(start + (end - start) * step).astype(int)
        window = scaled.crop((left, upper, left + width, upper + height))
        frames.append(np.asarray(window))
    return frames


# Sensor logs -------------------------------------------------------------------------


def write_sensor_log(path: Path, rng: np.random.Generator) -> Path:
    """About 5 s of 20 Hz accelerometer and temperature readings from a walking wearer."""
    rows = int(rng.integers(95, 106))
    # A jittered 50 ms period, as a real logger's clock drifts around its nominal rate.
    step_ms = np.cumsum(np.concatenate([[0], rng.integers(47, 54, size=rows - 1)]))
    start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(
        days=int(rng.integers(0, 365)), milliseconds=int(rng.integers(0, 86_400_000))
    )
    t = step_ms / 1000
    stride = rng.uniform(1.6, 2.2)  # steps per second
    tilt = rng.uniform(-0.3, 0.3)
    noise = rng.normal(0, 0.05, size=(3, rows))
    accel_x = 9.81 * np.sin(tilt) + 1.2 * np.sin(2 * np.pi * stride * t) + noise[0]
    accel_y = 0.6 * np.sin(np.pi * stride * t + rng.uniform(0, np.pi)) + noise[1]
    accel_z = 9.81 * np.cos(tilt) + 2.0 * np.abs(np.sin(np.pi * stride * t)) + noise[2]
    temperature = rng.uniform(18, 31) + 0.05 * t + rng.normal(0, 0.02, size=rows)

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["timestamp", "accel_x", "accel_y", "accel_z", "temperature_c"])
        for i in range(rows):
            stamp = start + timedelta(milliseconds=int(step_ms[i]))
            writer.writerow(
                [
                    stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    f"{accel_x[i]:.4f}",
                    f"{accel_y[i]:.4f}",
                    f"{accel_z[i]:.4f}",
                    f"{temperature[i]:.2f}",
                ]
            )
    return path


# Bad inputs --------------------------------------------------------------------------


# Accented letters are single bytes in Latin-1 but never valid UTF-8 on their own.
LATIN1_TEXT = "Crème brûlée, café au lait et façade: voilà, señor Müller!\n"


def write_bad_files(folder: Path, rng: np.random.Generator) -> list[Path]:
    """One small file per way an input can be broken, named for the case it exercises."""
    folder.mkdir(parents=True, exist_ok=True)
    photo, _ = jitter_photo(rng)
    jpeg = encode_image(photo, "JPEG")
    scene, _ = draw_scene(rng)
    contents = {
        "empty.dat": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "bomb.png": decompression_bomb_png(),
        "noise.wav": rng.bytes(4096),  # no RIFF header, so no audio decoder takes it
        "latin1.txt": LATIN1_TEXT.encode("latin-1"),
        "nostreams.mp4": empty_mp4(),
        "image.mp3": encode_image(fit_longest_side(scene, 96), "PNG"),
        "notes.jpg": "These are meeting notes, not a photograph — café at 10:00.\n".encode(),
    }
    paths = []
    for name, content in contents.items():
        path = folder / name
        path.write_bytes(content)
        paths.append(path)
    return paths


def encode_image(image: Image.Image, image_format: str) -> bytes:
    """The bytes of an image saved in a format."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC over type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb_png() -> bytes:
    """A well-formed PNG whose header claims 100000 by 100000 pixels but carries almost no data.

    Pillow checks the claimed size on open, so this exercises the guard against images
    that would expand to tens of gigabytes, not the decoder.
    """
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def mp4_box(kind: bytes, payload: bytes) -> bytes:
    """One ISO-BMFF box: size, type, payload."""
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def empty_mp4() -> bytes:
    """An MP4 with a file-type box and a movie header but no tracks: a container, no streams."""
    file_type = mp4_box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")
    identity_matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    movie_header = mp4_box(
        b"mvhd",
        bytes(4)  # version 0, no flags
        + struct.pack(">IIII", 0, 0, 1000, 0)  # created, modified, timescale, duration
        + struct.pack(">IH", 0x10000, 0x100)  # rate 1.0, volume 1.0
        + bytes(10)  # reserved
        + identity_matrix
        + bytes(24)  # pre-defined
        + struct.pack(">I", 1),  # next track id
    )
    return file_type + mp4_box(b"moov", movie_header)
