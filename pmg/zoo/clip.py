"""The mini CLIP of the `mini` profile: a locked pretrained text tower, a small image tower trained here.

No registry package carries a pretrained CLIP, so the `mini` profile builds one
in the spirit of LiT ("locked-image tuning", Zhai et al. 2022) turned around:

* **Text tower, locked:** all-MiniLM-L6-v2 (a sentence-transformers BERT that
  ships as an asset) through open_clip's Hugging Face text tower, mean-pooled
  like the sentence-transformers model itself, then a linear projection.
  The projection starts as the identity (`embed_dim` = 384 = MiniLM's width),
  so at step 0 a caption embeds exactly as its MiniLM sentence embedding;
  that is what lets captions never seen in training (the held-out emoji
  names) land near the images that share their words.
* **Image tower, from scratch:** a small timm CNN (`image_tower`, e.g.
  `test_convnext`) at `image_size` pixels, average-pooled and linearly
  projected into the joint space.
* **Training:** InfoNCE with a learnable logit scale (started at
  `logit_scale_init` = 30: the captions of one scenario sit close together in
  MiniLM's space, and CLIP's usual 1/0.07 is too soft to tell them apart).
  The transformer is frozen, so the pooled MiniLM output of every distinct
  training caption is computed once and cached; only the image tower, the
  text projection and the logit scale train. Many images share a caption
  (376 "drama movie poster"s), so in-batch negatives would contain false
  negatives; instead each image is scored against *all* distinct training
  captions (image -> text: a softmax over the caption vocabulary, one
  positive), and each distinct caption of the batch against the batch images
  (text -> image: target spread evenly over the images with that caption).
  A third, soft term (:func:`semantic_targets`) pulls an image a little
  towards captions that MiniLM finds similar to its own, which is what makes
  unseen captions (every held-out emoji has a name no training image has)
  recognisable zero-shot. Rare scenarios are repeated within an epoch
  (:func:`scenario_repeats`: the 56 training emoji would otherwise be 3% of
  the data and never learnt). Augmentation is geometric only (shift, zoom,
  flip): colour is the signal.

On disk the model is open_clip's local folder format, read by
`open_clip.create_model_and_transforms("local-dir:<folder>")` +
`open_clip.get_tokenizer("local-dir:<folder>")` and so by
:func:`pmg.models.scorer.load_scorer` (`profiles.mini.scorer.path`):

* `open_clip_config.json` — `model_cfg` + `preprocess_cfg`;
* `open_clip_model.safetensors` — all weights, the frozen MiniLM included
  (about 90 MB, nearly all of it MiniLM);
* MiniLM's `config.json` and tokenizer files, copied in, so no file outside
  the folder is read: open_clip always loads a `local-dir:` model's
  tokenizer from the folder itself, and `text_cfg.hf_model_name` names the
  folder so the BERT architecture config is read from it too (only the
  config: with a full checkpoint present open_clip builds the tower with
  `from_config` and loads the weights from the safetensors). open_clip hands
  `hf_model_name` to `transformers.AutoConfig` as it is, so it is written as
  the `out` path was given: relative to the repository root when the DVC
  stage writes `zoo.clip.out`, like every path in `params.yaml`; a loader
  that may run elsewhere should point `hf_model_name` at the folder it
  loads (see :func:`pmg.models.scorer.text_tower_override`);
* `training.json` — the training metrics and seed.

Quality gate (:func:`evaluate_mini_clip`): zero-shot top-1 on held-out items,
per scenario, ranking all distinct captions of that scenario.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from copy import deepcopy
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from pmg.config import ModelSpec, ZooClipConfig
from pmg.data.images import read_prepared_image
from pmg.errors import DataError, ModelError
from pmg.io import output_folder, without_timings
from pmg.models.device import bf16_autocast
from pmg.progress import progress

MODEL_NAME = "pmg-mini-clip"
TRAINING_INFO_NAME = "training.json"
# Files of a Hugging Face BERT folder the text tower's config and tokenizer may need
# (copied into the saved model where present; the weights travel in the safetensors).
TEXT_TOWER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
# Logit scale cap, as in CLIP (exp(scale) <= 100).
MAX_LOGIT_SCALE = math.log(100.0)


# --------------------------------------------------------------------- model


def mini_clip_model_cfg(cfg: ZooClipConfig, text_tower: str | Path) -> dict:
    """The open_clip `model_cfg` of the mini CLIP.

    Args:
        cfg: the zoo's CLIP section.
        text_tower: a Hugging Face BERT folder (weights, config, tokenizer).

    Returns:
        A dict in open_clip's JSON config spelling (`embed_dim`,
        `vision_cfg`, `text_cfg`, `custom_text`).
    """
    return {
        "embed_dim": cfg.embed_dim,
        "custom_text": True,
        "vision_cfg": {
            "image_size": cfg.image_size,
            "timm_model_name": cfg.image_tower,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
        },
        "text_cfg": {
            "hf_model_name": str(text_tower),
            "hf_tokenizer_name": str(text_tower),
            "hf_proj_type": "linear",
            "hf_pooler_type": "mean_pooler",
            "context_length": cfg.context_length,
        },
    }


def build_mini_clip(model_cfg: dict, *, seed: int) -> torch.nn.Module:
    """Instantiate the model: pretrained text tower from `hf_model_name`, random image tower.

    The text projection is set to the identity when it is square, so the
    joint space starts as the text tower's own sentence-embedding space.
    """
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    torch.manual_seed(seed)
    kwargs = deepcopy(model_cfg)
    kwargs.pop(
        "custom_text", None
    )  # read by open_clip's factory to pick the class, not a constructor argument
    with _quiet_transformers():  # the checkpoint's unused BERT pooler would be reported as "unexpected"
        model = open_clip.CustomTextCLIP(**kwargs)
    model.visual.image_mean = tuple(OPENAI_DATASET_MEAN)
    model.visual.image_std = tuple(OPENAI_DATASET_STD)
    projection = model.text.proj
    if isinstance(projection, torch.nn.Linear) and projection.weight.shape[0] == projection.weight.shape[1]:
        with torch.no_grad():
            projection.weight.copy_(torch.eye(projection.weight.shape[0]))
    return model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _eval_transform(model: torch.nn.Module):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    size = model.visual.image_size
    return image_transform_v2(
        PreprocessCfg(size=size, mean=model.visual.image_mean, std=model.visual.image_std), is_train=False
    )


@torch.no_grad()
def _pooled_text_features(
    model: torch.nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 64
) -> torch.Tensor:
    """The locked text tower's pooled output, before the projection.

    Returns:
        (N, W) float32, W the text transformer's width.
    """
    text = model.text
    chunks = []
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(list(texts[start : start + batch_size]))  # (b, context)
        mask = (ids != text.config.pad_token_id).long()
        out = text.transformer(input_ids=ids, attention_mask=mask)
        chunks.append(text.pooler(out, mask).float())  # (b, W)
    return torch.cat(chunks)


def _load_images(files: Iterable[str], transform) -> torch.Tensor:
    """(N, 3, S, S) normalised pixels, exactly as the eval transform makes them."""
    tensors = []
    for file in files:
        tensors.append(transform(read_prepared_image(file)))
    return torch.stack(tensors)


def _augment(pixels: torch.Tensor, generator: torch.Generator, *, shift: float, scale: float) -> torch.Tensor:
    """Random shift, zoom and horizontal flip, batched; colours untouched.

    Args:
        pixels: (B, 3, S, S) normalised images.
        shift: largest translation, as a fraction of the half-width.
        scale: largest relative zoom in or out.
    """
    b = pixels.shape[0]
    zoom = 1.0 + (torch.rand(b, generator=generator) * 2 - 1) * scale  # (B,)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)  # (B,)
    move = (torch.rand(b, 2, generator=generator) * 2 - 1) * shift  # (B, 2)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = zoom * flip
    theta[:, 1, 1] = zoom
    theta[:, :, 2] = move
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)


def contrastive_loss(
    image_embeddings: torch.Tensor,
    caption_embeddings: torch.Tensor,
    caption_index: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    semantic_targets: torch.Tensor | None = None,
    semantic_weight: float = 0.0,
) -> torch.Tensor:
    """InfoNCE of a batch against the whole caption vocabulary, duplicates handled.

    Args:
        image_embeddings: (B, D) L2-normalised.
        caption_embeddings: (C, D) L2-normalised, one row per distinct caption.
        caption_index: (B,) the row of each image's caption.
        logit_scale: scalar, log of the inverse temperature.
        semantic_targets: optional (C, C) rows of a distribution over
            captions per caption (see :func:`semantic_targets`); adds a soft
            image->text cross-entropy towards the row of each image's caption.
        semantic_weight: weight of that term.

    Returns:
        Scalar: mean of the image->text loss (softmax over all C captions,
        one positive) and the text->image loss (for each distinct caption in
        the batch, a softmax over the B images, target spread evenly over
        the images with that caption), plus the weighted semantic term.
    """
    logits = logit_scale.exp() * image_embeddings @ caption_embeddings.T  # (B, C)
    image_to_text = F.cross_entropy(logits, caption_index)
    present = torch.unique(caption_index)  # (U,)
    text_logits = logits[:, present].T  # (U, B)
    targets = (caption_index.unsqueeze(0) == present.unsqueeze(1)).float()  # (U, B)
    targets = targets / targets.sum(dim=1, keepdim=True)
    text_to_image = -(targets * F.log_softmax(text_logits, dim=1)).sum(dim=1).mean()
    loss = (image_to_text + text_to_image) / 2
    if semantic_targets is not None and semantic_weight > 0:
        soft = semantic_targets[caption_index]  # (B, C)
        loss = loss + semantic_weight * -(soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return loss


def semantic_targets(text_features: torch.Tensor, tau: float) -> torch.Tensor:
    """Soft caption targets from the locked text tower's own similarities.

    Row i is softmax_j(cos(t_i, t_j) / tau): a caption's image is pulled a
    little towards captions that *say* similar things. Trained this way an
    image embeds near the region of text space its caption lives in rather
    than just nearer its caption than any other training caption, which is
    what lets an unseen caption ("kissing face") win for an unseen image that
    looks like its neighbours ("kissing face with closed eyes").

    Args:
        text_features: (C, W) pooled text-tower outputs of the distinct captions.
        tau: temperature; smaller is closer to one-hot.

    Returns:
        (C, C), rows summing to one.
    """
    normalised = F.normalize(text_features.float(), dim=-1)
    return F.softmax(normalised @ normalised.T / tau, dim=1)


def scenario_repeats(scenarios: pd.Series, min_share: float) -> dict[str, int]:
    """How many times each scenario's training images go into one epoch.

    A scenario with few images (67 emoji against 1,682 posters) would be
    seen too rarely to learn; it is repeated, whole, until it supplies about
    `min_share` of the (unrepeated) training set: `max(1, round(min_share *
    N / n_s))`.

    Args:
        scenarios: the scenario of every training image.
        min_share: target share; 0 repeats nothing.
    """
    counts = scenarios.value_counts()
    total = int(counts.sum())
    return {str(name): max(1, round(min_share * total / int(n))) for name, n in counts.items()}


# ------------------------------------------------------------------- training


def _check_pairs(pairs: pd.DataFrame, source: str) -> None:
    missing = {"scenario", "image_file", "caption", "split"} - set(pairs.columns)
    if missing:
        raise DataError(source, f"pairs lack columns {sorted(missing)}")
    if not (pairs["split"] == "train").any():
        raise DataError(source, "no pair has split == 'train'", column="split")


def train_mini_clip(
    cfg: ZooClipConfig,
    pairs: pd.DataFrame,
    *,
    text_tower: Path,
    out: Path,
    seed: int,
    log: Callable[[str], None] = print,
) -> dict:
    """Train the mini CLIP on the `train` pairs and write it as an open_clip folder.

    Args:
        cfg: the zoo's CLIP section (architecture, epochs, batch size, lr).
        pairs: from :func:`pmg.zoo.pairs.load_pairs`: `image_file`, `caption`,
            `split` (only `train` rows are used), `scenario`.
        text_tower: a Hugging Face BERT folder (all-MiniLM-L6-v2 in the
            `mini` profile); its weights are saved with the model, its config
            and tokenizer files copied next to them.
        out: the folder to write; built in a temporary sibling and renamed,
            so a failed run leaves no half-written model.
        seed: seeds the image tower's initialisation, the data order and the
            augmentation.
        log: one line per epoch.

    Returns:
        Training metrics: `train_seconds` (including the save),
        `final_loss` (mean loss of the last epoch), `loss_per_epoch`,
        `n_train_images`, `n_train_captions`, `parameters_trained`.
    """
    started = time.perf_counter()
    model, model_cfg, metrics = fit_mini_clip(cfg, pairs, text_tower=text_tower, seed=seed, log=log)
    save_mini_clip(
        model, model_cfg, Path(out), text_tower=Path(text_tower), training=metrics | {"seed": seed}
    )
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    return metrics


def fit_mini_clip(
    cfg: ZooClipConfig,
    pairs: pd.DataFrame,
    *,
    text_tower: Path,
    seed: int,
    log: Callable[[str], None] = print,
) -> tuple[torch.nn.Module, dict, dict]:
    """The training of :func:`train_mini_clip`, without the save.

    Returns:
        (model in eval mode, its open_clip `model_cfg`, training metrics).
    """
    from open_clip.tokenizer import HFTokenizer

    started = time.perf_counter()
    _check_pairs(pairs, "pairs")
    text_tower = Path(text_tower)
    _check_text_tower(text_tower)

    train = pairs[pairs["split"] == "train"].reset_index(drop=True)
    captions = sorted(train["caption"].unique())
    caption_row = {caption: i for i, caption in enumerate(captions)}
    caption_index = torch.tensor([caption_row[c] for c in train["caption"]])  # (N,)
    repeats = scenario_repeats(train["scenario"], cfg.min_scenario_share)
    epoch_rows = torch.cat(
        [torch.arange(len(train))]
        + [
            torch.from_numpy((train["scenario"] == name).to_numpy().nonzero()[0]).repeat(r - 1)
            for name, r in sorted(repeats.items())
            if r > 1
        ]
    )  # (E,) the rows one epoch visits, rare scenarios repeated

    model_cfg = mini_clip_model_cfg(cfg, text_tower)
    model = build_mini_clip(model_cfg, seed=seed)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    model.text.transformer.eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(cfg.logit_scale_init))
    tokenizer = HFTokenizer(str(text_tower), context_length=cfg.context_length)
    pooled = _pooled_text_features(model, tokenizer, captions)  # (C, W)
    soft_targets = semantic_targets(pooled, cfg.semantic_tau) if cfg.semantic_weight > 0 else None  # (C, C)
    pixels = _load_images(train["image_file"], _eval_transform(model))  # (N, 3, S, S)
    log(
        f"zoo.clip: {len(train)} training images, {len(captions)} distinct captions, scenario repeats "
        f"{repeats} (text features cached, images loaded in {time.perf_counter() - started:.1f}s)"
    )

    trainable = [*model.visual.parameters(), *model.text.proj.parameters(), model.logit_scale]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )
    steps_per_epoch = math.ceil(len(epoch_rows) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = max(1, min(total_steps // 10, 2 * steps_per_epoch))

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(seed)
    precision = bf16_autocast(cfg.bf16, torch.device("cpu"), key="zoo.clip.bf16")
    model.visual.train()
    loss_per_epoch = []
    for epoch in progress(range(cfg.epochs), desc="zoo clip epochs"):
        order = epoch_rows[torch.randperm(len(epoch_rows), generator=generator)]
        total, count = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            if len(batch) < 2:  # a lone image has no negatives (and breaks batch norm)
                continue
            images = _augment(pixels[batch], generator, shift=cfg.augment_shift, scale=cfg.augment_scale)
            with precision():
                features = model.visual(images)
            image_embeddings = F.normalize(features.float(), dim=-1)  # (B, D)
            caption_embeddings = F.normalize(model.text.proj(pooled), dim=-1)  # (C, D)
            loss = contrastive_loss(
                image_embeddings,
                caption_embeddings,
                caption_index[batch],
                model.logit_scale,
                semantic_targets=soft_targets,
                semantic_weight=cfg.semantic_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            total += loss.item() * len(batch)
            count += len(batch)
        loss_per_epoch.append(total / count)
        log(
            f"zoo.clip: epoch {epoch + 1}/{cfg.epochs} loss {loss_per_epoch[-1]:.4f} "
            f"logit scale {model.logit_scale.exp().item():.1f} ({time.perf_counter() - started:.0f}s)"
        )
    model.eval()
    metrics = {
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(loss_per_epoch[-1], 4),
        "loss_per_epoch": [round(v, 4) for v in loss_per_epoch],
        "n_train_images": len(train),
        "n_train_captions": len(captions),
        "scenario_repeats": repeats,
        "parameters_trained": sum(p.numel() for p in trainable),
    }
    return model, model_cfg, metrics


def _check_text_tower(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"zoo.clip.text_tower = {str(folder)!r}: no config.json (expected a Hugging Face BERT folder)"
        )
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise ModelError(f"zoo.clip.text_tower = {str(folder)!r}: no tokenizer (tokenizer.json or vocab.txt)")


def save_mini_clip(
    model: torch.nn.Module, model_cfg: dict, out: Path, *, text_tower: Path, training: dict
) -> Path:
    """Write the open_clip folder, self-contained, atomically (temp sibling, then rename).

    `text_cfg.hf_model_name` / `hf_tokenizer_name` are rewritten to `out`
    (as given) and the text tower's config and tokenizer files are copied
    in, so loading needs nothing outside the folder.
    """
    from pmg.models.scorer import write_open_clip_files

    out = Path(out)
    saved_cfg = deepcopy(model_cfg)
    saved_cfg["text_cfg"]["hf_model_name"] = str(out)
    saved_cfg["text_cfg"]["hf_tokenizer_name"] = str(out)
    with output_folder(out) as folder:
        write_open_clip_files(model, saved_cfg, folder)
        for name in TEXT_TOWER_FILES:
            if (text_tower / name).is_file():
                # copyfile, not copy2: the asset's mtime and mode are not the model's.
                shutil.copyfile(text_tower / name, folder / name)
        (folder / TRAINING_INFO_NAME).write_text(json.dumps(without_timings(training), indent=2) + "\n")
    return out


def zero_shot_top1(
    image_embeddings: torch.Tensor, label_embeddings: torch.Tensor, true_label: torch.Tensor
) -> tuple[float, float]:
    """Top-1 accuracy of ranking labels by cosine similarity, and its chance level.

    Args:
        image_embeddings: (N, D) (normalised here).
        label_embeddings: (L, D), one row per distinct label (normalised here).
        true_label: (N,) the row of each image's label.

    Returns:
        (accuracy, chance) with chance = 1 / L.
    """
    if image_embeddings.shape[0] == 0:
        raise ValueError("zero_shot_top1 needs at least one image")
    scores = F.normalize(image_embeddings.float(), dim=-1) @ F.normalize(label_embeddings.float(), dim=-1).T
    accuracy = (scores.argmax(dim=1) == true_label).float().mean().item()
    return accuracy, 1.0 / label_embeddings.shape[0]


def colour_prompt(colour: str) -> str:
    """How a colour word is written when a garment's colour is ranked (see :func:`evaluate_mini_clip`)."""
    return f"{colour} clothing"


