"""Training of the soft preference embeddings (PMG §3.3) with the generator's denoising loss.

One example per user: the behaviour prompt built from the user's history
(and conversation) lines, the user's preference keywords `k_p`, and the image
of the supervision item — the last item of the user's sequence, never one of
the history items or the target. The loss is the frozen generator's own
training loss: encode the supervision image with the VAE, add noise at a
random timestep (DDPM, from the pipeline's scheduler config), let the frozen
UNet predict it conditioned on `concat(E_m, E_k)`, and take the MSE against
the noise (or the velocity, for v-prediction schedulers). Only the adapter of
:class:`~pmg.method.soft.SoftPreferenceModel` trains.

Validation holds out users by a hash of their id (stable across runs and when
users are added). Its loss uses fixed noise and timesteps, drawn once from the
seed, so every evaluation — and the two baselines — sees the same draws:

* `val_loss_zeroed`: the same model with `E_m` replaced by zeros of the same
  shape (the tokens still take cross-attention weight, but carry nothing);
* `val_loss_keywords_only`: `E_m` left out (the conditioning is `E_k` alone).

Both baselines are constant in training (everything they use is frozen), so
they are computed once. The VAE latents' distributions and `E_k` are computed
once per example, without gradient; the LLM forward runs every step, since the
prefix enters every layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from pmg.config import TrainSoftConfig
from pmg.data.images import read_prepared_image
from pmg.data.store import PreparedScenario
from pmg.errors import DataError, PMGError
from pmg.method.soft import (
    PROMPT_TEMPLATE_VERSION,
    SoftPreferenceModel,
    behaviour_prompts,
    keyword_string,
)
from pmg.models.device import bf16_autocast
from pmg.progress import progress
from pmg.text import natural_key

logger = logging.getLogger(__name__)


class SoftTrainingError(PMGError):
    """Training diverged (NaN or infinite loss or gradient); the message names the step and users."""


@dataclass(frozen=True)
class SoftExample:
    """One user's training example.

    Attributes:
        user_id: the user.
        prompt: the behaviour prompt (`behaviour_prompt`).
        preference_keywords: `k_p` joined into one string ("red, wool, casual").
        image: the supervision item's image: a file path or a PIL image.
    """

    user_id: str
    prompt: str
    preference_keywords: str
    image: Path | Image.Image


@dataclass
class SoftTrainingResult:
    """What a training run measured.

    Attributes:
        curves: one dict per step: `step`, `train_loss`, and `val_loss`,
            `val_loss_zeroed` (None between evaluations) — for a DVC plot.
        metrics: summary numbers (see `train_soft`).
        train_users: users trained on.
        val_users: users held out.
        data_hash: content hash of the examples (`examples_hash`).
    """

    curves: list[dict[str, Any]]
    metrics: dict[str, Any]
    train_users: list[str]
    val_users: list[str]
    data_hash: str
    training: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- examples


def build_examples(
    prepared: PreparedScenario,
    descriptions: pd.DataFrame,
    keywords: pd.DataFrame,
    users: Sequence[str] | None = None,
) -> list[SoftExample]:
    """One training example per user from the describe and keywords tables.

    Args:
        prepared: the prepared scenario (splits give the supervision item,
            the catalogue its image).
        descriptions: a `Descriptions` table (history and conversation lines).
        keywords: a `Keywords` table (`preference_keywords` as a JSON list).
        users: the users to build; None takes every user that has history
            lines and keywords, in natural id order.

    Returns:
        The examples, in user order. Users whose supervision item has no
        image are left out (logged).

    Raises:
        DataError: a named user has no split, no history lines or no keywords.
    """
    splits = prepared.splits.set_index("user_id")
    keyword_rows = keywords.set_index(keywords["user_id"].astype(str))
    if users is None:
        history = descriptions[descriptions["kind"] == "history"]
        with_lines = set(history["user_id"].astype(str))
        users = sorted(
            (u for u in keyword_rows.index if u in with_lines and u in splits.index), key=natural_key
        )
    users = [str(user) for user in users]
    for user in users:
        if user not in splits.index:
            raise DataError(
                prepared.folder / "splits.parquet", f"user {user!r} has no split", column="user_id"
            )
        if user not in keyword_rows.index:
            raise DataError("keywords table", f"user {user!r} has no preference keywords", column="user_id")
    prompts = behaviour_prompts(prepared.scenario, descriptions, users)
    examples: list[SoftExample] = []
    skipped: list[str] = []
    for user in users:
        image = prepared.image_file(str(splits.loc[user, "supervision_item"]))
        if image is None:
            skipped.append(user)
            continue
        words = json.loads(keyword_rows.loc[user, "preference_keywords"])
        examples.append(SoftExample(user, prompts[user], keyword_string(words), image))
    if skipped:
        logger.info(
            "%s: %d user(s) left out, their supervision item has no image: %s",
            prepared.scenario,
            len(skipped),
            skipped[:5],
        )
    return examples


def is_validation_user(user_id: str, fraction: float) -> bool:
    """Whether a user is held out: a hash of the id, so stable across runs and user sets."""
    value = int.from_bytes(hashlib.sha256(str(user_id).encode()).digest()[:8], "big") / 2**64
    return value < fraction


def _image_bytes(image: Path | Image.Image) -> bytes:
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    return Path(image).read_bytes()


def examples_hash(examples: Sequence[SoftExample]) -> str:
    """Content hash of the training data (prompts, keywords, image bytes), for the adapter's config."""
    digest = hashlib.sha256(PROMPT_TEMPLATE_VERSION.encode())
    for example in examples:
        image_sha = hashlib.sha256(_image_bytes(example.image)).hexdigest()
        record = [example.user_id, example.prompt, example.preference_keywords, image_sha]
        digest.update(json.dumps(record).encode())
    return digest.hexdigest()[:16]


