"""The mini Stable Diffusion: CLIP's tokenizer from open_clip's BPE file, training, the saved pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_zoo_outputs import assert_ordinary_modes, files_of, has_timings  # tests/zoo/ is on sys.path

from pmg.config import ZooSDConfig
from pmg.zoo.sd import TRAINING_INFO_NAME, _lr_factor, colour_gate_prompts, gate_failures, train_mini_sd
from pmg.zoo.tokenizer import build_clip_tokenizer, clip_vocab_and_merges

SAMPLES = [
    "blue dotted pullover",
    "Comedy  Romance movie poster",
    "face with look of triumph emoji",
    "sci-fi horror, 1990s!",
    "it's a cat's café — naïve 123",
    "ankle-boots",
    "",
]


def tiny_config(**overrides) -> ZooSDConfig:
    """16 px, a 2-level VAE (8 x 8 latents), a 2-level UNet, a 1-layer text encoder of width 32."""
    values = dict(
        out="unused",
        resolution=16,
        steps=40,
        batch_size=8,
        lr=2e-3,
        inference_steps=2,
        guidance_scale=2.0,
        max_length=12,
        text_width=32,
        text_layers=1,
        text_heads=2,
        unet_channels=(16, 32),
        unet_head_dim=16,
        vae_channels=(8, 16),
        vae_steps=20,
        log_every=10,
        ema_decay=0.0,
    )
    return ZooSDConfig(**(values | overrides))


def test_tokenizer_matches_open_clip() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = build_clip_tokenizer(24)
    reference = SimpleTokenizer(context_length=24)
    assert len(tokenizer) == reference.vocab_size == 49408
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (
        reference.sot_token_id,
        reference.eot_token_id,
    )
    for text in SAMPLES:
        ours = tokenizer(text, padding="max_length", max_length=24, truncation=True).input_ids
        theirs = reference([text])[0].tolist()
        length = sum(1 for token in theirs if token)  # open_clip pads with 0, SD with <|endoftext|>
        assert ours[:length] == theirs[:length], text
        assert set(ours[length:]) <= {tokenizer.eos_token_id}


def test_vocab_is_clips_construction() -> None:
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 49408 - 512 - 2
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["<|endoftext|>"] == 49407
    assert vocab["".join(merges[0].split())] == 512


def test_config_rejects_resolution_the_models_cannot_halve() -> None:
    with pytest.raises(ValueError, match="multiple"):
        tiny_config(resolution=20)


def test_lr_schedule_warms_up_then_decays_to_a_tenth() -> None:
    assert _lr_factor(0, 100) < _lr_factor(4, 100) == 1.0
    assert _lr_factor(99, 100) == pytest.approx(0.1, abs=1e-3)


def test_colour_gate_prompts_cover_every_colour_evenly() -> None:
    from pmg.data.world.clothing import COLOURS

    prompts = colour_gate_prompts(4)
    assert len(prompts) == 4 * len(COLOURS)
    assert all(colour in prompt.split() for prompt, colour in prompts)
    assert {colour for _, colour in prompts} == set(COLOURS)


def test_gate_failures_name_the_missed_gate() -> None:
    metrics = {
        "prompt_match": {
            "clothing": {"match": 0.5},
            "overall": {"match": 0.5, "n_prompts": 10},
            "min": 0.7,
            "passed": False,
        },
        "colour": {"accuracy": 0.9, "chance": 0.125, "ratio": 7.2, "min_ratio": 3.0, "passed": True},
    }
    [line] = gate_failures(metrics)
    assert "prompt match 0.500" in line and "clothing 0.500" in line


@pytest.fixture(scope="module")
def trained(squares: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sd") / "pipeline"
    metrics = train_mini_sd(tiny_config(), squares, out=out, seed=0, log=lambda _: None)
    return out, metrics


@pytest.mark.slow
def test_training_lowers_the_loss_and_writes_a_pipeline(trained: tuple[Path, dict]) -> None:
    out, metrics = trained
    losses = metrics["unet"]["loss"]
    assert metrics["unet"]["step"] == [10, 20, 30, 40]
    assert losses[-1] < losses[0]
    assert metrics["vae"]["loss"][-1] < metrics["vae"]["loss"][0]
    index = json.loads((out / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert index["requires_safety_checker"] is False
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    assert (out / "tokenizer" / "vocab.json").is_file() and (out / "tokenizer" / "merges.txt").is_file()
    assert not list(out.parent.glob(".pipeline.*"))  # the temporary sibling was renamed


@pytest.mark.slow
def test_saved_pipeline_generates_from_prompt_embeds_of_any_length(trained: tuple[Path, dict]) -> None:
    from diffusers import StableDiffusionPipeline

    out, _ = trained
    pipeline = StableDiffusionPipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline.tokenizer.model_max_length == 12
    embeds, negative = pipeline.encode_prompt(["red square", "blue square"], "cpu", 1, True, ["", ""])
    assert embeds.shape == (2, 12, 32)
    soft = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(0))
    longer = torch.cat([soft, embeds], dim=1)  # (2, 15, 32): soft tokens + keyword embeddings
    longer_negative = torch.cat([negative[:, -1:].expand(2, 3, 32), negative], dim=1)

    def run(prompt_embeds, negative_prompt_embeds):
        return pipeline(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            num_inference_steps=2,
            guidance_scale=2.0,
            generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
            output_type="np",
        ).images

    first, again = run(longer, longer_negative), run(longer, longer_negative)
    assert first.shape == (2, 16, 16, 3) and (first >= 0).all() and (first <= 1).all()
    assert (first == again).all()
    assert run(embeds, negative).shape == (2, 16, 16, 3)


@pytest.mark.slow
def test_training_is_deterministic_given_the_seed(squares: pd.DataFrame, trained, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out, metrics = trained
    again = train_mini_sd(tiny_config(), squares, out=tmp_path / "again", seed=0, log=lambda _: None)
    assert again["unet"]["loss"] == metrics["unet"]["loss"]
    name = "unet/diffusion_pytorch_model.safetensors"
    first, second = load_file(out / name), load_file(tmp_path / "again" / name)
    assert all(torch.equal(first[k], second[k]) for k in first)
    # A rebuild writes the same bytes (a DVC output), timings stay out, modes are ordinary (issue 16).
    assert files_of(out) == files_of(tmp_path / "again")
    assert not has_timings(json.loads((out / TRAINING_INFO_NAME).read_text()))
    assert_ordinary_modes(out)


@pytest.mark.slow
def test_gates_report_prompt_match_and_colour(
    trained: tuple[Path, dict], tiny_text_tower: Path, squares: pd.DataFrame, tmp_path: Path
) -> None:
    from pmg.config import ZooClipConfig
    from pmg.zoo.clip import fit_mini_clip, save_mini_clip
    from pmg.zoo.sd import evaluate_mini_sd

    clip_cfg = ZooClipConfig(
        image_size=32, image_tower="test_convnext", embed_dim=32, context_length=8, epochs=2, batch_size=8
    )
    quiet = {"text_tower": tiny_text_tower, "seed": 0, "log": lambda _: None}
    model, model_cfg, _ = fit_mini_clip(clip_cfg, squares, **quiet)
    clip = save_mini_clip(model, model_cfg, tmp_path / "clip", text_tower=tiny_text_tower, training={})
    out, _ = trained
    lenient = tiny_config(colour_prompts=1, min_prompt_match=0.0, min_colour_ratio=0.0)
    gate = evaluate_mini_sd(out, clip, squares, lenient, seed=0)
    match, colour = gate["prompt_match"], gate["colour"]
    assert match["clothing"]["n_prompts"] == match["overall"]["n_prompts"] == 4  # distinct held-out captions
    assert 0.0 <= match["overall"]["match"] <= 1.0 and 0.0 <= match["overall"]["real_images"] <= 1.0
    assert colour["n_images"] == 8 and colour["chance"] == pytest.approx(1 / 8)
    assert gate["passed"] is True and gate_failures(gate) == []
    # 9 x chance (1/8) is out of reach: the colour gate fails, on the very same images (same seeds).
    impossible = tiny_config(colour_prompts=1, min_colour_ratio=9.0)
    strict = evaluate_mini_sd(out, clip, squares, impossible, seed=0)
    assert strict["colour"] == colour | {"min_ratio": 9.0, "passed": False}
    assert strict["passed"] is False
    assert any("colour accuracy" in line for line in gate_failures(strict))


def test_a_damaged_training_image_is_a_data_error_naming_it(tmp_path) -> None:
    from PIL import Image

    from pmg.errors import DataError
    from pmg.zoo.sd import load_pixels

    good, damaged = tmp_path / "good.png", tmp_path / "damaged.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(good)
    damaged.write_bytes(good.read_bytes()[:40])
    assert load_pixels([str(good)], 8).shape == (1, 3, 8, 8)
    with pytest.raises(DataError, match="damaged.png"):
        load_pixels([str(good), str(damaged)], 8)
