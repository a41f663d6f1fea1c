"""The soft preference model: shapes, padding, what trains, save/load, refusals.

Tiny random components built in code (a 2-layer Llama with GQA, a tiny SD
pipeline); each test asserts a behaviour that breaks if the adapter is wired
wrongly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pmg.errors import ModelError
from pmg.method.soft import (
    ADAPTER_FILE,
    CONFIG_FILE,
    SoftPreferenceModel,
    behaviour_prompt,
    save_adapter,
)
from pmg.models.generator import ImageGenerator
from pmg.models.llm import LocalLLM
from pmg.models.tiny import build_tiny_llama, build_tiny_sd_pipeline, tiny_llm_tokenizer

TEXT_WIDTH = 32  # the tiny SD text encoder's width

SHORT = behaviour_prompt("clothing", ["a red wool coat"], [])
LONG = behaviour_prompt(
    "clothing",
    ["a red wool coat, striped", "a blue linen shirt for summer", "a green denim jacket"],
    ["I need something warm.", "Red is my colour."],
)


def make_llm(seed: int = 0) -> LocalLLM:
    tokenizer = tiny_llm_tokenizer()
    return LocalLLM(build_tiny_llama(tokenizer, seed=seed), tokenizer, model_id=f"tiny-llama-{seed}")


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    return make_llm()


@pytest.fixture(scope="module")
def generator() -> ImageGenerator:
    return ImageGenerator(build_tiny_sd_pipeline(sample_size=8))  # 16x16 pixels


def frozen_state(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for module in modules for p in module.parameters()]


def test_behaviour_prompt_lists_lines_and_ends_with_the_instruction() -> None:
    prompt = behaviour_prompt("movies", ["Heat (crime)", "Alien\n(sci-fi)"], ["something scary"])
    lines = prompt.splitlines()
    assert lines[0] == "The user liked these movies:"
    assert "- Alien (sci-fi)" in lines  # one line per item, whitespace folded
    assert "The user said:" in lines and "- something scary" in lines
    assert lines[-1] == "Describe the user's visual preference:"
    assert "The user said:" not in behaviour_prompt("movies", ["Heat"], [])


@pytest.mark.parametrize("use_prefix", [True, False])
def test_shape_is_batch_by_tokens_by_text_width(llm: LocalLLM, use_prefix: bool) -> None:
    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=3, prefix_length=2, use_prefix=use_prefix)
    soft = model.soft_preference_embeddings([SHORT, LONG, SHORT], batch_size=2)
    assert soft.shape == (3, 3, TEXT_WIDTH)
    assert soft.dtype == torch.float32 and torch.isfinite(soft).all()
    assert not soft.requires_grad


@pytest.mark.parametrize("use_prefix", [True, False])
def test_left_padded_batch_equals_prompt_alone(llm: LocalLLM, use_prefix: bool) -> None:
    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=4, prefix_length=3, use_prefix=use_prefix)
    alone = model.soft_preference_embeddings([SHORT])
    ids, mask = model.tokenize([SHORT, LONG])
    assert mask[0, 0] == 0 and mask[1, 0] == 1  # SHORT is the padded row
    batched = model.soft_preference_embeddings([SHORT, LONG])
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1], model.soft_preference_embeddings([LONG])[0], atol=1e-5, rtol=0)


def test_prefix_acts_as_virtual_tokens_read_before_the_prompt(llm: LocalLLM) -> None:
    """At initialisation the prefix is the LLM's own cache of a short text: E_m must equal
    a plain forward over that text + prompt + tokens (checks cache, mask, positions, GQA)."""
    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=2, prefix_length=5)
    ids = model._init_ids(5) + model.token_ids(SHORT)
    embeds = llm.model.get_input_embeddings()(torch.tensor([ids]))
    inputs = torch.cat([embeds, model.token_embeddings.unsqueeze(0)], dim=1)
    with torch.no_grad():
        hidden = llm.model.model(inputs_embeds=inputs).last_hidden_state[:, -2:]
        expected = model.projection(hidden)
    torch.testing.assert_close(model.soft_preference_embeddings([SHORT]), expected, atol=1e-5, rtol=0)
    # And the prefix matters: another prefix gives other embeddings.
    with torch.no_grad():
        model.prefix.add_(0.5)
    assert not torch.allclose(model.soft_preference_embeddings([SHORT]), expected, atol=1e-3)


def test_gradient_reaches_only_the_adapter_and_one_step_changes_it(
    llm: LocalLLM, generator: ImageGenerator
) -> None:
    pipeline = generator.pipeline
    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=4, prefix_length=4)
    frozen = (llm.model, pipeline.unet, pipeline.vae, pipeline.text_encoder)
    for module in frozen[1:]:
        module.requires_grad_(False)
    before_frozen = frozen_state(*frozen)
    before_adapter = {name: p.detach().clone() for name, p in model.named_parameters()}

    torch.manual_seed(0)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        latents = pipeline.vae.encode(image).latent_dist.mean * pipeline.vae.config.scaling_factor
        keywords = generator.encode_text(["red, wool", "blue"])  # E_k: (2, 77, 32)
    soft = model.embed([SHORT, LONG])  # E_m: (2, 4, 32)
    noise = torch.randn_like(latents)
    timesteps = torch.tensor([10, 500])
    noisy = pipeline.scheduler.add_noise(latents, noise, timesteps)
    prediction = pipeline.unet(
        noisy, timesteps, encoder_hidden_states=torch.cat([soft, keywords], dim=1)
    ).sample
    loss = torch.nn.functional.mse_loss(prediction, noise)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    loss.backward()

    names = {name for name, _ in model.named_parameters()}
    assert names == {"token_embeddings", "prefix", "projection.weight", "projection.bias"}
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for module in frozen for p in module.parameters())
    optimizer.step()
    for name, param in model.named_parameters():
        assert not torch.equal(param, before_adapter[name]), f"{name} did not change"
    for old, new in zip(before_frozen, frozen_state(*frozen)):
        assert torch.equal(old, new)


def test_no_prefix_and_no_tokens(llm: LocalLLM) -> None:
    plain = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=2, use_prefix=False)
    assert plain.prefix_key_values() is None and plain.prefix_length == 0
    assert {n for n, _ in plain.named_parameters()} == {
        "token_embeddings",
        "projection.weight",
        "projection.bias",
    }
    assert plain.soft_preference_embeddings([SHORT]).shape == (1, 2, TEXT_WIDTH)

    empty = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=0)
    soft = empty.soft_preference_embeddings([SHORT, LONG])
    assert soft.shape == (2, 0, TEXT_WIDTH)


def test_reparameterised_prefix_has_the_cache_shape(llm: LocalLLM) -> None:
    model = SoftPreferenceModel(
        llm, TEXT_WIDTH, num_tokens=2, prefix_length=3, reparameterize=True, reparam_hidden=16
    )
    config = llm.model.config
    kv = model.prefix_key_values()
    head_dim = config.hidden_size // config.num_attention_heads
    assert kv.shape == (config.num_hidden_layers, 2, config.num_key_value_heads, 3, head_dim)
    assert model.prefix is None and model.prefix_encoder is not None
    assert model.soft_preference_embeddings([SHORT]).shape == (1, 2, TEXT_WIDTH)


def train_a_little(model: SoftPreferenceModel) -> None:
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        model.embed([SHORT, LONG]).pow(2).mean().backward()
        optimizer.step()


@pytest.mark.parametrize(
    "options", [{}, {"use_prefix": False}, {"reparameterize": True, "reparam_hidden": 8}]
)
def test_save_load_round_trip_gives_identical_embeddings(
    llm: LocalLLM, tmp_path: Path, options: dict
) -> None:
    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=3, prefix_length=2, **options)
    train_a_little(model)
    folder = save_adapter(model, tmp_path / "adapter", {"data_hash": "abc", "training": {"steps": 2}})
    assert sorted(p.name for p in folder.iterdir()) == [ADAPTER_FILE, CONFIG_FILE]
    stored = load_file(str(folder / ADAPTER_FILE))
    assert set(stored) == set(model.state_dict())  # the trainable tensors only, no LLM weights
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["num_tokens"] == 3 and config["text_width"] == TEXT_WIDTH and config["data_hash"] == "abc"
    assert config["base_llm"]["num_key_value_heads"] == 2 and config["base_llm"]["fingerprint"]

    loaded = SoftPreferenceModel.load(folder, llm, text_width=TEXT_WIDTH)
    expected = model.soft_preference_embeddings([SHORT, LONG])
    assert torch.equal(loaded.soft_preference_embeddings([SHORT, LONG]), expected)


def test_load_refuses_a_mismatched_llm_or_text_width(llm: LocalLLM, tmp_path: Path) -> None:
    folder = save_adapter(
        SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=2, prefix_length=2), tmp_path / "adapter"
    )
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_llm_tokenizer()
    torch.manual_seed(0)
    wider = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
    )
    other = LocalLLM(wider, tokenizer, model_id="wider")
    with pytest.raises(ModelError, match=r"hidden_size 32 \(adapter\) != 48.*num_layers 2 \(adapter\) != 3"):
        SoftPreferenceModel.load(folder, other, text_width=TEXT_WIDTH)
    with pytest.raises(ModelError, match=r"text_width 32 \(adapter\) != 64"):
        SoftPreferenceModel.load(folder, llm, text_width=64)
    # Same shapes, other weights: refused unless asked not to check.
    with pytest.raises(ModelError, match="fingerprint"):
        SoftPreferenceModel.load(folder, make_llm(seed=1), text_width=TEXT_WIDTH)
    SoftPreferenceModel.load(folder, make_llm(seed=1), text_width=TEXT_WIDTH, check_fingerprint=False)
    with pytest.raises(ModelError, match="not a soft preference adapter"):
        SoftPreferenceModel.load(tmp_path / "nowhere", llm, text_width=TEXT_WIDTH)


def test_save_replaces_atomically_and_a_failed_save_keeps_the_old_folder(
    llm: LocalLLM, tmp_path: Path
) -> None:
    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=2, prefix_length=2)
    folder = save_adapter(model, tmp_path / "adapter", {"data_hash": "first"})
    with pytest.raises(TypeError):  # not JSON-serialisable: fails after the tensors were written
        save_adapter(model, folder, {"data_hash": object()})
    assert json.loads((folder / CONFIG_FILE).read_text())["data_hash"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary left behind
    with pytest.raises(ValueError, match="num_tokens"):
        save_adapter(model, folder, {"num_tokens": 9})
    save_adapter(model, folder, {"data_hash": "second"})
    assert json.loads((folder / CONFIG_FILE).read_text())["data_hash"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_saved_adapter_has_ordinary_modes_and_same_bytes(llm: LocalLLM, tmp_path: Path) -> None:
    """mkdtemp made the folder 0700 and safetensors the weights 0600; a rerun writes the same bytes."""
    import os
    import stat

    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=2, prefix_length=2)
    first = save_adapter(model, tmp_path / "a", {"data_hash": "x"})
    second = save_adapter(model, tmp_path / "b", {"data_hash": "x"})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(first.stat().st_mode) == 0o777 & ~umask
    for path in first.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
        assert path.read_bytes() == (second / path.name).read_bytes(), path


def test_long_prompts_are_cut_from_the_left(llm: LocalLLM) -> None:
    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=2, prefix_length=2, max_prompt_tokens=40)
    ids, _ = model.tokenize([LONG, SHORT])
    assert ids.shape[1] == 40 and model.truncated_prompts == 2
    tail = llm.tokenizer.decode(ids[0].tolist())
    assert tail.endswith("Describe the user's visual preference:")


def test_image_generator_accepts_the_conditioning(llm: LocalLLM, generator: ImageGenerator) -> None:
    """concat(E_m, E_k) enters the unmodified pipeline as prompt_embeds (length L + 77)."""
    model = SoftPreferenceModel(llm, TEXT_WIDTH, num_tokens=4, prefix_length=2)
    soft = model.soft_preference_embeddings([SHORT])
    prompt = torch.cat([soft, generator.encode_text(["red, wool"])], dim=1)
    negative = generator.unconditional_embeds(1, prompt.shape[1])
    images = generator.generate(prompt, negative, steps=2, guidance_scale=2.0, seeds=[0])
    assert isinstance(images[0], Image.Image) and images[0].size == (16, 16)
