"""The rehearsal models: the `full` profile's architectures with random weights, small enough for 2 CPU cores.

No model hub and no GPU are reachable here, so the `full` profile (Llama-2-7b-chat,
Stable Diffusion 1.5, BLIP-2 OPT-2.7b, open_clip ViT-B-32) cannot run. The
rehearsal builds, for each of its models, a local folder of the *same class
and the same configuration* — every key of the real checkpoint's config —
except the keys that are sizes (`pmg.config.REHEARSAL_SIZE_KEYS`), with random
weights, and the project's real loaders read them like any checkpoint. The
chain then runs end to end with the real hand-overs:

* the LLM is a `LlamaForCausalLM` with Llama-2's layout — rotary position
  embeddings (theta 10000, 4096 positions), one key/value head per query head
  (no grouped-query attention), RMSNorm, SiLU-gated MLP, untied LM head — and
  Llama-2-chat's `[INST]` chat template; only its width and depth shrink, so
  the soft model's projection maps a small width to the generator's real 768;
* the generator is a `StableDiffusionPipeline` with SD 1.5's UNet block
  types, 8 attention heads and cross-attention width 768, a `CLIPTextModel`
  of width 768 with 77 positions and the real CLIP tokenizer, a 4-level VAE
  (downsampling 8) with 4 latent channels and SD's scaling factor 0.18215,
  and SD 1.5's PNDM scheduler; the UNet's latent side shrinks (8 -> 64 px
  images instead of 64 -> 512 px), channels and depth shrink;
* the captioner is a `Blip2ForConditionalGeneration` (ViT at 224 px with
  14 px patches, a Q-Former with 32 query tokens, an OPT language model
  that stops at a newline as BLIP-2 OPT does) with a `Blip2Processor`;
* the scorer is open_clip's `ViT-B-32` by its real model name: the
  architecture config open_clip itself holds for that name, with its widths
  and depths shrunk, 224 px images, 32 px patches, the real CLIP tokenizer
  and 77-token context.

Tokenizers, and how each differs from the real one:

* Llama-2's tokenizer (a 32000-piece SentencePiece BPE) is not available
  offline. The rehearsal builds a `LlamaTokenizer` with the same pipeline
  (Metaspace `▁` pre-tokenizer with a prefix space, byte fallback, `<unk>`
  = 0, `<s>` = 1, `</s>` = 2, the 256 byte tokens `<0x00>`..`<0xFF>` at
  ids 3..258 as in Llama-2) but a character vocabulary without merges: every
  ASCII character is one token (about 4x the real token count for English
  text), any other character falls back to its UTF-8 bytes.
* SD 1.5's and open_clip's tokenizer *is* the real one: open_clip ships the
  CLIP BPE merges (`bpe_simple_vocab_16e6.txt.gz`), from which the rehearsal
  writes the same 49408-token vocabulary and merges SD 1.5's
  `tokenizer/vocab.json` and `merges.txt` hold; token ids match open_clip's
  own tokenizer (tested).
* OPT's tokenizer (GPT-2's 50265-token byte-level BPE) is not available
  offline: the rehearsal builds a `GPT2Tokenizer` with OPT's special tokens
  (`<s>` = 0, `<pad>` = 1, `</s>` = 2 as BOS and EOS, `<unk>` = 3), the same
  byte-level pre-tokenizer and the 256 byte symbols, no merges (one token per
  byte), plus the `<image>` token `Blip2Processor` adds.

`scale: real` keeps every size too (random weights at the real sizes: a
rehearsal of memory and time for a GPU machine without the checkpoints;
about 23 GB on disk in half precision).
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from pmg.config import REHEARSAL_SIZE_KEYS, ModelSpec, ProfileConfig, RehearsalConfig
from pmg.errors import ConfigError
from pmg.io import output_folder, write_json_atomic

log = logging.getLogger(__name__)

MARKER_FILE = "pmg_rehearsal.json"

# ------------------------------------------------------------------ references

#: meta-llama/Llama-2-7b-chat-hf `config.json`: every key that shapes the model.
LLAMA_2_7B_CHAT: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "initializer_range": 0.02,
    "pretraining_tp": 1,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "vocab_size": 32000,
}

#: Llama-2-7b-chat-hf's chat template (`tokenizer_config.json`).
LLAMA_2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

#: stable-diffusion-v1-5/stable-diffusion-v1-5: the configs of its parts.
SD_1_5: dict[str, dict[str, Any]] = {
    "unet": {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    },
    "vae": {
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    "text_encoder": {
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "projection_dim": 768,
        "vocab_size": 49408,
    },
    "scheduler": {
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    },
}

#: Salesforce/blip2-opt-2.7b: transformers' `Blip2VisionConfig` / `Blip2QFormerConfig`
#: defaults (documented as that checkpoint) and facebook/opt-2.7b's text config,
#: which stops captions at a newline (`eos_token_id` 50118, "\n").
BLIP2_OPT_2_7B: dict[str, Any] = {
    "architectures": ["Blip2ForConditionalGeneration"],
    "num_query_tokens": 32,
    "use_decoder_only_language_model": True,
    "vision_config": {
        "hidden_size": 1408,
        "intermediate_size": 6144,
        "num_hidden_layers": 39,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-06,
        "qkv_bias": True,
    },
    "qformer_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "cross_attention_frequency": 2,
        "encoder_hidden_size": 1408,
        "vocab_size": 30522,
        "max_position_embeddings": 512,
    },
    "text_config": {
        "model_type": "opt",
        "architectures": ["OPTForCausalLM"],
        "hidden_size": 2560,
        "ffn_dim": 10240,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "word_embed_proj_dim": 2560,
        "max_position_embeddings": 2048,
        "activation_function": "relu",
        "do_layer_norm_before": True,
        "enable_bias": True,
        "layer_norm_elementwise_affine": True,
        "tie_word_embeddings": True,
        "vocab_size": 50272,
        "bos_token_id": 2,
        "pad_token_id": 1,
        "eos_token_id": 50118,
    },
}

#: BLIP-2's image processor (`preprocessor_config.json`): 224 px, bicubic, CLIP's mean and std.
BLIP2_IMAGE_PROCESSOR: dict[str, Any] = {
    "do_resize": True,
    "size": {"height": 224, "width": 224},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}


def apply_sizes(reference: Mapping[str, Any], sizes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `reference` with the flat (`part.key`) `sizes` replaced.

    A size key may be absent from the reference when the class default
    applies there (open_clip's `head_width`, 64); it is then set.

    Raises:
        ConfigError: a size key whose parent section the reference does not have.
    """
    config = copy.deepcopy(dict(reference))
    for dotted, value in sizes.items():
        node: Any = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ConfigError(f"rehearsal: size key {dotted!r} is not in the real configuration")
        node[leaf] = copy.deepcopy(value)
    return config


