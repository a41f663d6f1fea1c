"""Tiny random-init models, built in code, for tests and smoke runs.

Every builder is seeded and makes the same weights each time. They follow
diffusers' `get_dummy_components` pattern: a UNet with (32, 64) channels, a
2-layer CLIP text encoder, a tiny VAE, a tokenizer built in-process — nothing
is downloaded. The models are real transformers / diffusers / open_clip /
lpips classes, so saving them and loading them back exercises the real
loading code of :mod:`pmg.models`.
"""

from __future__ import annotations

from pathlib import Path

import torch

# A chat template of the usual shape: user turns, then the assistant's cue.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_llm_tokenizer(*, chat_template: bool = True):
    """A byte-level BPE tokenizer (no merges: one token per byte) with a chat template.

    Has BOS `<s>` and EOS `</s>` but no pad token, like many LLM tokenizers.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE if chat_template else None,
        model_max_length=256,
    )


def build_tiny_llama(tokenizer, *, seed: int = 0):
    """A 2-layer `LlamaForCausalLM` (hidden 32) over `tokenizer`'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_llm(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Llama and its tokenizer as a Hugging Face folder (`kind: hf`)."""
    tokenizer = tiny_llm_tokenizer()
    model = build_tiny_llama(tokenizer, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def tiny_clip_tokenizer():
    """A CLIP tokenizer over the 256 byte symbols (no merges), built in-process."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    for symbol in alphabet:
        vocab[symbol + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_sd_pipeline(*, seed: int = 0, sample_size: int = 16):
    """A tiny `StableDiffusionPipeline` (text width 32, 32x32 pixels by default), no safety checker."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=sample_size * 2,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def save_tiny_sd(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Stable Diffusion pipeline folder (`kind: diffusers`)."""
    build_tiny_sd_pipeline(seed=seed).save_pretrained(folder)
    return Path(folder)


TINY_OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_open_clip(*, seed: int = 0):
    """A tiny open_clip `CLIP` (embed 32, 32x32 images, context 32) and its config."""
    import copy

    from open_clip import CLIP

    torch.manual_seed(seed)
    cfg = copy.deepcopy(TINY_OPEN_CLIP_CFG)
    return CLIP(**copy.deepcopy(cfg)).eval(), cfg


def save_tiny_open_clip(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny open_clip folder (`open_clip_config.json` + safetensors)."""
    from pmg.models.scorer import save_open_clip_folder

    model, cfg = build_tiny_open_clip(seed=seed)
    return save_open_clip_folder(model, cfg, folder)


def _tiny_wordpiece_tokenizer(extra_specials: tuple[str, ...] = ()):
    """A BERT-style WordLevel tokenizer over a few words, built in-process."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    text = "a an the of photo red blue green dress shirt movie poster with on in and striped dotted"
    words = text.split()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *extra_specials]
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        bos_token="[DEC]",
        eos_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=32,
    )


def save_tiny_blip(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny BLIP captioner (`BlipForConditionalGeneration` + `BlipProcessor`)."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = _tiny_wordpiece_tokenizer()
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "encoder_hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def save_random_lpips(folder: str | Path, nets: tuple[str, ...] = ("alex",), *, seed: int = 0) -> Path:
    """Write random LPIPS weights as `<folder>/<net>.safetensors` (full state-dict keys)."""
    from safetensors.torch import save_file

    from pmg.models.lpips_metric import _build_lpips

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for net in nets:
        torch.manual_seed(seed)
        model = _build_lpips(net)
        # `lin0` and `lins.0` share a tensor; safetensors wants separate copies.
        state = {name: tensor.detach().clone().contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, str(folder / f"{net}.safetensors"))
    return folder


def save_tiny_gguf(file: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny llama-architecture GGUF file (fp32 tensors, byte-level GPT-2 tokenizer).

    The same layout llama.cpp writes (`general.architecture = llama`,
    `blk.N.attn_q.weight`, ...), small enough to build in a test, so the
    `gguf` loader and `convert_gguf_to_hf` run on a real GGUF file.
    """
    import gguf
    import numpy as np
    from tokenizers import pre_tokenizers

    hidden, ffn, layers, heads, kv_heads, context = 32, 64, 2, 4, 2, 256
    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    # Byte symbols plus two merged tokens: GGUF readers want a non-empty merge list.
    tokens = specials + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["ed", "red"]
    token_types = [gguf.TokenType.CONTROL] * len(specials) + [gguf.TokenType.NORMAL] * (
        len(tokens) - len(specials)
    )
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(file), "llama")
    writer.add_name("pmg-tiny-llama")
    writer.add_context_length(context)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(["e d", "r ed"])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    # numpy shapes are (out, in), as torch's Linear weights; GGUF stores them reversed.
    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), hidden))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, heads * head_dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return file


def save_tiny_blip2(folder: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny BLIP-2 captioner (ViT + Q-Former + OPT, `Blip2Processor`)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    num_query_tokens = 4
    tokenizer = _tiny_wordpiece_tokenizer()
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        num_query_tokens=num_query_tokens,
    )
    # The processor added an `<image>` token; the language model's vocabulary covers it.
    image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        qformer_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 37,
            "encoder_hidden_size": 32,
            "max_position_embeddings": 64,
        },
        text_config={
            "model_type": "opt",
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "ffn_dim": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "word_embed_proj_dim": 32,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_index,
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)
