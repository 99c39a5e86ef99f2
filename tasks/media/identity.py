"""What computed a row: the model, its revision and the feature code's version, per modality.

A feature row is keyed on its object and a ``model_key``, a hash of everything its
values depend on: the model id, the revision of its weights (``encoders.model_revision``),
and the modality's ``FEATURE_VERSION`` (a video's key also covers the audio model of its
track and the image and audio feature versions it reuses). A run wants one key per
modality; the set of the five is a *model set*, whose ``key`` names the fused rows built
from it. Two settings that compute the same values give the same keys, so nothing is
recomputed; a retrained model, a new model or new feature code gives new keys, so only
what it changes is recomputed, beside the old rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tasks.common import MODALITIES, Models
from tasks.media import registry
from tasks.media.encoders import UNRESOLVED

BUILTIN_REVISION = "builtin"  # handcrafted vectors: the feature version says it all


@dataclass(frozen=True)
class SlotModel:
    """What computes one modality's embedding and features, and the key its rows carry."""

    modality: str
    model_id: str
    model_revision: str
    feature_version: int
    embedding_dim: int
    key: str


@dataclass(frozen=True)
class ModelSet:
    """The slot models of every modality a run wants; ``key`` names the fused rows built from it."""

    slots: tuple[SlotModel, ...]
    key: str

    def slot(self, modality: str) -> SlotModel:
        return next(s for s in self.slots if s.modality == modality)

    @property
    def dims(self) -> dict[str, int]:
        return {s.modality: s.embedding_dim for s in self.slots}

    @property
    def fused_dim(self) -> int:
        return sum(self.dims.values())

    def rows(self) -> list[dict[str, Any]]:
        """One ``model_sets`` row per modality (lineage columns added by the caller)."""
        return [{"model_set": self.key, **_fields(s)} for s in self.slots]


def _fields(slot: SlotModel) -> dict[str, Any]:
    return {
        "modality": slot.modality,
        "model_id": slot.model_id,
        "model_revision": slot.model_revision,
        "feature_version": slot.feature_version,
        "embedding_dim": slot.embedding_dim,
        "model_key": slot.key,
    }


def _digest(value: Any, length: int) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def _encoder(model: str | None, kind: str, handcrafted: str, dim: int) -> tuple[str, str, int]:
    """(model id, revision, dimension) of a configured encoder, or of the handcrafted vector."""
    if not model:
        return handcrafted, BUILTIN_REVISION, dim
    from tasks.media.encoders import embedding_dim, model_revision

    return model, model_revision(model), embedding_dim(model, kind)


def resolve_model_set(models: Models) -> ModelSet:
    """The model set the settings ask for, with each revision read from the weights on disk.

    A slot's key covers its weights (the revision identifies them whatever id named them),
    its feature version, and the keys of the slots it depends on (a video's frames go
    through the image path, its track through the audio path).
    """
    slots: dict[str, SlotModel] = {}
    for name in MODALITIES:
        module = registry.modality(name)
        model, kind = module.encoder(models)
        model_id, revision, dim = _encoder(
            model, kind, module.HANDCRAFTED_MODEL, module.HANDCRAFTED_DIM
        )
        weights = model_id if revision in (BUILTIN_REVISION, UNRESOLVED) else revision
        depends = [slots[other].key for other in module.DEPENDS_ON]
        key = _digest([name, weights, module.FEATURE_VERSION, depends], 16)
        slots[name] = SlotModel(name, model_id, revision, module.FEATURE_VERSION, dim, key)
    ordered = tuple(slots.values())
    return ModelSet(ordered, _digest([s.key for s in ordered], 12))