def evaluate_mini_clip(
    model_dir: str | Path, pairs: pd.DataFrame, *, min_ratio: float = 3.0, device: str = "cpu"
) -> dict:
    """The quality gate: zero-shot top-1 on held-out items, per scenario.

    For each held-out image, all distinct captions of its scenario (train
    and held-out items alike: the scenario's vocabulary) are ranked by cosine
    similarity; top-1 is correct when the best is the image's own caption.
    Chance is 1 / (number of distinct captions). The gate passes when every
    scenario reaches `min_ratio` x chance. The model is loaded through
    :func:`pmg.models.scorer.load_scorer`, the loader the pipeline uses.

    Clothing also reports `colour`: the held-out garments' colour ranked among
    the world's colour words (:func:`colour_prompt`), chance 1 / #colours.

    Returns:
        `{scenario: {top1, chance, ratio, n_images, n_captions, passed}, ...,
        "colour": {...}, "min_ratio", "passed", "load_seconds"}`.
    """
    from pmg.models.scorer import load_scorer

    _check_pairs(pairs, "pairs")
    started = time.perf_counter()
    scorer = load_scorer(
        ModelSpec(kind="open_clip", name=MODEL_NAME, path=str(model_dir), dtype="float32"), device
    )
    metrics: dict = {"load_seconds": round(time.perf_counter() - started, 2)}
    passed = True
    for scenario, group in pairs.groupby("scenario", sort=True):
        heldout = group[group["split"] == "heldout"]
        if heldout.empty:
            raise DataError("pairs", f"scenario {scenario!r} has no held-out pair to gate on", column="split")
        captions = sorted(group["caption"].unique())
        row = {caption: i for i, caption in enumerate(captions)}
        images = _open_images(heldout["image_file"])
        image_embeddings = scorer.embed_images(images)
        accuracy, chance = zero_shot_top1(
            image_embeddings, scorer.embed_texts(captions), torch.tensor([row[c] for c in heldout["caption"]])
        )
        ok = accuracy >= min_ratio * chance
        passed &= ok
        metrics[scenario] = _gate_entry(accuracy, chance, len(heldout), len(captions), ok)
        if scenario == "clothing" and "attributes" in heldout.columns:
            metrics["colour"] = _colour_accuracy(scorer, image_embeddings, heldout)
    metrics["min_ratio"] = min_ratio
    metrics["passed"] = bool(passed)
    return metrics


