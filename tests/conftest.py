"""Fixtures shared by every test: offline settings, sample data, tiny models saved like checkpoints."""

import os
from pathlib import Path

import pytest

# Before anything imports transformers or Prefect: nothing in a test may reach a hub or a tracker.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three sample folders and the _bad/ folder, made once per session; tests must not modify it."""
    from tasks.samples import make_samples

    root = tmp_path_factory.mktemp("samples")
    make_samples(root, n=3, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_image_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random ViT (48-float embeddings, 32-pixel inputs) and its image processor, on disk."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        # Not 32, the handcrafted image vector's length, so tests can tell the two apart.
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
    )
    ViTModel(config).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_audio_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random wav2vec2 (40-float embeddings, 16 kHz input) and its feature extractor, on disk."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-wav2vec2")
    config = Wav2Vec2Config(
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        feat_extract_norm="layer",  # the variant trained with an attention mask
        # Not 32, the handcrafted audio vector's length, so tests can tell the two apart.
        hidden_size=40,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(path)
    return str(path)


# The tiny lake (``tiny_lake``, ``tiny``) serves the tasks' and the API's tests alike.
pytest_plugins = ["tiny_lake"]
