"""Model identity: a revision read from the weights, and keys that change exactly when values would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tasks.common import Models
from tasks.media import encoders
from tasks.media.encoders import model_revision
from tasks.media.identity import BUILTIN_REVISION, resolve_model_set


def test_a_model_retrained_in_place_gets_a_new_revision_and_new_keys(
    tiny_image_model: str, tmp_path: Path
) -> None:
    folder = tmp_path / "vit"
    shutil.copytree(tiny_image_model, folder)
    before = resolve_model_set(Models(image=str(folder)))
    assert before.slot("image").model_revision == model_revision(tiny_image_model)
    weights = next(folder.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # "retrained": same folder, same name, other weights
    weights.write_bytes(bytes(data))
    after = resolve_model_set(Models(image=str(folder)))
    assert after.slot("image").model_revision != before.slot("image").model_revision
    # Image and video depend on the image model; nothing else does.
    changed = {s.modality for s in after.slots if s.key != before.slot(s.modality).key}
    assert changed == {"image", "video"}
    assert after.key != before.key


def test_the_same_weights_under_another_path_or_alias_keep_their_keys(
    tiny_image_model: str, tmp_path: Path
) -> None:
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_image_model, copy)
    assert (
        resolve_model_set(Models(image=str(copy))).key
        == resolve_model_set(Models(image=tiny_image_model)).key
    )
    assert resolve_model_set(Models(text="all-MiniLM-L6-v2")).key == resolve_model_set(Models()).key


def test_handcrafted_slots_are_builtin_and_an_audio_model_changes_audio_and_video(
    tiny_audio_model: str,
) -> None:
    plain = resolve_model_set(Models())
    assert plain.slot("image").model_revision == BUILTIN_REVISION
    assert plain.dims == {"image": 32, "text": 384, "audio": 32, "video": 32, "timeseries": 16}
    with_audio = resolve_model_set(Models(audio=tiny_audio_model))
    changed = {s.modality for s in with_audio.slots if s.key != plain.slot(s.modality).key}
    assert changed == {"audio", "video"}
    assert with_audio.dims["audio"] == 40


def test_a_dimension_left_to_its_default_in_config_json_comes_from_autoconfig(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    encoders.embedding_dim.cache_clear()
    assert encoders.embedding_dim(str(tmp_path), "image") == 768  # ViT's default hidden_size