def _gate_entry(accuracy: float, chance: float, n_images: int, n_labels: int, passed: bool | None) -> dict:
    entry = {
        "top1": round(accuracy, 4),
        "chance": round(chance, 4),
        "ratio": round(accuracy / chance, 2),
        "n_images": n_images,
        "n_captions": n_labels,
    }
    if passed is not None:
        entry["passed"] = bool(passed)
    return entry


def _colour_accuracy(scorer, image_embeddings: torch.Tensor, heldout: pd.DataFrame) -> dict:
    from pmg.data.world.clothing import COLOURS

    colours = list(COLOURS)
    row = {colour: i for i, colour in enumerate(colours)}
    truth = torch.tensor([row[a["colour"]] for a in heldout["attributes"]])
    accuracy, chance = zero_shot_top1(
        image_embeddings, scorer.embed_texts([colour_prompt(c) for c in colours]), truth
    )
    entry = _gate_entry(accuracy, chance, len(heldout), len(colours), None)
    entry.pop("n_captions")
    entry["n_colours"] = len(colours)
    return entry


def _open_images(files: Iterable[str]) -> list[Image.Image]:
    return [read_prepared_image(file) for file in files]


def gate_failures(metrics: dict) -> list[str]:
    """One line per scenario that missed the gate (empty when all passed)."""
    return [
        f"{scenario}: zero-shot top-1 {entry['top1']:.3f} is {entry['ratio']:.2f}x chance "
        f"({entry['chance']:.4f}); the gate needs {metrics['min_ratio']}x"
        for scenario, entry in metrics.items()
        if isinstance(entry, dict) and entry.get("passed") is False
    ]
