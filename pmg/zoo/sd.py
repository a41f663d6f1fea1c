"""The mini Stable Diffusion of the `mini` profile, trained here from scratch on a CPU.

No registry package carries a pretrained text-to-image model, so the `mini`
profile trains a small one on the default world's (image, caption) pairs
(:func:`pmg.zoo.pairs.load_pairs`) and saves it as an ordinary diffusers
`StableDiffusionPipeline` folder, which the generator loads with the same
`from_pretrained` call as Stable Diffusion 1.5:

* **Tokenizer:** a `CLIPTokenizer` with CLIP's own vocabulary, derived from
  the BPE file open_clip ships (:mod:`pmg.zoo.tokenizer`); prompts are padded
  with `<|endoftext|>` to `max_length` tokens, as in SD 1.x.
* **Text encoder:** a `CLIPTextModel` of `text_layers` layers and width
  `text_width`, trained from scratch jointly with the UNet. The pipeline
  reads its `last_hidden_state` (after the final layer norm), so that is what
  training conditions on too.
* **VAE:** an `AutoencoderKL` downsampling by `2 ** (len(vae_channels) - 1)`
  (4 by default: 32 px images, 8 x 8 latents), pre-trained briefly on
  reconstruction (MSE plus a small KL term) and then frozen. Every training
  image and its mirror image are encoded once (mean and standard deviation
  of the posterior); each step samples a latent from them. `scaling_factor`
  is set so scaled latents have unit variance, as SD's 0.18215 does.
* **UNet:** a `UNet2DConditionModel` with cross-attention at every level,
  epsilon prediction, trained with SD 1.x's DDPM noise schedule
  (`scaled_linear`, 1000 steps) and min-SNR-5 loss weights (Hang et al.
  2023), which converge several times faster than the plain MSE. Captions
  are dropped (replaced by the empty prompt) `caption_dropout` of the time
  so classifier-free guidance works; weights are averaged (EMA).
* **Scheduler:** the saved pipeline samples with DPM-Solver++ (2nd order) in
  the training schedule's config; a DDPM scheduler for further training is
  `DDPMScheduler.from_config(pipeline.scheduler.config)`.
* No safety checker, no feature extractor (`requires_safety_checker=False`).

Scenarios are sampled in proportion to the square root of their size, so the
56 training emoji are not drowned by 1,400 posters.

Cost (defaults, 32 px, 2 idle CPU cores, 2 torch threads): about 1 min of VAE
pre-training, 0.19 s per UNet step (batch 32), about 9 min in all, 1.7 GiB
peak memory. Threads are the caller's `torch.set_num_threads` setting; with
other processes competing for the cores, 2 OpenMP threads can be many times
slower than 1 (each parallel region waits for the descheduled thread).

Quality gates (:func:`evaluate_mini_sd`), on images generated through
:class:`pmg.models.generator.ImageGenerator` from `prompt_embeds`, exactly as
the method uses the generator:

* **prompt match:** for each distinct held-out caption, the mini CLIP finds
  the generated image closer to its own caption than to another held-out
  caption of the same scenario, on at least `min_prompt_match` of prompts
  (per scenario and overall; the overall figure is gated). The same test on
  the real held-out images at the same resolution is reported as the
  ceiling the mini CLIP allows.
* **colour:** garments prompted in each of the world's colours are measured
  on their pixels (:func:`pmg.data.world.clothing.measure_colour`, not
  CLIP); accuracy must reach `min_colour_ratio` x chance.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from pmg.config import ModelSpec, ZooSDConfig
from pmg.data.images import read_prepared_image
from pmg.errors import DataError
from pmg.io import output_folder, without_timings
from pmg.models.device import bf16_autocast
from pmg.progress import progress

TRAINING_INFO_NAME = "pmg_training.json"
"""Provenance written next to `model_index.json`: the config, seed and training figures."""

MIN_SNR_GAMMA = 5.0
LOGVAR_INIT = -6.0
KL_WEIGHT = 1e-4  # small: the latents stay close to N(mean, small std), reconstruction dominates
WARMUP_FRACTION = 0.05


# ------------------------------------------------------------------- components


def _norm_groups(widths: Sequence[int]) -> int:
    """GroupNorm groups for these widths: the most (at most 32, as SD) leaving >= 4 channels per group.

    SD's 32 groups suit 128+ channels; on 16-32 channels they would leave 1-2
    channels per group, an instance norm that strips each channel's mean,
    which is where a flat garment's colour lives (the VAE then learns colour
    markedly slower).
    """
    return next(g for g in (32, 16, 8, 4, 2, 1) if all(w % g == 0 for w in widths) and min(widths) // g >= 4)


def build_tokenizer(cfg: ZooSDConfig):
    """CLIP's tokenizer (from open_clip's packaged BPE file), `model_max_length` = `cfg.max_length`."""
    from pmg.zoo.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(cfg.max_length)


def build_text_encoder(cfg: ZooSDConfig, tokenizer, *, seed: int):
    """A random-init `CLIPTextModel` over the tokenizer's vocabulary, `cfg.max_length` positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_width,
        intermediate_size=4 * cfg.text_width,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length,
        hidden_act="quick_gelu",
        projection_dim=cfg.text_width,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_vae(cfg: ZooSDConfig, *, seed: int):
    """A random-init `AutoencoderKL` of `vae_channels` (downsampling by 2 ** (levels - 1)).

    The posterior's log-variance starts at LOGVAR_INIT (std ~0.05) instead of
    0: with a unit std the sampled latent is mostly noise at first and the
    decoder learns several times slower.
    """
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    levels = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=_norm_groups(cfg.vae_channels),
        sample_size=cfg.resolution,
    )
    with torch.no_grad():
        vae.quant_conv.bias[cfg.latent_channels :] = LOGVAR_INIT  # quant_conv outputs (mean, logvar)
    return vae


