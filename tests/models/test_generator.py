"""The diffusers generator: loading, text encoding, embeddings-in generation, seeds, checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models.generator import ImageGenerator, load_generator

KEY = "profiles.mini.generator"
STEPS = 2


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def _embeds(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, length, 32, generator=torch.Generator().manual_seed(seed))


def test_round_trip(tiny_generator: ImageGenerator) -> None:
    pipe = tiny_generator.pipeline
    assert tiny_generator.text_width == 32 == pipe.unet.config.cross_attention_dim
    assert pipe.safety_checker is None
    assert tiny_generator.dtype == torch.float32 and tiny_generator.device == torch.device("cpu")
    assert tiny_generator.text_encoder is pipe.text_encoder and tiny_generator.tokenizer is pipe.tokenizer


def test_encode_text_is_the_text_encoders_last_hidden_state(tiny_generator: ImageGenerator) -> None:
    texts = ["red striped dress", "blue shirt"]
    embeds = tiny_generator.encode_text(texts)
    assert embeds.shape == (2, 77, 32)
    ids = tiny_generator.tokenizer(
        texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = tiny_generator.text_encoder(ids.input_ids).last_hidden_state
    assert torch.allclose(embeds, expected)


def test_unconditional_embeds_of_any_length(tiny_generator: ImageGenerator) -> None:
    empty = tiny_generator.encode_text([""])  # (1, 77, D)
    short = tiny_generator.unconditional_embeds(2, 20)
    assert short.shape == (2, 20, 32) and torch.equal(short[1], empty[0, :20])
    long = tiny_generator.unconditional_embeds(3, 81)
    assert long.shape == (3, 81, 32)
    assert torch.equal(long[0, :77], empty[0]) and torch.equal(long[2, 80], empty[0, 76])


def test_generates_from_prompt_embeds_longer_and_shorter_than_77(tiny_generator: ImageGenerator) -> None:
    for length in (20, 81):  # e.g. L soft tokens + 77 keyword tokens
        embeds = _embeds(2, length)
        images = tiny_generator.generate(
            embeds,
            tiny_generator.unconditional_embeds(2, length),
            steps=STEPS,
            guidance_scale=5.0,
            seeds=[0, 1],
        )
        assert len(images) == 2
        assert all(im.size == (32, 32) and im.mode == "RGB" for im in images)
        assert np.abs(_pixels(images[:1]) - _pixels(images[1:])).max() > 0


def test_candidate_is_the_same_alone_or_in_a_batch(tiny_generator: ImageGenerator) -> None:
    embeds = _embeds(3, 24)
    negative = tiny_generator.unconditional_embeds(3, 24)
    seeds = [11, 22, 33]
    batch = tiny_generator.generate(embeds, negative, steps=STEPS, guidance_scale=4.0, seeds=seeds)
    alone = tiny_generator.generate(embeds[1:2], negative[1:2], steps=STEPS, guidance_scale=4.0, seeds=[22])
    # Same seed, same conditioning: the same image up to float rounding of a batched UNet.
    assert np.abs(_pixels(batch[1:2]) - _pixels(alone)).max() <= 1
    # Another seed with the same conditioning gives another image.
    other = tiny_generator.generate(embeds[1:2], negative[1:2], steps=STEPS, guidance_scale=4.0, seeds=[23])
    assert np.abs(_pixels(other) - _pixels(alone)).max() > 10


def test_conditioning_changes_the_image(tiny_generator: ImageGenerator) -> None:
    negative = tiny_generator.unconditional_embeds(1, 16)
    a = tiny_generator.generate(_embeds(1, 16, seed=1), negative, steps=STEPS, guidance_scale=7.0, seeds=[5])
    b = tiny_generator.generate(_embeds(1, 16, seed=2), negative, steps=STEPS, guidance_scale=7.0, seeds=[5])
    assert np.abs(_pixels(a) - _pixels(b)).max() > 0


def test_explicit_size(tiny_generator: ImageGenerator) -> None:
    assert tiny_generator.default_size == (32, 32)
    embeds, negative = _embeds(1, 8), torch.zeros(1, 8, 32)
    images = tiny_generator.generate(
        embeds, negative, steps=1, guidance_scale=1.0, seeds=[0], height=48, width=64
    )
    assert images[0].size == (64, 48)
    # One side alone keeps the other at its default (diffusers would reset both).
    images = tiny_generator.generate(embeds, negative, steps=1, guidance_scale=1.0, seeds=[0], height=48)
    assert images[0].size == (32, 48)


@pytest.mark.parametrize(
    ("prompt_shape", "negative_shape", "seeds", "size", "message"),
    [
        (
            (2, 10, 16),
            (2, 10, 16),
            [0, 1],
            None,
            r"prompt_embeds must have shape \(B, T, 32\).*got \(2, 10, 16\)",
        ),
        ((10, 32), (10, 32), [0], None, r"got \(10, 32\)"),
        (
            (2, 10, 32),
            (2, 77, 32),
            [0, 1],
            None,
            r"\(2, 10, 32\) and negative_prompt_embeds \(2, 77, 32\) must have the same shape",
        ),
        ((2, 10, 32), (2, 10, 32), [0], None, "1 seeds given for a batch of 2"),
        ((1, 10, 32), (1, 10, 32), [0], 30, "height must be a positive multiple of 8, got 30"),
    ],
)
def test_inputs_are_checked_up_front(
    tiny_generator: ImageGenerator, prompt_shape, negative_shape, seeds, size, message
) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_generator.generate(
            torch.zeros(prompt_shape),
            torch.zeros(negative_shape),
            steps=STEPS,
            guidance_scale=3.0,
            seeds=seeds,
            height=size,
        )


def test_non_finite_embeddings_are_refused(tiny_generator: ImageGenerator) -> None:
    embeds = torch.zeros(1, 4, 32)
    embeds[0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"prompt_embeds of shape \(1, 4, 32\) contains NaN"):
        tiny_generator.generate(embeds, torch.zeros(1, 4, 32), steps=STEPS, guidance_scale=3.0, seeds=[0])


def test_safety_checker_setting(tiny_sd_dir: Path) -> None:
    kept = load_generator(ModelSpec(kind="diffusers", path=str(tiny_sd_dir)), "cpu", key=KEY)
    assert kept.pipeline.safety_checker is None  # the tiny folder has none to keep
    assert kept.pipeline.config.requires_safety_checker is False


def test_missing_and_wrong_folders(tmp_path: Path, tiny_llm_dir: Path) -> None:
    with pytest.raises(ModelError, match=rf"{KEY}\.path = '{tmp_path / 'sd'}': no such file or folder"):
        load_generator(ModelSpec(kind="diffusers", path=str(tmp_path / "sd")), "cpu", key=KEY)
    with pytest.raises(
        ModelError, match=rf"{KEY}\.path = '{tiny_llm_dir}': could not load a Stable Diffusion pipeline"
    ):
        load_generator(ModelSpec(kind="diffusers", path=str(tiny_llm_dir)), "cpu", key=KEY)
    with pytest.raises(ModelError, match=rf"{KEY}\.kind: unknown generator kind 'sdxl'"):
        load_generator(ModelSpec(kind="sdxl", path=str(tiny_llm_dir)), "cpu", key=KEY)
