"""The open_clip scorer: both on-disk forms, normalised batched embeddings, load errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models import tiny
from pmg.models.scorer import CONFIG_NAME, WEIGHTS_NAME, Scorer, load_scorer

KEY = "profiles.mini.scorer"


def _images(n: int, size: tuple[int, int] = (48, 40)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)) for _ in range(n)]


def test_folder_round_trip_matches_the_saved_model(tiny_scorer: Scorer, tiny_clip_dir: Path) -> None:
    assert sorted(p.name for p in tiny_clip_dir.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    original, _ = tiny.build_tiny_open_clip(seed=0)
    images, texts = _images(3), ["red dress", "blue shirt"]
    with torch.no_grad():
        pixels = torch.stack([tiny_scorer.preprocess(im) for im in images])
        expected_images = torch.nn.functional.normalize(original.encode_image(pixels), dim=-1)
        expected_texts = torch.nn.functional.normalize(
            original.encode_text(tiny_scorer.tokenizer(texts)), dim=-1
        )
    assert torch.allclose(tiny_scorer.embed_images(images), expected_images, atol=1e-5)
    assert torch.allclose(tiny_scorer.embed_texts(texts), expected_texts, atol=1e-5)
    # The folder's text context (32) reaches the tokenizer.
    assert tiny_scorer.tokenizer(["x"]).shape == (1, 32)


def test_embeddings_are_unit_norm_and_batch_independent(tiny_scorer: Scorer) -> None:
    images = _images(5)
    texts = ["red", "green striped dress", "a movie poster", "cat", "emoji"]
    full_image, full_text = tiny_scorer.embed_images(images), tiny_scorer.embed_texts(texts)
    assert full_image.shape == (5, 32) and full_text.shape == (5, 32)
    assert torch.allclose(full_image.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(full_text.norm(dim=-1), torch.ones(5), atol=1e-5)
    small = Scorer(tiny_scorer.model, tiny_scorer.preprocess, tiny_scorer.tokenizer, batch_size=2)
    assert torch.allclose(small.embed_images(images), full_image, atol=1e-5)
    assert torch.allclose(small.embed_texts(texts), full_text, atol=1e-5)
    assert tiny_scorer.embed_dim == 32
    assert tiny_scorer.embed_images([]).shape == (0, 32)


def test_checkpoint_file_with_architecture_name(tiny_scorer: Scorer, tmp_path: Path) -> None:
    # The `full` profile's form: a built-in architecture name + a checkpoint file.
    # A tiny architecture is registered the way open_clip registers its own configs.
    model, cfg = tiny.build_tiny_open_clip(seed=0)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "pmg-tiny-file.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "configs")
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    scorer = load_scorer(ModelSpec(kind="open_clip", name="pmg-tiny-file", path=str(weights)), "cpu", key=KEY)
    images = _images(2)
    assert torch.allclose(scorer.embed_images(images), tiny_scorer.embed_images(images), atol=1e-5)


def test_missing_path_and_unknown_architecture(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=rf"{KEY}\.path = '{tmp_path / 'clip'}': no such file or folder"):
        load_scorer(ModelSpec(kind="open_clip", path=str(tmp_path / "clip")), "cpu", key=KEY)
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x")
    with pytest.raises(ModelError, match=rf"{KEY}\.name = 'ViT-Nope': not a built-in open_clip architecture"):
        load_scorer(ModelSpec(kind="open_clip", name="ViT-Nope", path=str(weights)), "cpu", key=KEY)
    with pytest.raises(ModelError, match=rf"{KEY}\.name: required"):
        load_scorer(ModelSpec(kind="open_clip", path=str(weights)), "cpu", key=KEY)


def test_folder_without_config_or_weights(tiny_clip_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=rf"{KEY}\.path = '{empty}': folder has no {CONFIG_NAME}"):
        load_scorer(ModelSpec(kind="open_clip", path=str(empty)), "cpu", key=KEY)
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(tiny_clip_dir / CONFIG_NAME, config_only / CONFIG_NAME)
    with pytest.raises(ModelError, match=rf"{CONFIG_NAME} found but no weights file"):
        load_scorer(ModelSpec(kind="open_clip", path=str(config_only)), "cpu", key=KEY)


def test_weights_of_another_model_are_refused(tiny_clip_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(tiny_clip_dir / CONFIG_NAME, wrong / CONFIG_NAME)
    save_file({"something.else": torch.zeros(3)}, str(wrong / WEIGHTS_NAME))
    with pytest.raises(ModelError, match=rf"{KEY}\.path = '{wrong}': could not load an open_clip model"):
        load_scorer(ModelSpec(kind="open_clip", path=str(wrong)), "cpu", key=KEY)