def latent_side(cfg: ZooSDConfig) -> int:
    """Side of the latent the UNet denoises: resolution / VAE factor."""
    return cfg.resolution // 2 ** (len(cfg.vae_channels) - 1)


def build_unet(cfg: ZooSDConfig, *, seed: int):
    """A random-init `UNet2DConditionModel`, cross-attention (width `text_width`) at every level."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    levels = len(cfg.unet_channels)
    # diffusers' `attention_head_dim` is, for legacy reasons, the number of heads per block.
    heads = tuple(max(1, width // cfg.unet_head_dim) for width in cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=latent_side(cfg),
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * levels,
        up_block_types=("CrossAttnUpBlock2D",) * levels,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=heads,
        norm_num_groups=_norm_groups(cfg.unet_channels),
    )


def training_scheduler():
    """SD 1.x's DDPM noise schedule (1000 steps, scaled-linear betas), epsilon prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )


def inference_scheduler(train_scheduler):
    """DPM-Solver++ (2nd order) over the training schedule: good images in ~20 steps."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(
        train_scheduler.config, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace"
    )


# ------------------------------------------------------------------------- data


def _check_pairs(pairs: pd.DataFrame, source: str = "pairs") -> None:
    missing = {"scenario", "image_file", "caption", "split"} - set(pairs.columns)
    if missing:
        raise DataError(source, f"pairs lack columns {sorted(missing)}")
    if not (pairs["split"] == "train").any():
        raise DataError(source, "no pair has split == 'train'", column="split")


def load_pixels(files: Sequence[str], resolution: int) -> torch.Tensor:
    """Images resized to `resolution` (antialiased), as (N, 3, R, R) float32 in [-1, 1]."""
    out = torch.empty(len(files), 3, resolution, resolution)
    for i, file in enumerate(files):
        small = read_prepared_image(file).resize((resolution, resolution), Image.Resampling.BICUBIC)
        out[i] = torch.from_numpy(np.asarray(small, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    return out


def _tokenize(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """(N, max_length) ids, padded and truncated exactly as the pipeline's `encode_prompt` does."""
    return tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 0.1."""
    warmup = max(1, int(WARMUP_FRACTION * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


class _EMA:
    """Exponential moving average of parameters, with the usual warm-up `min(decay, (1+t)/(10+t))`."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - decay)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for shadow, param in zip(self.shadow, self.params, strict=True):
            param.copy_(shadow)


