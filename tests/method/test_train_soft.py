"""Training of the soft preference adapter on tiny random components.

The denoising loss of a tiny random UNet barely depends on the conditioning,
so the improvements asserted here are small — but measured on fixed draws,
hence deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from pmg.config import TrainSoftConfig, load_params
from pmg.data.store import PreparedScenario
from pmg.errors import DataError
from pmg.io import validate
from pmg.method.soft import SoftPreferenceModel, behaviour_prompt, save_adapter
from pmg.method.train_soft import (
    SoftExample,
    SoftTrainingError,
    build_examples,
    examples_hash,
    is_validation_user,
    load_image,
    train_soft,
    validation_losses,
)
from pmg.models.generator import ImageGenerator
from pmg.models.llm import LocalLLM
from pmg.models.tiny import build_tiny_llama, build_tiny_sd_pipeline, tiny_llm_tokenizer
from pmg.schemas import Descriptions, Keywords

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    tokenizer = tiny_llm_tokenizer()
    return LocalLLM(build_tiny_llama(tokenizer), tokenizer, model_id="tiny-llama")


@pytest.fixture(scope="module")
def generator() -> ImageGenerator:
    return ImageGenerator(build_tiny_sd_pipeline(sample_size=8))  # 16x16 pixels


def colour_examples(users: list[str]) -> list[SoftExample]:
    names = list(COLOURS)
    examples = []
    for i, user in enumerate(users):
        colour = names[i % len(names)]
        prompt = behaviour_prompt("clothing", [f"a {colour} coat", f"a {colour} shirt"], [])
        examples.append(SoftExample(user, prompt, "a garment", Image.new("RGB", (24, 24), COLOURS[colour])))
    return examples


def test_params_yaml_mirrors_the_defaults() -> None:
    assert load_params(ROOT / "params.yaml").train_soft == TrainSoftConfig()


def test_validation_users_are_a_stable_hash_share() -> None:
    users = [f"user{i}" for i in range(4000)]
    held = [u for u in users if is_validation_user(u, 0.2)]
    assert 0.17 < len(held) / len(users) < 0.23
    assert held == [u for u in users if is_validation_user(u, 0.2)]
    assert not any(is_validation_user(u, 0.0) for u in users[:100])


def test_load_image_resizes_to_minus_one_one(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (255, 0, 128)).save(path)
    pixels = load_image(path, (16, 16))
    assert pixels.shape == (3, 16, 16)
    torch.testing.assert_close(pixels[:, 5, 5], torch.tensor([1.0, -1.0, 128 / 127.5 - 1]), atol=1e-6, rtol=0)
    with pytest.raises(DataError, match="not a readable image"):
        (tmp_path / "bad.png").write_text("no")
        load_image(tmp_path / "bad.png", (16, 16))


def describe_and_keywords(prepared: PreparedScenario) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for split in prepared.splits.itertuples():
        for position, item in enumerate(json.loads(split.history_items)):
            title = prepared.items.set_index("item_id").loc[item, "title"]
            rows.append((split.user_id, "history", item, position, f"line of {title}"))
        rows.append((split.user_id, "supervision", split.supervision_item, 0, "supervision line"))
        rows.append((split.user_id, "target", split.target_item, 0, "target line"))
    rows.append(("u1", "conversation", "1", 1, "Red is my favourite colour."))
    rows.append(("u1", "conversation", "0", 0, "I need something warm."))
    descriptions = pd.DataFrame(
        [
            {
                "user_id": u,
                "scenario": "clothing",
                "kind": k,
                "ref": r,
                "position": p,
                "line": line,
                "source": "text",
            }
            for u, k, r, p, line in rows
        ]
    )
    keywords = pd.DataFrame(
        [
            {
                "user_id": user,
                "scenario": "clothing",
                "target_item": target,
                "preference_keywords": json.dumps(["red", "wool"] if user != "u2" else []),
                "target_keywords": json.dumps(["coat"]),
                "preference_source": "llm",
                "target_source": "llm",
                "truncated_history": 0,
                "n_prompts": 6,
                "preference_grounding": 1.0,
                "per_attribute": "{}",
                "target_answer": "coat",
                "template_version": "v1",
                "model_id": "scripted",
            }
            for user, target in zip(prepared.splits["user_id"], prepared.splits["target_item"])
        ]
    )
    return validate(descriptions, Descriptions, "descriptions"), validate(keywords, Keywords, "keywords")


def test_build_examples_from_the_describe_and_keywords_tables(prepared: PreparedScenario) -> None:
    descriptions, keywords = describe_and_keywords(prepared)
    examples = build_examples(prepared, descriptions, keywords)
    assert [e.user_id for e in examples] == ["u1", "u2", "u3", "u10"]  # natural order
    u1 = examples[0]
    assert u1.prompt == behaviour_prompt(
        "clothing",
        [
            "line of striped red coat",
            "line of striped red shirt",
            "line of plain blue shirt",
            "line of dotted red dress",
        ],
        ["I need something warm.", "Red is my favourite colour."],
    )
    # The supervision item is the label and the target the output: neither is input.
    assert "supervision line" not in u1.prompt and "target line" not in u1.prompt
    assert u1.preference_keywords == "red, wool" and examples[1].preference_keywords == ""
    assert u1.image == prepared.image_file("g6")  # u1's supervision item
    assert [e.user_id for e in build_examples(prepared, descriptions, keywords, ["u2"])] == ["u2"]
    with pytest.raises(DataError, match="'u9' has no split"):
        build_examples(prepared, descriptions, keywords, ["u9"])
    with pytest.raises(DataError, match="'u3' has no preference keywords"):
        build_examples(prepared, descriptions, keywords[keywords["user_id"] != "u3"], ["u3"])
    assert examples_hash(examples) == examples_hash(build_examples(prepared, descriptions, keywords))
    assert examples_hash(examples) != examples_hash(examples[:-1])


def test_training_reports_validation_against_zeroed_embeddings_and_freezes_the_generator(
    llm: LocalLLM, generator: ImageGenerator
) -> None:
    pipeline = generator.pipeline
    frozen = [
        p.detach().clone()
        for m in (llm.model, pipeline.unet, pipeline.vae, pipeline.text_encoder)
        for p in m.parameters()
    ]
    examples = colour_examples([f"u{i}" for i in range(6)])  # u3 is held out at 0.25
    cfg = TrainSoftConfig(steps=4, batch_size=2, lr=1e-2, val_fraction=0.25, val_every=2, val_draws=2)
    lines: list[str] = []
    model, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=0, log=lines.append)

    assert result.val_users == ["u3"] and len(result.train_users) == 5
    assert [c["step"] for c in result.curves] == [1, 2, 3, 4]
    assert [c["val_loss"] is not None for c in result.curves] == [False, True, False, True]
    metrics = result.metrics
    assert metrics["val_loss"] == result.curves[-1]["val_loss"]
    assert {c["val_loss_zeroed"] for c in result.curves if c["val_loss"] is not None} == {
        metrics["val_loss_zeroed"]
    }
    assert metrics["val_beats_zeroed"] == (metrics["val_loss"] < metrics["val_loss_zeroed"])
    for key in (
        "val_loss_initial",
        "val_loss_keywords_only",
        "train_loss_first",
        "train_loss_last",
        "steps_per_second",
    ):
        assert isinstance(metrics[key], float), key
    assert any("E_m zeroed" in line for line in lines)
    assert result.training["val_users"] == ["u3"] and result.training["num_tokens"] == 4
    # Only the adapter trained: every frozen weight is bit-identical.
    after = [
        p for m in (llm.model, pipeline.unet, pipeline.vae, pipeline.text_encoder) for p in m.parameters()
    ]
    assert all(torch.equal(a, b) for a, b in zip(frozen, after))
    assert all(not p.requires_grad for p in after)
    # The same seed gives the same run.
    again, _ = train_soft(cfg, examples, llm=llm, generator=generator, seed=0, log=lines.append)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.slow
def test_loss_goes_down_on_a_tiny_overfit_problem(llm: LocalLLM, generator: ImageGenerator) -> None:
    examples = colour_examples(["a", "b", "c", "d"])
    cfg = TrainSoftConfig(num_tokens=4, prefix_length=4, steps=30, batch_size=2, lr=1e-2, val_fraction=0.0)
    untrained = SoftPreferenceModel(llm, generator.text_width, num_tokens=4, prefix_length=4, seed=0)
    before = validation_losses(untrained, generator, examples, seed=7, draws=6)
    model, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=0)
    after = validation_losses(model, generator, examples, seed=7, draws=6)
    assert result.metrics["n_val_users"] == 0 and result.metrics["val_loss"] is None
    assert after["val_loss_zeroed"] == before["val_loss_zeroed"]  # the baseline does not train
    assert after["val_loss"] < before["val_loss"] - 1e-3
    assert after["val_loss"] < after["val_loss_zeroed"]


def test_nan_loss_stops_naming_step_and_users_and_nothing_is_written(
    llm: LocalLLM, generator: ImageGenerator, tmp_path: Path
) -> None:
    calls = {"n": 0}

    def poison_second_call(module, args, output):
        calls["n"] += 1
        if calls["n"] == 2:
            return type(output)(sample=output.sample * float("nan"))
        return None

    def stage(folder: Path) -> None:
        model, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=0)
        save_adapter(model, folder, {"metrics": result.metrics})

    examples = colour_examples(["u0", "u1", "u2", "u4"])
    cfg = TrainSoftConfig(
        steps=5, batch_size=2, val_fraction=0.0
    )  # no validation calls: UNet call n = step n
    handle = generator.pipeline.unet.register_forward_hook(poison_second_call)
    try:
        with pytest.raises(SoftTrainingError, match=r"loss is nan at step 2; batch users \['u\d', 'u\d'\]"):
            stage(tmp_path / "adapter")
    finally:
        handle.remove()
    assert list(tmp_path.iterdir()) == []


def test_no_tokens_trains_nothing_and_matches_the_baselines(llm: LocalLLM, generator: ImageGenerator) -> None:
    examples = colour_examples([f"u{i}" for i in range(5)])
    cfg = TrainSoftConfig(num_tokens=0, steps=3, val_fraction=0.25, val_draws=2)
    model, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=0)
    assert result.curves == [] and model.soft_preference_embeddings(["x"]).shape == (
        1,
        0,
        generator.text_width,
    )
    metrics = result.metrics
    assert metrics["val_loss"] == metrics["val_loss_zeroed"] == metrics["val_loss_keywords_only"]
    assert metrics["val_beats_zeroed"] is False


def test_refuses_duplicates_and_all_held_out(llm: LocalLLM, generator: ImageGenerator) -> None:
    examples = colour_examples(["u3", "u10"])  # both held out at 0.25
    with pytest.raises(ValueError, match="validation users"):
        train_soft(TrainSoftConfig(val_fraction=0.25), examples, llm=llm, generator=generator, seed=0)
    with pytest.raises(ValueError, match="validation users"):  # the given split, not the hash
        train_soft(
            TrainSoftConfig(val_fraction=0.0), examples, llm=llm, generator=generator, seed=0,
            validation_users={"u3", "u10"},
        )
    with pytest.raises(ValueError, match="duplicate"):
        train_soft(TrainSoftConfig(), examples + examples, llm=llm, generator=generator, seed=0)


def test_given_validation_users_replace_the_hash(llm: LocalLLM, generator: ImageGenerator) -> None:
    """The stages pass prepare's validation users: they validate, the others train, whatever the hash says."""
    examples = colour_examples(["u1", "u2", "u3", "u10"])  # u3 and u10 are the hash's validation users at 0.25
    cfg = TrainSoftConfig(steps=1, batch_size=2, val_fraction=0.25, val_every=1, val_draws=1)
    _, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=0, validation_users={"u1"})
    assert result.val_users == ["u1"]
    assert sorted(result.train_users) == ["u10", "u2", "u3"]
    assert (result.metrics["n_train_users"], result.metrics["n_val_users"]) == (3, 1)