# ------------------------------------------------------------------ tokenizers


def llama_tokenizer():
    """Llama-2's tokenizer pipeline over a character vocabulary (see the module docstring)."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in ["▁", *(chr(code) for code in range(33, 127))]:
        vocab[char] = len(vocab)
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True, add_eos_token=False, legacy=False)
    tokenizer.chat_template = LLAMA_2_CHAT_TEMPLATE
    tokenizer.model_max_length = LLAMA_2_7B_CHAT["max_position_embeddings"]
    return tokenizer


def clip_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's BPE vocabulary and merges, from the file open_clip ships (49408 tokens)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]  # open_clip's own slice
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer():
    """SD 1.5's tokenizer: the real CLIP BPE, lower-cased, 77 tokens (see the module docstring)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def opt_tokenizer():
    """OPT's byte-level tokenizer pipeline over the 256 byte symbols (see the module docstring)."""
    from tokenizers import pre_tokenizers
    from transformers import GPT2Tokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    return GPT2Tokenizer(
        vocab=vocab,
        merges=[],
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos_token=True,
        model_max_length=BLIP2_OPT_2_7B["text_config"]["max_position_embeddings"],
    )


# ---------------------------------------------------------------------- models


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _materialise(build: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype, seed: int):
    """Build a module with seeded random weights directly on `device` in `dtype`."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            module = build()
    finally:
        torch.set_default_dtype(previous)
    return module.eval()


def build_llm(folder: Path, sizes: Mapping[str, Any], *, seed: int, device: torch.device, dtype: torch.dtype) -> dict:
    """Write the rehearsal `LlamaForCausalLM` and its tokenizer into `folder`; return its facts."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = llama_tokenizer()
    values = apply_sizes(LLAMA_2_7B_CHAT, sizes)
    # Llama-2-7b has no grouped-query attention: one key/value head per query head.
    values["num_key_value_heads"] = values["num_attention_heads"]
    values["vocab_size"] = len(tokenizer)
    values["head_dim"] = values["hidden_size"] // values["num_attention_heads"]
    config = LlamaConfig(**values)
    model = _materialise(lambda: LlamaForCausalLM(config), device, dtype, seed)
    model.generation_config.pad_token_id = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"class": "LlamaForCausalLM", "parameters": _count(model), "config": values}