def load_image(image: Path | Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """An image as the VAE wants it.

    Args:
        image: a file path or a PIL image.
        size: (height, width), the generator's resolution.

    Returns:
        (3, H, W) float32 in [-1, 1].
    """
    if not isinstance(image, Image.Image):
        image = read_prepared_image(image)
    image = image.convert("RGB").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size[0], size[1], 3)
    return array.permute(2, 0, 1).float() / 127.5 - 1.0


# ---------------------------------------------------------------------- training


@dataclass
class _Cached:
    """Per-example tensors computed once, without gradient."""

    token_ids: list[list[int]]
    keyword_embeds: torch.Tensor  # (N, T_k, D), E_k per example, float32 on the UNet's device
    latent_mean: torch.Tensor  # (N, 4, h, w), likewise
    latent_std: torch.Tensor  # (N, 4, h, w), likewise


@torch.no_grad()
def _precompute(
    examples: Sequence[SoftExample], model: SoftPreferenceModel, generator, chunk: int = 16
) -> _Cached:
    pipeline = generator.pipeline
    vae = pipeline.vae
    size = generator.default_size
    token_ids = [model.token_ids(example.prompt) for example in examples]
    # E_k once per distinct keyword string.
    distinct = sorted({example.preference_keywords for example in examples})
    encoded: dict[str, torch.Tensor] = {}
    for start in range(0, len(distinct), chunk):
        texts = distinct[start : start + chunk]
        for text, embeds in zip(texts, generator.encode_text(texts)):
            encoded[text] = embeds.float()
    keyword_embeds = torch.stack([encoded[example.preference_keywords] for example in examples])
    means, stds = [], []
    for start in range(0, len(examples), chunk):
        pixels = torch.stack([load_image(example.image, size) for example in examples[start : start + chunk]])
        dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    device = pipeline.unet.device
    return _Cached(
        token_ids, keyword_embeds.to(device), torch.cat(means).to(device), torch.cat(stds).to(device)
    )