# ---------------------------------------------------------------------- training


def pretrain_vae(
    vae, pixels: torch.Tensor, cfg: ZooSDConfig, generator: torch.Generator, log: Callable[[str], object]
) -> dict:
    """Reconstruction pre-training of the VAE (MSE + KL_WEIGHT x KL), random mirror flips.

    Args:
        vae: the `AutoencoderKL`, trained in place.
        pixels: (N, 3, R, R) training images in [-1, 1].

    Returns:
        `{"step": [...], "loss": [...], "mse": [...]}` every `log_every` steps.
    """
    vae.train()
    precision = bf16_autocast(cfg.bf16, torch.device("cpu"), key="zoo.sd.bf16")
    optimiser = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0, fused=True)
    curve: dict[str, list] = {"step": [], "loss": [], "mse": []}
    total = mse_total = 0.0
    count = 0
    batch = min(cfg.vae_batch_size, pixels.shape[0])
    for step in progress(range(cfg.vae_steps), desc="zoo sd vae steps"):
        for group in optimiser.param_groups:
            group["lr"] = cfg.vae_lr * _lr_factor(step, cfg.vae_steps)
        index = torch.randint(0, pixels.shape[0], (batch,), generator=generator)
        x = pixels[index]  # (B, 3, R, R)
        flip = torch.rand(batch, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = x.contiguous(memory_format=torch.channels_last)
        with precision():
            posterior = vae.encode(x).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator)
            z = posterior.mean + posterior.std * noise  # (B, C, h, w)
            reconstruction = vae.decode(z).sample
        mse = F.mse_loss(reconstruction.float(), x)
        kl = posterior.kl().float().mean() / z[0].numel()
        loss = mse + KL_WEIGHT * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimiser.step()
        total, mse_total, count = total + loss.item(), mse_total + mse.item(), count + 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.vae_steps:
            curve["step"].append(step + 1)
            curve["loss"].append(round(total / count, 5))
            curve["mse"].append(round(mse_total / count, 5))
            log(
                f"zoo sd vae step {step + 1}/{cfg.vae_steps}: "
                f"loss {total / count:.4f} (mse {mse_total / count:.4f})"
            )
            total = mse_total = 0.0
            count = 0
    vae.eval()
    vae.requires_grad_(False)
    return curve


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and standard deviation of every image and its mirror image.

    Returns:
        mean, std: (2N, C, h, w) each; rows N..2N-1 are the mirrored images.
    """
    means, stds = [], []
    for images in (pixels, pixels.flip(-1)):
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].contiguous(memory_format=torch.channels_last)
            posterior = vae.encode(chunk).latent_dist
            means.append(posterior.mean.contiguous())
            stds.append(posterior.std.contiguous())
    return torch.cat(means), torch.cat(stds)


def _sampling_weights(scenarios: Sequence[str]) -> torch.Tensor:
    """Per-item weights so each scenario is drawn in proportion to sqrt(its size)."""
    counts = pd.Series(list(scenarios)).value_counts()
    return torch.tensor([counts[s] ** -0.5 for s in scenarios], dtype=torch.float64)


def fit_denoiser(
    unet,
    text_encoder,
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    token_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    weights: torch.Tensor,
    cfg: ZooSDConfig,
    generator: torch.Generator,
    log: Callable[[str], object],
) -> dict:
    """Train the UNet and text encoder jointly on the denoising loss (then load their EMA weights).

    Args:
        unet, text_encoder: trained in place.
        latent_mean, latent_std: (2N, C, h, w) scaled posterior statistics;
            rows N.. are the mirrored images.
        token_ids: (N, T) caption ids.
        empty_ids: (T,) ids of the empty prompt (caption dropout).
        weights: (N,) sampling weights of the items.

    Returns:
        `{"step": [...], "loss": [...]}` (min-SNR weighted MSE) every `log_every` steps.
    """
    noise_schedule = training_scheduler()
    alphas_cumprod = noise_schedule.alphas_cumprod  # (1000,)
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    loss_weight = torch.clamp(snr, max=MIN_SNR_GAMMA) / snr  # epsilon-prediction min-SNR weights
    n_items = token_ids.shape[0]
    n_timesteps = noise_schedule.config.num_train_timesteps

    unet.train()
    text_encoder.train()
    precision = bf16_autocast(cfg.bf16, torch.device("cpu"), key="zoo.sd.bf16")
    params = [p for p in list(unet.parameters()) + list(text_encoder.parameters()) if p.requires_grad]
    # fused: one kernel over all tensors, 4-5x faster than the default per-tensor loop on CPU
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, fused=True)
    ema = _EMA(params, cfg.ema_decay) if cfg.ema_decay > 0 else None
    curve: dict[str, list] = {"step": [], "loss": []}
    total, count = 0.0, 0
    for step in progress(range(cfg.steps), desc="zoo sd unet steps"):
        for group in optimiser.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, cfg.steps)
        index = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=generator)  # (B,)
        flipped = index + n_items * (torch.rand(cfg.batch_size, generator=generator) < 0.5).long()
        eps = torch.randn(latent_mean[flipped].shape, generator=generator)
        latents = latent_mean[flipped] + latent_std[flipped] * eps  # (B, C, h, w)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, n_timesteps, (cfg.batch_size,), generator=generator)  # (B,)
        noisy = noise_schedule.add_noise(latents, noise, timesteps)
        noisy = noisy.contiguous(memory_format=torch.channels_last)
        drop = torch.rand(cfg.batch_size, generator=generator) < cfg.caption_dropout
        ids = torch.where(drop[:, None], empty_ids[None, :], token_ids[index])  # (B, T)
        with precision():
            encoder_hidden_states = text_encoder(ids).last_hidden_state  # (B, T, D), as the pipeline reads it
            prediction = unet(noisy, timesteps, encoder_hidden_states).sample  # (B, C, h, w)
        per_sample = F.mse_loss(prediction.float(), noise, reduction="none").mean(dim=(1, 2, 3))  # (B,)
        loss = (per_sample * loss_weight[timesteps]).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        if ema is not None:
            ema.update()
        total, count = total + loss.item(), count + 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            curve["step"].append(step + 1)
            curve["loss"].append(round(total / count, 5))
            log(f"zoo sd unet step {step + 1}/{cfg.steps}: loss {total / count:.4f}")
            total, count = 0.0, 0
    if ema is not None:
        ema.copy_to_params()
    unet.eval()
    text_encoder.eval()
    return curve


def train_mini_sd(
    cfg: ZooSDConfig,
    pairs: pd.DataFrame,
    *,
    out: Path,
    seed: int,
    log: Callable[[str], object] = print,
) -> dict:
    """Train the mini Stable Diffusion on the `train` pairs and write it as a pipeline folder.

    Args:
        cfg: the zoo's SD section (architecture, steps, batch size, lrs).
        pairs: from :func:`pmg.zoo.pairs.load_pairs`: `scenario`,
            `image_file`, `caption`, `split` (only `train` rows are used).
        out: the pipeline folder to write; built in a temporary sibling and
            renamed, so a failed run leaves no half-written model.
        seed: seeds every initialisation, the data order, the noise and the
            caption dropout; the same seed (and thread count) gives the same
            weights.
        log: progress lines (every `log_every` steps).

    Returns:
        Training figures: `vae` and `unet` curves (`step`, `loss`, every
        `log_every` steps), `vae_mse` (last logged reconstruction MSE, pixels
        in [-1, 1]), `scaling_factor`, `parameters` per component,
        `n_train_images`, `seconds` per phase and `train_seconds` in all.
    """
    _check_pairs(pairs)
    started = time.perf_counter()
    train = pairs[pairs["split"] == "train"].reset_index(drop=True)
    generator = torch.Generator().manual_seed(seed)

    tokenizer = build_tokenizer(cfg)
    text_encoder = build_text_encoder(cfg, tokenizer, seed=seed)
    vae = build_vae(cfg, seed=seed + 1).to(memory_format=torch.channels_last)
    unet = build_unet(cfg, seed=seed + 2).to(memory_format=torch.channels_last)
    seconds: dict[str, float] = {}

    tick = time.perf_counter()
    pixels = load_pixels(train["image_file"].tolist(), cfg.resolution)  # (N, 3, R, R)
    seconds["load_images"] = round(time.perf_counter() - tick, 1)
    log(f"zoo sd: {len(train)} training images at {cfg.resolution} px")

    tick = time.perf_counter()
    vae_curve = pretrain_vae(vae, pixels, cfg, generator, log)
    mean, std = encode_latents(vae, pixels)
    # Scaled latents of unit variance, as SD's 0.18215 makes them.
    scaling_factor = float(1.0 / torch.sqrt((mean**2).mean() + (std**2).mean() - mean.mean() ** 2))
    vae.register_to_config(scaling_factor=scaling_factor)
    seconds["vae"] = round(time.perf_counter() - tick, 1)

    tick = time.perf_counter()
    token_ids = _tokenize(tokenizer, train["caption"].tolist())
    empty_ids = _tokenize(tokenizer, [""])[0]
    unet_curve = fit_denoiser(
        unet,
        text_encoder,
        mean * scaling_factor,
        std * scaling_factor,
        token_ids,
        empty_ids,
        _sampling_weights(train["scenario"].tolist()),
        cfg,
        generator,
        log,
    )
    seconds["unet"] = round(time.perf_counter() - tick, 1)

    metrics = {
        "vae": vae_curve,
        "unet": unet_curve,
        "vae_mse": vae_curve["mse"][-1],
        "final_loss": unet_curve["loss"][-1],
        "scaling_factor": round(scaling_factor, 5),
        "parameters": {
            name: sum(p.numel() for p in model.parameters())
            for name, model in (("unet", unet), ("text_encoder", text_encoder), ("vae", vae))
        },
        "n_train_images": len(train),
        "n_train_per_scenario": {
            str(k): int(v) for k, v in train["scenario"].value_counts().sort_index().items()
        },
    }
    tick = time.perf_counter()
    save_pipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, out=Path(out),
        info={"config": cfg.model_dump(mode="json"), "seed": seed} | metrics,
    )  # fmt: skip
    seconds["save"] = round(time.perf_counter() - tick, 1)
    metrics["seconds"] = seconds
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def save_pipeline(*, vae, text_encoder, tokenizer, unet, out: Path, info: dict | None = None) -> Path:
    """Write a `StableDiffusionPipeline` folder (safetensors; no safety checker) atomically.

    The tokenizer folder also gets CLIP's `vocab.json` and `merges.txt`, so
    loaders that want the classic files find them beside `tokenizer.json`.
    """
    from diffusers import StableDiffusionPipeline

    from pmg.zoo.tokenizer import write_clip_tokenizer_files

    pipeline = StableDiffusionPipeline(
        vae=vae.to(memory_format=torch.contiguous_format),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet.to(memory_format=torch.contiguous_format),
        scheduler=inference_scheduler(training_scheduler()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = Path(out)
    with output_folder(out) as tmp:
        pipeline.save_pretrained(tmp, safe_serialization=True)
        write_clip_tokenizer_files(tmp / "tokenizer")
        if info is not None:
            text = json.dumps(without_timings(info), indent=2, sort_keys=True) + "\n"
            (tmp / TRAINING_INFO_NAME).write_text(text, encoding="utf-8")
    return out


# ------------------------------------------------------------------------- gates


def colour_gate_prompts(n_per_colour: int) -> list[tuple[str, str]]:
    """(prompt, colour) pairs: `n_per_colour` garments per colour, titled like the world's items.

    Patterns and categories cycle so every colour gets the same mix.
    """
    from pmg.data.world.clothing import CATEGORIES, COLOURS, PATTERNS

    prompts = []
    for c, colour in enumerate(COLOURS):
        for i in range(n_per_colour):
            pattern = PATTERNS[i % len(PATTERNS)]
            noun = CATEGORIES[(i + c) % len(CATEGORIES)].noun.lower()
            title = f"plain {colour} {noun}" if pattern == "plain" else f"{colour} {pattern} {noun}"
            prompts.append((title, colour))
    return prompts


def generate_images(
    generator, prompts: Sequence[str], cfg: ZooSDConfig, seeds: Sequence[int], batch: int = 48
) -> list[Image.Image]:
    """One image per prompt through `prompt_embeds` (as the method drives the generator), seeded per image."""
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        embeds = generator.encode_text(chunk)  # (b, T, D)
        negative = generator.unconditional_embeds(len(chunk), embeds.shape[1])
        images += generator.generate(
            embeds,
            negative,
            steps=cfg.inference_steps,
            guidance_scale=cfg.guidance_scale,
            seeds=list(seeds[start : start + batch]),
        )
    return images


def _prompt_match(scorer, images: list[Image.Image], own: list[str], other: list[str]) -> np.ndarray:
    """Per image: is cos(image, own caption) > cos(image, mismatched caption)?"""
    image_embeddings = scorer.embed_images(images)  # (N, E)
    own_embeddings = scorer.embed_texts(own)
    other_embeddings = scorer.embed_texts(other)
    own_similarity = (image_embeddings * own_embeddings).sum(-1)  # (N,)
    other_similarity = (image_embeddings * other_embeddings).sum(-1)
    return (own_similarity > other_similarity).numpy()


def evaluate_mini_sd(
    sd_dir: str | Path, clip_dir: str | Path, pairs: pd.DataFrame, cfg: ZooSDConfig, seed: int
) -> dict:
    """The quality gates of the mini SD (see module docstring), on CPU.

    Args:
        sd_dir: the pipeline folder.
        clip_dir: the mini CLIP folder (open_clip local-dir format).
        pairs: from :func:`pmg.zoo.pairs.load_pairs`; `heldout` rows give
            the prompts.
        cfg: the zoo's SD section (`inference_steps`, `guidance_scale`,
            `colour_prompts`, the gate thresholds).
        seed: seeds the starting noise of every image and the choice of
            mismatched captions.

    Returns:
        `{"prompt_match": {scenario: {match, real_images, n_prompts}, ...,
        "overall": {...}, "min", "passed"}, "colour": {accuracy, chance,
        ratio, per_colour, pattern_accuracy, n_images, min_ratio, passed},
        "passed", "seconds"}`.
    """
    from pmg.models.generator import load_generator
    from pmg.models.scorer import load_scorer

    _check_pairs(pairs)
    started = time.perf_counter()
    generator = load_generator(ModelSpec(kind="diffusers", path=str(sd_dir), safety_checker=False), "cpu")
    scorer = load_scorer(ModelSpec(kind="open_clip", path=str(clip_dir), dtype="float32"), "cpu")
    match = prompt_match_gate(generator, scorer, pairs, cfg, seed)
    colour = colour_gate(generator, cfg, seed)
    return {
        "prompt_match": match,
        "colour": colour,
        "passed": match["passed"] and colour["passed"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _seeds(seed: int, offset: int, n: int) -> list[int]:
    """Per-image seeds of a gate; `offset` keeps the two gates' noise apart."""
    return [seed * 1_000_003 + offset + i for i in range(n)]


