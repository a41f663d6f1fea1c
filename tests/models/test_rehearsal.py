"""The rehearsal models: the full profile's classes and configurations, read by the project's real loaders,
with the real hand-overs (LLM width -> projection -> 768, 77-token encoder, [E_m; E_k; E_t], image sizes,
BLIP-2 captions).

The models are built once per session from `params.yaml`'s `rehearsal` section
into a temporary folder (`rehearsal_dirs`, tests/conftest.py; about 10 s on 2
cores, most of it the real CLIP vocabulary); the tests that need them are
marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from pmg.config import REHEARSAL_SIZE_KEYS, GenerateConfig, ModelSpec, TrainSoftConfig, flatten_keys, load_params
from pmg.errors import ConfigError, ModelError
from pmg.models import rehearsal as R
from pmg.models.captioner import load_captioner
from pmg.models.generator import load_generator
from pmg.models.llm import load_llm
from pmg.models.scorer import CONFIG_NAME, load_scorer

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"
ROLES = ("llm", "generator", "captioner", "scorer")


def _references() -> dict[str, dict]:
    import open_clip

    return {
        "llm": R.LLAMA_2_7B_CHAT,
        "generator": {k: v for k, v in R.SD_1_5.items() if k != "scheduler"},
        "captioner": R.BLIP2_OPT_2_7B,
        "scorer": open_clip.get_model_config("ViT-B-32"),
    }


# ------------------------------------------------------------------ fast: config


def test_rehearsal_configs_are_the_real_ones_except_sizes() -> None:
    params = load_params(PARAMS)
    for role, reference in _references().items():
        sizes = params.rehearsal.sizes(role)
        assert sizes, role  # the tiny scale does shrink every model
        built = R.apply_sizes(reference, sizes)
        ours, real = flatten_keys(built), flatten_keys(reference)
        changed = {k for k in set(ours) | set(real) if ours.get(k) != real.get(k)}
        assert changed == set(sizes) and changed <= REHEARSAL_SIZE_KEYS[role], role
        # The hand-over widths are not sizes: they never change.
    assert not {"hidden_size", "max_position_embeddings"} & {
        k.split(".", 1)[1] for k in REHEARSAL_SIZE_KEYS["generator"] if k.startswith("text_encoder.")
    }
    assert "unet.cross_attention_dim" not in REHEARSAL_SIZE_KEYS["generator"]
    assert "vae.latent_channels" not in REHEARSAL_SIZE_KEYS["generator"]
    assert "text_cfg.context_length" not in REHEARSAL_SIZE_KEYS["scorer"]


def test_only_size_keys_may_change(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rehearsal\.llm.*\['rope_theta'\] are not size keys of the real configuration"):
        load_params(PARAMS, {"rehearsal.llm.rope_theta": 500000.0})
    with pytest.raises(ConfigError, match=r"\['unet\.cross_attention_dim'\] are not size keys"):
        load_params(PARAMS, {"rehearsal.generator.unet.cross_attention_dim": 128})
    assert load_params(PARAMS, {"rehearsal.scale": "real"}).rehearsal.sizes("llm") == {}


def test_the_rehearsal_profile_names_the_full_profiles_classes() -> None:
    params = load_params(PARAMS)
    rehearsal, full = params.profiles["rehearsal"], params.profiles["full"]
    for role in ROLES:
        ours, theirs = getattr(rehearsal, role), getattr(full, role)
        assert (ours.kind, ours.architecture, ours.name) == (theirs.kind, theirs.architecture, theirs.name), role
        assert ours.hub is None and ours.path.startswith("data/rehearsal/")
    assert params.rehearsal.profile == "rehearsal"


def test_a_spec_of_another_kind_is_refused(tmp_path: Path) -> None:
    params = load_params(PARAMS, {"profiles.rehearsal.llm.kind": "gguf"})
    with pytest.raises(ConfigError, match=r"profiles\.rehearsal\.llm\.kind is 'gguf'; the rehearsal builds Llama-2"):
        R.build_rehearsal(params.rehearsal, params.profiles["rehearsal"], say=lambda _: None)


# ------------------------------------------------------------ slow: the models


@pytest.fixture(scope="session")
def profile(rehearsal_dirs):
    params = load_params(PARAMS, {f"profiles.rehearsal.{role}.path": str(p) for role, p in rehearsal_dirs.items()})
    return params.profiles["rehearsal"]


@pytest.fixture(scope="session")
def llm(profile):
    return load_llm(profile.llm, "cpu", key="profiles.rehearsal.llm")


@pytest.fixture(scope="session")
def generator(profile):
    return load_generator(profile.generator, "cpu", key="profiles.rehearsal.generator")


@pytest.fixture(scope="session")
def scorer(profile):
    return load_scorer(profile.scorer, "cpu", key="profiles.rehearsal.scorer")


@pytest.fixture(scope="session")
def captioner(profile):
    return load_captioner(profile.captioner, "cpu", key="profiles.rehearsal.captioner", max_new_tokens=6)


@pytest.mark.slow
def test_every_folder_records_what_it_rehearses(rehearsal_dirs) -> None:
    for role, folder in rehearsal_dirs.items():
        marker = R.read_marker(folder)
        assert marker is not None and marker["scale"] == "tiny" and marker["parameters"] > 0, role
    assert R.read_marker(rehearsal_dirs["llm"].parent) is None
    # Safetensors only, no pickle anywhere.
    files = [p for folder in rehearsal_dirs.values() for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert sum(p.suffix == ".safetensors" for p in files) == 6  # llm, unet, vae, text encoder, blip2, clip


@pytest.mark.slow
def test_a_rebuild_writes_the_same_bytes(rehearsal_dirs, tmp_path: Path) -> None:
    """Same seed and sizes, same files: `dvc.lock` hashes match between machines and runs (issue 16)."""
    import hashlib

    folders = {"llm": tmp_path / "llm", "scorer": tmp_path / "clip"}
    params = load_params(PARAMS, {f"profiles.rehearsal.{role}.path": str(path) for role, path in folders.items()})
    report = R.build_rehearsal(params.rehearsal, params.profiles["rehearsal"], only=tuple(folders), say=lambda _: None)
    assert all(entry["seconds"] >= 0 for entry in report.values())  # the timing goes to the metrics only

    def digests(folder: Path) -> dict[str, str]:
        out = {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        out[R.MARKER_FILE] = {k: v for k, v in R.read_marker(folder).items() if k != "path"}  # the folder differs here
        return out

    for role, folder in folders.items():
        assert digests(folder) == digests(rehearsal_dirs[role]), role


@pytest.mark.slow
def test_llm_has_llama_2s_layout_and_chat_template(llm) -> None:
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

    model, config = llm.model, llm.model.config
    assert type(model) is LlamaForCausalLM and config.architectures == ["LlamaForCausalLM"]
    assert config.num_key_value_heads == config.num_attention_heads  # no grouped-query attention
    assert config.rope_parameters["rope_theta"] == 10000.0 and config.max_position_embeddings == 4096
    assert config.hidden_act == "silu" and config.tie_word_embeddings is False
    assert isinstance(model.model.norm, LlamaRMSNorm) and isinstance(model.model.rotary_emb, LlamaRotaryEmbedding)
    assert config._attn_implementation == "sdpa"
    assert llm.context_length == 4096
    tokenizer = llm.tokenizer
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert llm.format_prompt("red dress") == "<s>[INST] red dress [/INST]"
    system = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], tokenize=False
    )
    assert system == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST]"
    # Byte fallback: a character outside the vocabulary is its UTF-8 bytes, and decodes back.
    ids = tokenizer("é", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[-2:] == ["<0xC3>", "<0xA9>"]
    assert tokenizer.decode(tokenizer("a café, red")["input_ids"], skip_special_tokens=True) == "a café, red"
    answers = llm.generate(["red dress", "a longer prompt about shirts"], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


@pytest.mark.slow
def test_generator_has_sd_15s_structure(generator) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTextModel

    pipeline = generator.pipeline
    assert type(pipeline) is StableDiffusionPipeline and type(pipeline.text_encoder) is CLIPTextModel
    unet = pipeline.unet.config
    assert list(unet.down_block_types) == R.SD_1_5["unet"]["down_block_types"]
    assert list(unet.up_block_types) == R.SD_1_5["unet"]["up_block_types"]
    assert unet.cross_attention_dim == 768 and unet.in_channels == unet.out_channels == 4
    assert unet.attention_head_dim == 8
    assert pipeline.text_encoder.config.hidden_size == generator.text_width == 768
    assert pipeline.text_encoder.config.max_position_embeddings == 77 == pipeline.tokenizer.model_max_length
    assert pipeline.vae.config.scaling_factor == 0.18215 and pipeline.vae.config.latent_channels == 4
    assert pipeline.vae_scale_factor == 8 and generator.default_size == (64, 64)
    assert type(pipeline.scheduler).__name__ == "PNDMScheduler"
    assert pipeline.safety_checker is None
    assert {type(p) for p in pipeline.unet.attn_processors.values()} == {AttnProcessor2_0}  # SDPA


@pytest.mark.slow
def test_sd_tokenizer_is_the_real_clip_tokenizer(generator) -> None:
    import open_clip

    reference = open_clip.get_tokenizer("ViT-B-32")
    texts = ["a red wool dress, striped!", "Movie poster: a 1970s thriller in Paris", "🙂 happy"]
    ours = generator.tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")
    theirs = reference(texts)  # (3, 77), padded with 0 where SD 1.5's tokenizer pads with <|endoftext|>
    for row, mask, reference_row in zip(ours["input_ids"], ours["attention_mask"], theirs):
        assert row[mask.bool()].tolist() == reference_row[reference_row != 0].tolist()
    assert ours["input_ids"][0, -1] == generator.tokenizer.eos_token_id == 49407
    assert len(generator.tokenizer) == 49408


@pytest.mark.slow
def test_scorer_is_vit_b_32_by_name(scorer, rehearsal_dirs, tmp_path: Path) -> None:
    from open_clip import CLIP

    assert type(scorer.model) is CLIP
    assert scorer.model.visual.image_size == (224, 224) and scorer.model.visual.patch_size == (32, 32)
    assert scorer.model.context_length == 77
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    embeds = scorer.embed_images(images)
    assert embeds.shape == (2, 64) and torch.allclose(embeds.norm(dim=1), torch.ones(2), atol=1e-5)
    # The same folder under another architecture's name: the check names both.
    with pytest.raises(ModelError, match=r"is not the open_clip architecture 'ViT-B-16'.*vision_cfg.patch_size: 32 \(folder\) vs 16"):
        load_scorer(ModelSpec(kind="open_clip", name="ViT-B-16", path=str(rehearsal_dirs["scorer"])), "cpu", key="k")
    # A folder whose context length is not ViT-B-32's is not ViT-B-32, whatever its sizes.
    other = tmp_path / "clip"
    other.mkdir()
    config = json.loads((rehearsal_dirs["scorer"] / CONFIG_NAME).read_text())
    config["model_cfg"]["text_cfg"]["context_length"] = 32
    (other / CONFIG_NAME).write_text(json.dumps(config))
    (other / "open_clip_model.safetensors").symlink_to(rehearsal_dirs["scorer"] / "open_clip_model.safetensors")
    with pytest.raises(ModelError, match=r"text_cfg.context_length: 32 \(folder\) vs 77 \(ViT-B-32\)"):
        load_scorer(ModelSpec(kind="open_clip", name="ViT-B-32", path=str(other)), "cpu", key="k")


@pytest.mark.slow
def test_captioner_is_blip2_with_an_opt_language_model(captioner) -> None:
    from transformers import Blip2ForConditionalGeneration, OPTForCausalLM

    model = captioner.model
    assert type(model) is Blip2ForConditionalGeneration and type(model.language_model) is OPTForCausalLM
    assert model.config.num_query_tokens == 32 and model.config.vision_config.image_size == 224
    newline = captioner.processor.tokenizer.convert_tokens_to_ids("Ċ")
    assert model.config.text_config.eos_token_id == newline  # BLIP-2 OPT stops a caption at a newline
    pixels = captioner.processor(images=[Image.new("RGB", (90, 50), "red")], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    captions = captioner.caption([Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")])
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)


@pytest.mark.slow
def test_hand_overs_llm_width_to_768_and_77_token_conditions(llm, generator, scorer, captioner) -> None:
    """The chain's shapes at every hand-over, through the code the stages run (`pmg.method`)."""
    from pmg.method.generate import GenerationRequest, build_conditions, generate_candidates
    from pmg.method.soft import SoftPreferenceModel, behaviour_prompt

    width = llm.model.config.hidden_size
    assert width < 768  # the LLM is small; the projection still targets SD's real text width
    soft_model = SoftPreferenceModel(llm, generator.text_width, num_tokens=4, prefix_length=4)
    assert soft_model.projection.in_features == width and soft_model.projection.out_features == 768
    assert soft_model.prefix.shape == (2, 2, 4, 4, width // 4)  # (layers, k/v, kv heads = heads, S, head_dim)
    prompt = behaviour_prompt("clothing", ["red wool coat", "blue striped shirt"], [])
    soft = soft_model.soft_preference_embeddings([prompt])  # E_m
    assert soft.shape == (1, 4, 768) and soft.dtype == torch.float32
    request = GenerationRequest(
        user_id="u1",
        scenario="clothing",
        target_item="g1",
        preference_keywords=("red", "wool"),
        target_keywords=("green", "trousers"),
        behaviour_prompt=prompt,
    )
    cfg = GenerateConfig(steps=2, guidance_scale=7.5)
    prompt_embeds, negative, plan = build_conditions(request, generator=generator, soft_model=soft_model, cfg=cfg, seed=0)
    assert prompt_embeds.shape == negative.shape == (5, 4 + 77 + 77, 768)
    target, keywords, _ = generator.encode_text([request.target_text, request.preference_text, ""])
    assert keywords.shape == target.shape == (77, 768)
    # [E_m; E_k; E_t] for 2:2: the soft tokens, the 77 keyword tokens, the 77 target tokens.
    both = [i for i, c in enumerate(plan) if c.w_p == c.w_t][0]
    assert torch.allclose(prompt_embeds[both], torch.cat([soft[0], keywords, target]))
    result = generate_candidates(request, generator=generator, soft_model=soft_model, cfg=cfg, seed=0, only=[both])
    image = result.images[0]
    assert image.size == (64, 64) and image.mode == "RGB"
    assert scorer.embed_images(result.images).shape == (1, 64)
    assert isinstance(captioner.caption(result.images)[0], str)


@pytest.mark.slow
def test_soft_training_backward_reaches_the_adapter_through_sd_15s_unet(llm, generator) -> None:
    """Two real `train_soft` steps: the denoising loss of the 768-wide UNet trains the small LLM's adapter."""
    from pmg.method.soft import behaviour_prompt
    from pmg.method.train_soft import SoftExample, train_soft

    examples = [
        SoftExample(
            user_id=f"u{i}",
            prompt=behaviour_prompt("clothing", [f"item {i} red", "blue coat"], []),
            preference_keywords="red, wool",
            image=Image.new("RGB", (64, 64), color),
        )
        for i, color in enumerate(("red", "navy", "olive"))
    ]
    cfg = TrainSoftConfig(steps=2, batch_size=2, val_fraction=0.0, lr=1e-2)
    before = {n: p.detach().clone() for n, p in llm.model.named_parameters()}
    model, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=0, log=lambda _: None)
    assert result.metrics["steps"] == 2 and len(result.curves) == 2
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.curves)
    assert model.projection.out_features == 768
    # The frozen LLM did not move.
    assert all(torch.equal(before[n], p) for n, p in llm.model.named_parameters())
