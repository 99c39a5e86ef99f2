"""One registry of modalities: every modality module exposes the same names, and callers
look a modality up here instead of branching on its name.

A modality module has ``FEATURE_SCHEMA`` (its table's own columns), ``FEATURE_VERSION``
(bumped when its feature code changes), ``HANDCRAFTED_MODEL`` and ``HANDCRAFTED_DIM``
(the vector used without a model), ``DEPENDS_ON`` (modalities whose models and feature
code its values also depend on), ``analyze`` (bytes to an ``Analysis``), ``encoder`` (the
configured model and its kind) and ``embed_batch`` (a batch of analyses to columns).
"""

from __future__ import annotations

from typing import Any, Protocol

import polars as pl

from tasks.common import MODALITIES, Analysis, Limits, Models
from tasks.media import audio, image, text, timeseries, video


class Modality(Protocol):
    """What every modality module provides (``tasks.media.<modality>``)."""

    FEATURE_SCHEMA: dict[str, pl.DataType]
    FEATURE_VERSION: int
    HANDCRAFTED_MODEL: str
    HANDCRAFTED_DIM: int
    DEPENDS_ON: tuple[str, ...]

    def analyze(self, data: bytes, limits: Limits, media_type: str = ...) -> Analysis: ...

    def encoder(self, models: Models) -> tuple[str | None, str]: ...

    def embed_batch(
        self, analyses: list[Analysis], models: Models, limits: Limits
    ) -> dict[str, Any]: ...


REGISTRY: dict[str, Modality] = {
    "image": image,
    "text": text,
    "audio": audio,
    "video": video,
    "timeseries": timeseries,
}
assert tuple(REGISTRY) == MODALITIES, "the registry lists every modality, in MODALITIES order"


def modality(name: str) -> Modality:
    """The module of a modality; ValueError for a name that is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown modality {name!r}; expected one of {MODALITIES}") from None


def model_id(name: str, models: Models) -> str:
    """The id recorded as lineage for a modality's ``embedding`` column."""
    module = modality(name)
    return module.encoder(models)[0] or module.HANDCRAFTED_MODEL