def prompt_match_gate(generator, scorer, pairs: pd.DataFrame, cfg: ZooSDConfig, seed: int) -> dict:
    """Gate (a): generated images closer (mini CLIP) to their own held-out caption than to another.

    One image per distinct held-out caption of each scenario; the mismatched
    caption is a random other held-out caption of the same scenario. The same
    test on the real held-out images, at the SD's resolution, is the ceiling.

    Returns:
        `{scenario: {match, real_images, n_prompts}, ..., "overall": {...},
        "min", "passed"}` (the overall share is gated).
    """
    rng = np.random.default_rng(seed)
    heldout = pairs[pairs["split"] == "heldout"]
    match: dict = {}
    all_generated, all_real = [], []
    offset = 0
    for scenario, group in heldout.groupby("scenario", sort=True):
        first = group.drop_duplicates("caption").sort_values("caption")
        captions = first["caption"].tolist()
        if len(captions) < 2:
            raise DataError(
                "pairs", f"scenario {scenario!r} has fewer than 2 distinct held-out captions", column="split"
            )
        others = []
        for caption in captions:
            choices = [c for c in captions if c != caption]
            others.append(choices[int(rng.integers(len(choices)))])
        images = generate_images(generator, captions, cfg, _seeds(seed, offset, len(captions)))
        offset += len(captions)
        generated = _prompt_match(scorer, images, captions, others)
        real_images = to_images(load_pixels(first["image_file"].tolist(), cfg.resolution))
        real = _prompt_match(scorer, real_images, captions, others)
        all_generated.append(generated)
        all_real.append(real)
        match[str(scenario)] = {
            "match": round(float(generated.mean()), 4),
            "real_images": round(float(real.mean()), 4),
            "n_prompts": len(captions),
        }
    generated, real = np.concatenate(all_generated), np.concatenate(all_real)
    match["overall"] = {
        "match": round(float(generated.mean()), 4),
        "real_images": round(float(real.mean()), 4),
        "n_prompts": int(generated.size),
    }
    match["min"] = cfg.min_prompt_match
    match["passed"] = bool(generated.mean() >= cfg.min_prompt_match)
    return match