def _noise_scheduler(generator):
    """A DDPM scheduler for training, built from the pipeline's scheduler config."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(generator.pipeline.scheduler.config)


def _denoising_loss(
    generator,
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    conditioning: torch.Tensor,
) -> torch.Tensor:
    """Per-example MSE of the frozen UNet's prediction.

    Args:
        latents: (B, 4, h, w) scaled clean latents.
        noise: (B, 4, h, w).
        timesteps: (B,) integer timesteps.
        conditioning: (B, T, D) `concat(E_m, E_k)`.

    Returns:
        (B,) losses (float32).
    """
    unet = generator.pipeline.unet
    device, dtype = unet.device, unet.dtype
    latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy.to(dtype), timesteps, encoder_hidden_states=conditioning.to(device, dtype)).sample
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    elif kind == "sample":
        target = latents
    else:
        raise ValueError(f"unknown scheduler prediction_type {kind!r}")
    return F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))


@dataclass
class _Validation:
    """Fixed draws over the held-out users: the same for every evaluation."""

    indices: list[int]
    latents: torch.Tensor  # (V*K, 4, h, w) scaled latent means, repeated per draw
    noise: torch.Tensor  # (V*K, 4, h, w)
    timesteps: torch.Tensor  # (V*K,)
    draws: int


def _make_validation(
    indices: list[int], cached: _Cached, scaling: float, num_train_timesteps: int, draws: int, seed: int
) -> _Validation:
    rng = torch.Generator().manual_seed(seed)
    means = cached.latent_mean[indices] * scaling  # (V, 4, h, w)
    latents = means.repeat_interleave(draws, dim=0)
    noise = torch.randn(latents.shape, generator=rng).to(latents.device)
    timesteps = torch.randint(0, num_train_timesteps, (latents.shape[0],), generator=rng).to(latents.device)
    return _Validation(indices, latents, noise, timesteps, draws)


@torch.no_grad()
def _validation_loss(
    generator, scheduler, validation: _Validation, cached: _Cached, soft: torch.Tensor | None, chunk: int = 32
) -> float:
    """Mean denoising loss over the fixed validation draws.

    Args:
        soft: (V, L', D) E_m per validation user (zeros for the zeroed
            baseline), or None to condition on E_k alone.
    """
    keyword = cached.keyword_embeds[validation.indices]  # (V, T_k, D)
    conditioning = keyword if soft is None else torch.cat([soft.float().to(keyword.device), keyword], dim=1)
    conditioning = conditioning.repeat_interleave(validation.draws, dim=0)  # (V*K, T, D)
    losses = []
    for start in range(0, conditioning.shape[0], chunk):
        part = slice(start, start + chunk)
        losses.append(
            _denoising_loss(
                generator,
                scheduler,
                validation.latents[part],
                validation.noise[part],
                validation.timesteps[part],
                conditioning[part],
            )
        )
    return float(torch.cat(losses).mean())


@torch.no_grad()
def _validation_soft(
    model: SoftPreferenceModel, cached: _Cached, indices: list[int], chunk: int = 8
) -> torch.Tensor:
    parts = [
        model(*model.collate([cached.token_ids[i] for i in indices[s : s + chunk]]))
        for s in range(0, len(indices), chunk)
    ]
    return torch.cat(parts)  # (V, L, D)


def validation_losses(
    model: SoftPreferenceModel, generator, examples: Sequence[SoftExample], *, seed: int, draws: int = 4
) -> dict[str, float]:
    """Denoising losses of a model on examples, with fixed draws (the same for the same seed).

    Useful to score a loaded adapter on held-out users, or to compare runs.

    Args:
        model: the soft preference model.
        generator: the `ImageGenerator` it was trained with.
        examples: the users to score.
        seed: seeds the fixed noise and timesteps.
        draws: (noise, timestep) draws per example.

    Returns:
        `val_loss` (with E_m), `val_loss_zeroed` (E_m zeroed) and
        `val_loss_keywords_only` (E_m left out).
    """
    if not examples:
        raise ValueError("validation_losses needs at least one example")
    _freeze_generator(generator)
    cached = _precompute(examples, model, generator)
    scheduler = _noise_scheduler(generator)
    indices = list(range(len(examples)))
    validation = _make_validation(
        indices,
        cached,
        float(generator.pipeline.vae.config.scaling_factor),
        int(scheduler.config.num_train_timesteps),
        draws,
        seed,
    )
    zero = torch.zeros(len(indices), model.num_tokens, generator.text_width)
    return {
        "val_loss": _validation_loss(
            generator, scheduler, validation, cached, _validation_soft(model, cached, indices)
        ),
        "val_loss_zeroed": _validation_loss(generator, scheduler, validation, cached, zero),
        "val_loss_keywords_only": _validation_loss(generator, scheduler, validation, cached, None),
    }


def bucket_by_length(order: list[int], lengths: Sequence[int], run: int) -> list[int]:
    """A shuffled pass over examples, each run of `run` examples sorted by prompt length.

    Batches are popped from the end of the list, so consecutive batches come
    from one run and pair prompts of similar length: less padding goes
    through the LLM, while which users meet in a batch stays random (the
    runs are cut from a fresh permutation each pass). A `run` of 0 or 1
    leaves the order as it is (plain random batches).

    Args:
        order: example indices in random order (one pass).
        lengths: token count of each example's prompt (indexed by example).
        run: examples per length-sorted run (`batch_size * bucket_batches`).
    """
    if run <= 1:
        return order
    out: list[int] = []
    for start in range(0, len(order), run):
        out += sorted(order[start : start + run], key=lambda i: lengths[i])
    return out


def _freeze_generator(generator) -> None:
    pipeline = generator.pipeline
    for part in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
        part.requires_grad_(False)
        part.eval()


def train_soft(
    cfg: TrainSoftConfig,
    examples: Sequence[SoftExample],
    *,
    llm,
    generator,
    seed: int,
    log: Callable[[str], None] | None = None,
    validation_users: Collection[str] | None = None,
) -> tuple[SoftPreferenceModel, SoftTrainingResult]:
    """Train the soft preference adapter on one scenario's examples.

    Args:
        cfg: the `train_soft` section (L, S, steps, batch size, lr, ...).
        examples: one per user (`build_examples`).
        llm: the base LLM (`LocalLLM`), frozen here.
        generator: the `ImageGenerator`; its UNet, VAE and text encoder are
            frozen here.
        seed: seeds the adapter's initialisation, the batches, the noise and
            the timesteps; the validation draws use `seed + 1`.
        log: progress lines (default: the module logger).
        validation_users: the users whose examples validate (the prepared
            user split's `validation` users: the stage passes them); the
            others train. None: `cfg.val_fraction` of the users, by a hash of
            the id (tests, a caller without a split).

    Returns:
        The trained model (eval mode) and a `SoftTrainingResult` whose
        `metrics` hold: `steps`, `n_train_users`, `n_val_users`,
        `train_loss_first` / `train_loss_last` (means over the first / last
        up to 20 steps), `val_loss_initial` (before training), `val_loss`
        (final), `val_loss_zeroed`, `val_loss_keywords_only`,
        `val_beats_zeroed` (val_loss < val_loss_zeroed), `steps_per_second`,
        `train_seconds`, `truncated_prompts` — the val entries None when no
        user is held out.

    Raises:
        SoftTrainingError: a step's loss or gradient norm is NaN or infinite
            (naming the step and the batch's users); nothing is returned, so
            nothing gets saved.
        ValueError: no examples, or every user held out.
    """
    say = log or logger.info
    if not examples:
        raise ValueError("train_soft needs at least one example")
    user_ids = [example.user_id for example in examples]
    if len(set(user_ids)) != len(user_ids):
        raise ValueError("train_soft takes one example per user; duplicate user ids given")
    if validation_users is None:
        val_index = [i for i, user in enumerate(user_ids) if is_validation_user(user, cfg.val_fraction)]
    else:
        held_out = {str(user) for user in validation_users}
        val_index = [i for i, user in enumerate(user_ids) if str(user) in held_out]
    held = set(val_index)
    train_index = [i for i in range(len(examples)) if i not in held]
    if not train_index:
        raise ValueError(
            f"all {len(examples)} users are validation users "
            f"(val_fraction={cfg.val_fraction} or the given validation_users); none left to train on"
        )

    _freeze_generator(generator)
    model = SoftPreferenceModel(
        llm,
        generator.text_width,
        num_tokens=cfg.num_tokens,
        prefix_length=cfg.prefix_length,
        use_prefix=cfg.use_prefix,
        reparameterize=cfg.reparameterize,
        reparam_hidden=cfg.reparam_hidden,
        max_prompt_tokens=cfg.max_prompt_tokens,
        seed=seed,
    )
    precision = bf16_autocast(cfg.bf16, model.device, key="train_soft.bf16")
    started = time.perf_counter()
    cached = _precompute(examples, model, generator)
    scheduler = _noise_scheduler(generator)
    scaling = float(generator.pipeline.vae.config.scaling_factor)
    num_train_timesteps = int(scheduler.config.num_train_timesteps)
    say(
        f"train_soft: {len(train_index)} train / {len(val_index)} val users, L={cfg.num_tokens}, "
        f"S={model.prefix_length}, precomputed latents and E_k in {time.perf_counter() - started:.1f}s"
    )

    validation = None
    metrics: dict[str, Any] = {
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "n_train_users": len(train_index),
        "n_val_users": len(val_index),
        "val_loss_initial": None,
        "val_loss": None,
        "val_loss_zeroed": None,
        "val_loss_keywords_only": None,
        "val_beats_zeroed": None,
    }
    if val_index:
        validation = _make_validation(
            val_index, cached, scaling, num_train_timesteps, cfg.val_draws, seed + 1
        )
        zero = torch.zeros(len(val_index), cfg.num_tokens, generator.text_width)  # (V, L, D)
        with precision():
            metrics["val_loss_zeroed"] = _validation_loss(generator, scheduler, validation, cached, zero)
            metrics["val_loss_keywords_only"] = _validation_loss(
                generator, scheduler, validation, cached, None
            )
            metrics["val_loss_initial"] = _validation_loss(
                generator, scheduler, validation, cached, _validation_soft(model, cached, val_index)
            )
        say(
            f"train_soft: val loss before training {metrics['val_loss_initial']:.5f}, "
            f"E_m zeroed {metrics['val_loss_zeroed']:.5f}, "
            f"keywords only {metrics['val_loss_keywords_only']:.5f}"
        )

    params = model.trainable_parameters()
    trainable = cfg.num_tokens > 0 and cfg.steps > 0
    if cfg.num_tokens == 0:
        say("train_soft: L = 0, E_m is empty: nothing to train")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay) if trainable else None
    rng = torch.Generator().manual_seed(seed)
    order: list[int] = []
    curves: list[dict[str, Any]] = []
    losses: list[float] = []
    model.train()
    loop_started = time.perf_counter()
    val_seconds = 0.0
    lengths = [len(ids) for ids in cached.token_ids]
    for step in progress(range(1, (cfg.steps if trainable else 0) + 1), desc="train_soft steps"):
        batch: list[int] = []
        while len(batch) < min(cfg.batch_size, len(train_index)):
            if not order:
                order = [train_index[i] for i in torch.randperm(len(train_index), generator=rng).tolist()]
                run = cfg.batch_size * cfg.bucket_batches if cfg.bucket_batches > 1 else 0
                order = bucket_by_length(order, lengths, run)
            batch.append(order.pop())
        users = [user_ids[i] for i in batch]
        input_ids, attention_mask = model.collate([cached.token_ids[i] for i in batch])
        mean, std = cached.latent_mean[batch], cached.latent_std[batch]
        # Noise drawn on the CPU from the seeded generator: the same run on every device.
        latents = (mean + std * torch.randn(mean.shape, generator=rng).to(mean.device)) * scaling
        noise = torch.randn(latents.shape, generator=rng).to(mean.device)
        timesteps = torch.randint(0, num_train_timesteps, (len(batch),), generator=rng).to(mean.device)
        with precision():
            soft = model(input_ids, attention_mask)  # (B, L, D)
            conditioning = torch.cat(
                [soft.float().to(cached.keyword_embeds.device), cached.keyword_embeds[batch]], dim=1
            )
            loss = _denoising_loss(generator, scheduler, latents, noise, timesteps, conditioning).mean()
        if not torch.isfinite(loss):
            raise SoftTrainingError(f"train_soft: loss is {loss.item()} at step {step}; batch users {users}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if not torch.isfinite(norm):
            raise SoftTrainingError(
                f"train_soft: gradient norm is {norm.item()} at step {step}; batch users {users}"
            )
        optimizer.step()
        losses.append(loss.item())
        entry: dict[str, Any] = {
            "step": step,
            "train_loss": losses[-1],
            "val_loss": None,
            "val_loss_zeroed": None,
        }
        if validation is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            tick = time.perf_counter()
            with precision():
                entry["val_loss"] = _validation_loss(
                    generator, scheduler, validation, cached, _validation_soft(model, cached, val_index)
                )
            entry["val_loss_zeroed"] = metrics["val_loss_zeroed"]
            val_seconds += time.perf_counter() - tick
            recent = sum(losses[-cfg.val_every :]) / len(losses[-cfg.val_every :])
            say(
                f"train_soft: step {step}/{cfg.steps} train loss {recent:.5f} (mean of last "
                f"{min(cfg.val_every, len(losses))}), val loss {entry['val_loss']:.5f} "
                f"(E_m zeroed {metrics['val_loss_zeroed']:.5f})"
            )
        curves.append(entry)
    train_seconds = time.perf_counter() - loop_started - val_seconds
    model.eval()

    if validation is not None:
        metrics["val_loss"] = curves[-1]["val_loss"] if curves else metrics["val_loss_initial"]
        metrics["val_beats_zeroed"] = bool(metrics["val_loss"] < metrics["val_loss_zeroed"])
    window = min(20, len(losses))
    metrics.update(
        train_loss_first=sum(losses[:window]) / window if window else None,
        train_loss_last=sum(losses[-window:]) / window if window else None,
        steps_per_second=len(losses) / train_seconds if losses and train_seconds > 0 else None,
        train_seconds=round(train_seconds, 3),
        truncated_prompts=model.truncated_prompts,
    )
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise SoftTrainingError(f"train_soft: {key} is {value}")
    training = {
        **cfg.model_dump(mode="json"),
        "seed": seed,
        "train_users": [user_ids[i] for i in train_index],
        "val_users": [user_ids[i] for i in val_index],
        "scheduler": type(scheduler).__name__,
        "prediction_type": scheduler.config.prediction_type,
    }
    result = SoftTrainingResult(
        curves=curves,
        metrics=metrics,
        train_users=training["train_users"],
        val_users=training["val_users"],
        data_hash=examples_hash(examples),
        training=training,
    )
    return model, result