def build_generator(
    folder: Path, sizes: Mapping[str, Any], *, seed: int, device: torch.device, dtype: torch.dtype
) -> dict:
    """Write the rehearsal `StableDiffusionPipeline` (no safety checker) into `folder`; return its facts."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    values = apply_sizes(SD_1_5, sizes)
    text_values = dict(values["text_encoder"])
    text_values.pop("architectures")
    text_values.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    unet = _materialise(lambda: UNet2DConditionModel(**values["unet"]), device, dtype, seed)
    vae = _materialise(lambda: AutoencoderKL(**values["vae"]), device, dtype, seed + 1)
    text_encoder = _materialise(lambda: CLIPTextModel(CLIPTextConfig(**text_values)), device, dtype, seed + 2)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(values["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    parameters = _count(unet) + _count(vae) + _count(text_encoder)
    return {"class": "StableDiffusionPipeline", "parameters": parameters, "config": values}


def build_captioner(
    folder: Path, sizes: Mapping[str, Any], *, seed: int, device: torch.device, dtype: torch.dtype
) -> dict:
    """Write the rehearsal `Blip2ForConditionalGeneration` and its processor into `folder`; return its facts."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    tokenizer = opt_tokenizer()
    values = apply_sizes(BLIP2_OPT_2_7B, sizes)
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(**BLIP2_IMAGE_PROCESSOR),
        tokenizer=tokenizer,
        num_query_tokens=values["num_query_tokens"],
    )
    text = values["text_config"]
    text.update(
        vocab_size=len(tokenizer),
        word_embed_proj_dim=text["hidden_size"],
        # BLIP-2 OPT ends a caption at a newline: byte-level "\n" is the symbol "Ċ".
        eos_token_id=tokenizer.convert_tokens_to_ids("Ċ"),
        bos_token_id=tokenizer.convert_tokens_to_ids("</s>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    values["qformer_config"]["encoder_hidden_size"] = values["vision_config"]["hidden_size"]
    values["image_token_index"] = tokenizer.convert_tokens_to_ids("<image>")
    config = Blip2Config(**{k: v for k, v in values.items() if k != "architectures"})
    model = _materialise(lambda: Blip2ForConditionalGeneration(config), device, dtype, seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return {"class": "Blip2ForConditionalGeneration", "parameters": _count(model), "config": values}


def build_scorer(
    folder: Path, name: str, sizes: Mapping[str, Any], *, seed: int, device: torch.device, dtype: torch.dtype
) -> dict:
    """Write the rehearsal open_clip model `name` (its built-in config, sizes replaced) into `folder`."""
    import open_clip
    from open_clip import CLIP

    from pmg.models.scorer import save_open_clip_folder

    reference = open_clip.get_model_config(name)
    if reference is None:
        raise ConfigError(f"rehearsal: {name!r} is not a built-in open_clip architecture")
    values = apply_sizes(reference, sizes)
    if any(key in values for key in ("multimodal_cfg",)) or "hf_model_name" in values.get("text_cfg", {}):
        raise ConfigError(f"rehearsal: open_clip {name!r} is not a plain CLIP (only CLIP architectures are built)")
    model = _materialise(lambda: CLIP(**copy.deepcopy(values)), device, dtype, seed)
    save_open_clip_folder(model.float(), values, folder)
    return {"class": f"open_clip.CLIP ({name})", "parameters": _count(model), "config": values}


# ---------------------------------------------------------------------- driver

#: profile role -> (the spec kind the rehearsal builds, what it builds)
ROLES: dict[str, tuple[str, str]] = {
    "llm": ("hf", "Llama-2-7b-chat (LlamaForCausalLM)"),
    "generator": ("diffusers", "Stable Diffusion 1.5 (StableDiffusionPipeline)"),
    "captioner": ("blip2", "BLIP-2 OPT-2.7b (Blip2ForConditionalGeneration)"),
    "scorer": ("open_clip", "open_clip ViT-B-32"),
}


def build_rehearsal(
    cfg: RehearsalConfig,
    profile: ProfileConfig,
    *,
    device: str | torch.device = "cpu",
    only: tuple[str, ...] | None = None,
    say: Callable[[str], object] = print,
) -> dict[str, dict]:
    """Write every model folder of the rehearsal profile; each appears whole or not at all.

    Args:
        cfg: the `rehearsal` section (sizes, scale, seed).
        profile: the profile whose `llm`, `generator`, `captioner` and
            `scorer` paths are written (kinds `hf`, `diffusers`, `blip2`,
            `open_clip`).
        device: where the random weights are made (`cuda` makes a `real`
            scale rehearsal in seconds); tiny ones are made on CPU.
        only: the roles to build (default all).
        say: progress lines.

    Returns:
        role -> `{path, class, parameters, seconds, config}`; the same facts
        but `seconds` go into `<folder>/pmg_rehearsal.json`.

    Raises:
        ConfigError: a spec of another kind, a path that is not a local
            folder, or a size key the real configuration does not have.
    """
    from pmg.models.device import resolve_device, resolve_dtype

    torch_device = resolve_device(device, key="rehearsal device")
    # Tiny models are written in fp32; real-sized ones in the GPU's half precision (half the disk).
    dtype = torch.float32 if cfg.scale == "tiny" else resolve_dtype("auto", torch_device)
    report: dict[str, dict] = {}
    for role, (kind, what) in ROLES.items():
        if only is not None and role not in only:
            continue
        spec: ModelSpec = getattr(profile, role)
        key = f"profiles.{cfg.profile}.{role}"
        if spec.kind != kind:
            raise ConfigError(f"{key}.kind is {spec.kind!r}; the rehearsal builds {what}, kind {kind!r}")
        if not spec.path or spec.hub:
            raise ConfigError(f"{key}.path must be a local folder for the rehearsal (got {spec.path!r})")
        started = time.perf_counter()
        sizes = cfg.sizes(role)
        with output_folder(spec.path) as staging:
            if role == "llm":
                facts = build_llm(staging, sizes, seed=cfg.seed, device=torch_device, dtype=dtype)
            elif role == "generator":
                facts = build_generator(staging, sizes, seed=cfg.seed, device=torch_device, dtype=dtype)
            elif role == "captioner":
                facts = build_captioner(staging, sizes, seed=cfg.seed, device=torch_device, dtype=dtype)
            else:
                name = spec.name or "ViT-B-32"
                facts = build_scorer(staging, name, sizes, seed=cfg.seed, device=torch_device, dtype=dtype)
            facts = {
                "path": spec.path,
                "rehearses": what,
                "scale": cfg.scale,
                "seed": cfg.seed,
                "sizes_replaced": sizes,
                **facts,
            }
            # No timing in the folder: a rebuild on the same inputs writes the same bytes.
            write_json_atomic(staging / MARKER_FILE, facts)
        report[role] = {**facts, "seconds": round(time.perf_counter() - started, 2)}
        say(f"rehearsal {role}: {facts['class']}, {facts['parameters']:,} parameters -> {spec.path} "
            f"({report[role]['seconds']:.1f} s)")
    return report


def size_keys(role: str) -> frozenset[str]:
    """The keys of `role`'s real configuration the rehearsal may change (`pmg.config.REHEARSAL_SIZE_KEYS`)."""
    return REHEARSAL_SIZE_KEYS[role]


def read_marker(folder: str | Path) -> dict | None:
    """The rehearsal facts written beside a rehearsal model, or None for any other folder."""
    path = Path(folder) / MARKER_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