def colour_gate(generator, cfg: ZooSDConfig, seed: int) -> dict:
    """Gate (b): garments prompted in each colour, colour measured on pixels.

    Also reports the pattern measured on pixels (not gated).

    Returns:
        `{accuracy, chance, ratio, per_colour, pattern_accuracy, n_images,
        min_ratio, passed}`.
    """
    from pmg.data.world.clothing import COLOURS, PATTERNS, measure_colour, measure_pattern

    prompts = colour_gate_prompts(cfg.colour_prompts)
    images = generate_images(generator, [p for p, _ in prompts], cfg, _seeds(seed, 500_000, len(prompts)))
    colours = [colour for _, colour in prompts]
    hits = np.array([measure_colour(image) == colour for image, colour in zip(images, colours, strict=True)])
    patterns = [next((p for p in PATTERNS if p in prompt.split()), "plain") for prompt, _ in prompts]
    pattern_hits = np.array([measure_pattern(image) == p for image, p in zip(images, patterns, strict=True)])
    chance = 1.0 / len(COLOURS)
    accuracy = float(hits.mean())
    return {
        "accuracy": round(accuracy, 4),
        "chance": round(chance, 4),
        "ratio": round(accuracy / chance, 2),
        "per_colour": {
            name: round(float(np.mean([h for h, (_, c) in zip(hits, prompts, strict=True) if c == name])), 3)
            for name in COLOURS
        },
        "pattern_accuracy": round(float(pattern_hits.mean()), 4),
        "n_images": len(prompts),
        "min_ratio": cfg.min_colour_ratio,
        "passed": bool(accuracy >= cfg.min_colour_ratio * chance),
    }


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """(N, 3, R, R) in [-1, 1] -> N RGB images."""
    array = ((pixels.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return [Image.fromarray(a) for a in array]


def gate_failures(metrics: dict) -> list[str]:
    """One line per missed gate (empty when both passed)."""
    failures = []
    match = metrics["prompt_match"]
    if not match["passed"]:
        overall = match["overall"]
        scenarios = {k: v for k, v in match.items() if isinstance(v, dict) and k != "overall"}
        per = ", ".join(f"{k} {v['match']:.3f}" for k, v in scenarios.items())
        failures.append(
            f"prompt match {overall['match']:.3f} of {overall['n_prompts']} held-out prompts "
            f"is below {match['min']} ({per})"
        )
    colour = metrics["colour"]
    if not colour["passed"]:
        failures.append(
            f"clothing colour accuracy {colour['accuracy']:.3f} is {colour['ratio']:.2f}x chance "
            f"({colour['chance']:.3f}); the gate needs {colour['min_ratio']}x"
        )
    return failures
