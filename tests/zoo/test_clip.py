"""The mini CLIP: training on a tiny tower, the saved folder, the quality gate."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pmg.config import ModelSpec, ZooClipConfig
from pmg.errors import DataError, ModelError
from pmg.models.scorer import text_tower_override
from pmg.zoo.clip import (
    MODEL_NAME,
    TRAINING_INFO_NAME,
    build_mini_clip,
    contrastive_loss,
    evaluate_mini_clip,
    fit_mini_clip,
    gate_failures,
    mini_clip_model_cfg,
    save_mini_clip,
    scenario_repeats,
    semantic_targets,
    train_mini_clip,
    zero_shot_top1,
)

# 32 px so the tiny ConvNeXt's four stride-2 stages still have a pixel; embed 32 = the tiny BERT's width.
TINY = ZooClipConfig(
    image_size=32,
    image_tower="test_convnext",
    embed_dim=32,
    context_length=8,
    epochs=6,
    batch_size=8,
    lr=3e-3,
)


@pytest.fixture(scope="module")
def fitted(tiny_text_tower: Path, squares: pd.DataFrame):
    return fit_mini_clip(TINY, squares, text_tower=tiny_text_tower, seed=0, log=lambda line: None)


# ------------------------------------------------------------------ the gate maths


def test_zero_shot_top1_on_hand_made_embeddings() -> None:
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # 3 labels
    images = torch.tensor([[2.0, 0.1], [0.1, 3.0], [0.0, 1.0], [-1.0, -0.2]])  # best: 0, 1, 1, 2
    accuracy, chance = zero_shot_top1(images, labels, torch.tensor([0, 1, 2, 0]))
    assert accuracy == pytest.approx(2 / 4)
    assert chance == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        zero_shot_top1(torch.empty(0, 2), labels, torch.empty(0, dtype=torch.long))


def test_gate_failures_name_the_scenario() -> None:
    metrics = {
        "clothing": {"top1": 0.1, "chance": 0.01, "ratio": 10.0, "passed": True},
        "emoji": {"top1": 0.0, "chance": 0.015, "ratio": 0.0, "passed": False},
        "colour": {"top1": 0.5, "chance": 0.125, "ratio": 4.0},
        "min_ratio": 3.0,
    }
    (line,) = gate_failures(metrics)
    assert line.startswith("emoji:") and "3.0x" in line


def test_contrastive_loss_shares_text_targets_between_duplicate_captions() -> None:
    captions = torch.eye(3)  # (C, D)
    index = torch.tensor([0, 0, 1])
    perfect = torch.eye(3)[index]  # images on their captions
    wrong = torch.eye(3)[torch.tensor([2, 2, 2])]
    scale = torch.tensor(4.0)
    assert contrastive_loss(perfect, captions, index, scale) < contrastive_loss(wrong, captions, index, scale)
    # Two images of one caption: the text->image target is 1/2 each, so the best
    # text->image loss is log(2) for that caption, not a penalty for either image.
    loss = contrastive_loss(perfect, captions, index, torch.tensor(50.0))
    assert loss.item() == pytest.approx(0.5 * (torch.log(torch.tensor(2.0)).item() / 2), abs=1e-4)


def test_semantic_targets_follow_text_similarity() -> None:
    text = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    targets = semantic_targets(text, tau=0.1)
    assert torch.allclose(targets.sum(dim=1), torch.ones(3))
    assert targets[0].argmax() == 0 and targets[0, 1] > targets[0, 2]  # near caption gets more mass
    assert torch.allclose(semantic_targets(text, tau=1e-4), torch.eye(3), atol=1e-3)


def test_semantic_term_is_a_weighted_soft_cross_entropy() -> None:
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    captions = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    index, scale = torch.tensor([0, 1, 1, 2]), torch.tensor(2.0)
    soft = semantic_targets(torch.randn(3, 5), tau=0.5)
    base = contrastive_loss(images, captions, index, scale)
    logits = scale.exp() * images @ captions.T
    expected = base + 0.5 * -(soft[index] * logits.log_softmax(dim=1)).sum(dim=1).mean()
    got = contrastive_loss(images, captions, index, scale, semantic_targets=soft, semantic_weight=0.5)
    assert torch.allclose(got, expected)


def test_rare_scenarios_are_repeated() -> None:
    scenarios = pd.Series(["movies"] * 100 + ["emoji"] * 10)
    assert scenario_repeats(scenarios, 0.3) == {"movies": 1, "emoji": 3}  # 0.3 * 110 / 10 = 3.3
    assert scenario_repeats(scenarios, 0.0) == {"movies": 1, "emoji": 1}


# ------------------------------------------------------------------ the model


def test_text_tower_starts_as_the_mean_pooled_sentence_embedding(tiny_text_tower: Path) -> None:
    from open_clip.tokenizer import HFTokenizer
    from transformers import AutoModel

    model = build_mini_clip(mini_clip_model_cfg(TINY, tiny_text_tower), seed=0).eval()
    bert = AutoModel.from_pretrained(tiny_text_tower).eval()
    ids = HFTokenizer(str(tiny_text_tower), context_length=8)(["red square", "a big blue square"])
    mask = (ids != 0).long()
    with torch.no_grad():
        hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state  # (2, T, 32)
        expected = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        assert torch.allclose(model.encode_text(ids), expected, atol=1e-5)


def test_training_lowers_the_loss_and_only_trains_image_tower_and_projection(
    fitted, tiny_text_tower: Path
) -> None:
    from transformers import AutoModel

    model, _, metrics = fitted
    losses = metrics["loss_per_epoch"]
    assert len(losses) == TINY.epochs and all(map(torch.isfinite, torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0]
    assert metrics["n_train_images"] == 8 and metrics["n_train_captions"] == 4
    # The locked transformer is bit-for-bit the pretrained one.
    bert = AutoModel.from_pretrained(tiny_text_tower).state_dict()
    for name, tensor in model.text.transformer.state_dict().items():
        assert torch.equal(tensor, bert[name]), name


def test_saved_folder_loads_through_open_clip_and_the_scorer(
    fitted, tiny_text_tower: Path, tmp_path: Path
) -> None:
    import open_clip
    from PIL import Image

    from pmg.models.scorer import load_scorer

    model, model_cfg, metrics = fitted
    out = tmp_path / "zoo" / "clip"
    save_mini_clip(model, model_cfg, out, text_tower=tiny_text_tower, training=metrics)
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip"]  # no temp sibling left
    names = {p.name for p in out.iterdir()}
    assert {
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "config.json",
        TRAINING_INFO_NAME,
    } <= names
    saved = json.loads((out / "open_clip_config.json").read_text())
    assert saved["model_cfg"]["text_cfg"]["hf_model_name"] == str(out)  # self-contained
    assert not any(p.suffix in (".pt", ".pkl", ".pth") for p in out.iterdir())

    texts = ["red square", "blue square", "a big yellow square"]
    images = [Image.new("RGB", (40, 40), rgb) for rgb in ((215, 25, 35), (35, 75, 225))]
    plain, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    pixels = torch.stack([preprocess(im) for im in images])
    with torch.no_grad():
        for loaded in (plain.eval(),):
            assert torch.equal(loaded.encode_image(pixels), model.encode_image(pixels))
            assert torch.equal(loaded.encode_text(tokenizer(texts)), model.encode_text(tokenizer(texts)))
        expected = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)

    scorer = load_scorer(ModelSpec(kind="open_clip", name=MODEL_NAME, path=str(out)), "cpu")
    assert torch.allclose(scorer.embed_images(images), expected, atol=1e-6)
    assert scorer.embed_texts(texts).shape == (3, TINY.embed_dim)


def test_relative_folder_loads_from_another_directory_with_the_override(
    fitted, tiny_text_tower: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip

    model, model_cfg, metrics = fitted
    monkeypatch.chdir(tmp_path)
    save_mini_clip(model, model_cfg, Path("data/zoo/clip"), text_tower=tiny_text_tower, training=metrics)
    saved = json.loads((tmp_path / "data/zoo/clip/open_clip_config.json").read_text())
    assert saved["model_cfg"]["text_cfg"]["hf_model_name"] == "data/zoo/clip"  # as the stage writes it
    open_clip.create_model("local-dir:data/zoo/clip")  # from the root it was written from: fine
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    folder = tmp_path / "data/zoo/clip"
    with pytest.raises(OSError):  # transformers finds no config at the relative "data/zoo/clip"
        open_clip.create_model(f"local-dir:{folder}")
    loaded = open_clip.create_model(f"local-dir:{folder}", **text_tower_override(folder)).eval()
    ids = open_clip.get_tokenizer(f"local-dir:{folder}")(["red square"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))


@pytest.mark.slow
def test_train_is_deterministic_and_writes_the_folder(
    tiny_text_tower: Path, squares: pd.DataFrame, tmp_path: Path
) -> None:
    cfg = TINY.model_copy(update={"epochs": 3})
    quiet = {"text_tower": tiny_text_tower, "seed": 7, "log": lambda line: None}
    first = train_mini_clip(cfg, squares, out=tmp_path / "a", **quiet)
    second = train_mini_clip(cfg, squares, out=tmp_path / "b", **quiet)
    assert first["loss_per_epoch"] == second["loss_per_epoch"]
    info = json.loads((tmp_path / "a" / TRAINING_INFO_NAME).read_text())
    assert info["seed"] == 7 and info["loss_per_epoch"] == first["loss_per_epoch"]
    # Rewriting replaces the folder whole.
    train_mini_clip(cfg, squares, out=tmp_path / "a", **quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_evaluate_reports_per_scenario_gate_and_colour(
    fitted, tiny_text_tower: Path, squares: pd.DataFrame, tmp_path: Path
) -> None:
    model, model_cfg, metrics = fitted
    out = save_mini_clip(model, model_cfg, tmp_path / "clip", text_tower=tiny_text_tower, training=metrics)
    gate = evaluate_mini_clip(out, squares, min_ratio=0.0)
    entry = gate["clothing"]
    assert entry["chance"] == pytest.approx(1 / 4) and entry["n_images"] == 4 and entry["n_captions"] == 4
    assert entry["ratio"] == pytest.approx(entry["top1"] / entry["chance"], abs=0.01)
    assert gate["colour"]["chance"] == pytest.approx(1 / 8) and gate["colour"]["n_colours"] == 8
    assert gate["passed"] is True and gate["min_ratio"] == 0.0
    strict = evaluate_mini_clip(out, squares, min_ratio=1e6)
    assert strict["passed"] is False and gate_failures(strict)


def test_bad_inputs_are_named(tiny_text_tower: Path, squares: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split"):
        fit_mini_clip(TINY, squares.assign(split="heldout"), text_tower=tiny_text_tower, seed=0)
    with pytest.raises(DataError, match="caption"):
        fit_mini_clip(TINY, squares.drop(columns="caption"), text_tower=tiny_text_tower, seed=0)
    with pytest.raises(ModelError, match="config.json"):
        fit_mini_clip(TINY, squares, text_tower=tmp_path, seed=0)
