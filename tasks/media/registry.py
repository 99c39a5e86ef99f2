"""One registry of modalities: every modality module exposes the same names, and callers
look a modality up here instead of branching on its name.

A modality module has ``FEATURE_SCHEMA`` (its table's own columns), ``FEATURE_VERSION``
(bumped when its feature code changes), ``HANDCRAFTED_MODEL`` and ``HANDCRAFTED_DIM``
(the vector used without a model), ``DEPENDS_ON`` (modalities whose models and feature
code its values also depend on), ``analyze`` (bytes to an ``Analysis``), ``encoder`` (the
configured model and its kind) and ``embed_batch`` (a batch of analyses to columns).
"""

from __future__ import annotations

from collections.abc import Iterable
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


def models_for(modalities: Iterable[str], models: Models) -> list[tuple[str, str]]:
    """The (model id, kind) pairs a run over these modalities loads, each once."""
    wanted = []
    for name in modalities:
        model, kind = modality(name).encoder(models)
        if model is not None and (model, kind) not in wanted:
            wanted.append((model, kind))
        track = (models.audio, "audio")  # a clip's audio track goes through the audio model
        if name == "video" and models.audio is not None and track not in wanted:
            wanted.append((models.audio, "audio"))
    return wanted


def warm(modalities: Iterable[str], models: Models) -> None:
    """Load the models these modalities embed with into this process's cache, now.

    A model costs seconds to load and milliseconds per batch to run, so loading it while
    other work goes on takes seconds off the run; a modality module's ``warm`` (where it
    has one) does the same for its slow imports. A model that fails to load is left to
    fail again where it is used, where the failure quarantines the objects with its reason.
    """
    from tasks.media.encoders import load_encoder

    for name in modalities:
        warm_imports = getattr(modality(name), "warm", None)  # a module's slow imports
        if warm_imports is not None:
            warm_imports()
    for model, kind in models_for(modalities, models):
        try:
            load_encoder(model, kind)
        except Exception:  # reported by the embed step that needs it
            continue
