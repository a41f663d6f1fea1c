"""Candidate generation (PMG §3.4): several weighted conditions per (user, target), one batched call.

For a user and a target item the generator is conditioned on

* the preference condition `E_p = concat(E_m, E_k)` — the soft preference
  embeddings `E_m` (L, D) of the bias-correcting LLM followed by the
  text-encoder embedding `E_k` (77, D) of the preference keywords string;
* the target condition `E_t` (77, D), the text-encoder embedding of the target
  keywords string,

and the paper generates `M = Generator(w_p·E_p, w_t·E_t)` for several weight
pairs (its case study: `w_p:w_t = 0:4, 1:3, 2:2, 3:1, 4:0`), then keeps the
candidate with the best CLIP score (`pmg.method.select`).

How `(w_p, w_t)` becomes one condition (decision)
-------------------------------------------------
Candidate `k` is conditioned on the token sequence

    [ (w_p / m)·E_p ; (w_t / m)·E_t ],   m = max(w_p, w_t),

with a part whose weight is 0 left out of the sequence altogether. Why:

* The paper writes the condition as the embeddings multiplied by their
  weights, and the embeddings enter the unmodified diffusers pipeline as
  `prompt_embeds` (STYLE 6), so the two conditions must share one token
  sequence: they are concatenated, as `E_m` and `E_k` already are in
  training. In the UNet's cross-attention (SD: `to_k`/`to_v` without bias)
  a token scaled by `c` gets its value scaled by `c` and its attention
  logits tempered by `c`, so a weight below the other's turns that part
  down, monotonically. It is a strength knob, not a calibrated mixing
  coefficient; the CLIP selection afterwards decides which mix worked.
* Only the ratio `w_p:w_t` is given by the paper (weights are written as
  ratios), so the pair is normalised; by the *larger* weight rather than by
  the sum so that the dominant condition is always exactly what its encoder
  produced: `0:4` is the plain target prompt (the non-personalised
  baseline is one of the candidates), `4:0` is `concat(E_m, E_k)` exactly as
  the soft embeddings were trained, `2:2` is the plain concatenation.
  Dividing by the sum would shrink both parts of every mixed candidate
  (2:2 -> 0.5·E_p, 0.5·E_t), putting them out of the distribution the UNet
  saw in training.
* A zero weight drops the part instead of feeding zeros: a zero token has
  key 0, hence logit 0 and weight `exp(0)` in every softmax, and value 0 —
  an attention sink that dilutes the other part. `0·E_p` is therefore not
  "no preference"; dropping it is.

One batched call
----------------
All candidates of a pair go through the generator in one call with
`prompt_embeds` of shape (K, T, D). Their lengths differ (`77` for target
only, `L + 77` for preference only, `L + 154` for both), so the shorter ones
are padded at the end to the longest with the empty prompt's last (padding)
position — the same vector `ImageGenerator.unconditional_embeds` uses to
extend the negative embedding past 77 tokens, so positive and negative share
one padding convention and the padding adds only "no content" tokens. The
negative embedding is the unconditional (empty prompt) embedding of the same
(K, T). T depends on the whole candidate set of the pair, never on which
candidates are generated, so candidate `k` generated alone (`only=[k]`) has
the same condition, seed and image (up to float rounding of a batched UNet)
as in the batch.

Seeds. Candidate `k` of a pair starts from noise seeded with
`candidate_seed(base_seed, scenario, user, target, k)` (a hash; independent
of the ablation variant, so the variants are paired comparisons). With
`generate.shared_noise` every candidate of a pair uses `k = 0`'s seed.

The authors' demo (`repeat_keywords` mode). Instead of weighting
embeddings, the demo writes the prompt text `"<target keywords>, <preference
keywords>"` with the preference keywords repeated `r` times (r in 1..2) and
picks the best by CLIP. Here candidate `k` is `repeats[k]` repetitions
(recorded as `w_p = r`, `w_t = 1`), encoded by the text encoder (which
truncates at 77 tokens, as in the demo), with `E_m` in front when
`use_soft`.

Ablations (paper Table 2) are parameters: `use_soft` (E_m on/off),
`use_keywords` (E_k / repeated keywords on/off); both off is "no
personalisation": the target keywords alone. Candidates whose condition
would be identical to an earlier one (all of them, without personalisation)
are generated once: K identical conditions would only differ by noise, and
choosing among them by a score that contains `d_p` would let the preference
in through the back door.

Bad input (`generate_pairs`): a target item missing from the catalogue, or a
user with no behaviour lines (no history), is skipped and counted in the
returned `GenerateReport`; an empty preference keyword list is encoded as the
empty prompt, an empty target keyword list is replaced by the target item's
title words — both recorded in `keyword_fallback`. Nothing here touches the
disk: each image goes to a `save` callback, and the `generate` stage
(`pmg.stages.generate`) writes the images, the table and the report into a
staging folder that replaces the output folder only when all of it is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from PIL import Image

from pmg.config import GenerateConfig
from pmg.errors import ConfigError
from pmg.io import validate
from pmg.method.keywords import title_words
from pmg.progress import progress
from pmg.schemas import Candidates, Keywords
from pmg.text import natural_key

log = logging.getLogger(__name__)

COLUMNS = [
    "user_id", "scenario", "target_item", "candidate", "w_p", "w_t", "seed", "mode", "variant",
    "preference_text", "target_text", "keyword_fallback", "image_path",
]
SEED_LIMIT = 2**63  # seeds stay int64 in Parquet; torch takes any seed below 2**64
FALLBACK_EMPTY_PREFERENCE = "preference_keywords empty: empty-string prompt"
FALLBACK_NO_REPEAT = "preference_keywords empty: target keywords only"
FALLBACK_TARGET_TITLE = "target_keywords empty: target title words"
FALLBACK_TARGET_ID = "target_keywords empty: target item id"


@dataclass(frozen=True)
class GenerationRequest:
    """One (user, target) pair to generate candidates for.

    Attributes:
        user_id: the user.
        scenario: clothing, movies or emoji.
        target_item: the target item's id.
        preference_keywords: `k_p`, in order (may be empty: see
            `keyword_fallback`).
        target_keywords: `k_t`, at least one.
        behaviour_prompt: the user's behaviour prompt for the soft preference
            model (`pmg.method.soft.behaviour_prompts`); needed when
            `generate.use_soft`.
        keyword_fallback: fallbacks already taken when the request was built
            (e.g. target title words), `; `-joined; "" for none.
    """

    user_id: str
    scenario: str
    target_item: str
    preference_keywords: tuple[str, ...]
    target_keywords: tuple[str, ...]
    behaviour_prompt: str | None = None
    keyword_fallback: str = ""

    @property
    def preference_text(self) -> str:
        """The preference keywords as one prompt string (`E_k` and `e_p` are built from it)."""
        return keyword_text(self.preference_keywords)

    @property
    def target_text(self) -> str:
        """The target keywords as one prompt string (`E_t` and `e_t` are built from it)."""
        return keyword_text(self.target_keywords)


@dataclass(frozen=True)
class PlannedCandidate:
    """One candidate of a pair: its index, recorded weights and seed."""

    candidate: int
    w_p: float
    w_t: float
    seed: int
    repeats: int | None = None  # repeat_keywords mode only


@dataclass
class GeneratedCandidates:
    """What `generate_candidates` returns for one pair.

    Attributes:
        images: one RGB image per generated candidate, in `rows` order.
        rows: one `Candidates` row per image, without `image_path`.
        prompt_embeds: (K, T, D) the conditions of the generated candidates.
        negative_prompt_embeds: (K, T, D) the unconditional embedding.
    """

    images: list[Image.Image]
    rows: list[dict[str, Any]]
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor


# ----------------------------------------------------------------- small pieces


def keyword_text(keywords: Sequence[str]) -> str:
    """Keywords joined as the authors' demo joins them (`"a, b, c"`): the one
    join training and inference share (`pmg.method.soft.keyword_string`)."""
    from pmg.method.soft import keyword_string

    return keyword_string(keywords)


def repeat_prompt(target_keywords: Sequence[str], preference_keywords: Sequence[str], repeats: int) -> str:
    """The demo's prompt: target keywords, then the preference keywords `repeats` times.

    >>> repeat_prompt(["red dress"], ["wool", "winter"], 2)
    'red dress, wool, winter, wool, winter'
    """
    target, preference = keyword_text(target_keywords), keyword_text(preference_keywords)
    parts = [target] + ([preference] * repeats if preference else [])
    return ", ".join(p for p in parts if p)


def variant_name(use_soft: bool, use_keywords: bool) -> str:
    """The personalisation variant: `soft+keywords`, `soft`, `keywords` or `none`."""
    return {(True, True): "soft+keywords", (True, False): "soft", (False, True): "keywords"}.get(
        (use_soft, use_keywords), "none"
    )


def candidate_seed(base_seed: int, scenario: str, user_id: str, target_item: str, candidate: int) -> int:
    """The seed of candidate `candidate` of a pair: a stable hash, in [0, 2**63).

    The same on every machine and Python process (no `hash()` salting).
    """
    key = json.dumps([int(base_seed), str(scenario), str(user_id), str(target_item), int(candidate)])
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % SEED_LIMIT


def weighted_condition(
    preference: torch.Tensor | None, target: torch.Tensor | None, w_p: float, w_t: float
) -> torch.Tensor:
    """One candidate's condition `[(w_p/m)·E_p ; (w_t/m)·E_t]`, `m = max(w_p, w_t)`.

    A part whose weight is 0, or that is None or empty, is left out (not
    zeroed: see the module docstring).

    Args:
        preference: (P, D) `E_p = concat(E_m, E_k)`, or None.
        target: (Q, D) `E_t`, or None.
        w_p: preference weight, >= 0.
        w_t: target weight, >= 0.

    Returns:
        (T, D) with T = P, Q or P + Q.

    Raises:
        ValueError: negative or non-finite weights, or nothing left to condition on.
    """
    for name, w in (("w_p", w_p), ("w_t", w_t)):
        if not (w >= 0 and w < float("inf")):
            raise ValueError(f"{name} must be finite and >= 0, got {w}")
    parts: list[tuple[torch.Tensor, float]] = []
    if preference is not None and preference.shape[0] and w_p > 0:
        parts.append((preference, w_p))
    if target is not None and target.shape[0] and w_t > 0:
        parts.append((target, w_t))
    if not parts:
        raise ValueError(
            f"weights w_p={w_p}, w_t={w_t} leave nothing to condition on "
            f"(preference tokens: {0 if preference is None else preference.shape[0]}, "
            f"target tokens: {0 if target is None else target.shape[0]})"
        )
    top = max(w for _, w in parts)
    return torch.cat([tensor * (w / top) for tensor, w in parts], dim=0)


def pad_conditions(
    conditions: Sequence[torch.Tensor], pad: torch.Tensor, length: int | None = None
) -> torch.Tensor:
    """Stack (T_k, D) conditions into (K, T, D), padding each at the end with `pad`.

    Args:
        conditions: K tensors (T_k, D).
        pad: (D,) the padding token (the empty prompt's last position).
        length: T; default the longest T_k.

    Returns:
        (K, T, D).
    """
    length = length or max(c.shape[0] for c in conditions)
    out = []
    for condition in conditions:
        if condition.shape[0] > length:
            raise ValueError(f"a condition of {condition.shape[0]} tokens does not fit in {length}")
        extra = pad.to(condition).reshape(1, -1).expand(length - condition.shape[0], -1)
        out.append(torch.cat([condition, extra], dim=0))
    return torch.stack(out)


def plan_candidates(
    cfg: GenerateConfig, request: GenerationRequest, seed: int, *, personalised: bool | None = None
) -> list[PlannedCandidate]:
    """The candidates of a pair: index, recorded weights and seed, without duplicates.

    A candidate whose condition *and seed* would equal an earlier
    candidate's is left out (it would be the same image); candidate indices
    keep their position in `weights` / `repeats`. Equal budgets (issue 11):
    without personalisation every weight pair has the same condition (the
    target alone), but candidate `k` still has its own seed — the seed of
    candidate `k` of every other variant — so `none` generates the same K
    candidates from the same seeds as the personalised variants and keeps
    one by its own rule (`pmg.method.select.variant_alpha`). Only with
    `shared_noise` do they collapse to one.

    Args:
        cfg: the `generate` section.
        request: the pair.
        seed: the base seed.
        personalised: whether there is a preference condition at all
            (default: `use_soft or use_keywords`); without one every
            candidate is the target alone and records `w_p:w_t = 0:1`.
    """
    if personalised is None:
        personalised = cfg.use_soft or cfg.use_keywords
    planned: list[PlannedCandidate] = []
    seen: set[tuple] = set()

    def seed_of(k: int) -> int:
        index = 0 if cfg.shared_noise else k
        return candidate_seed(seed, request.scenario, request.user_id, request.target_item, index)

    if cfg.mode == "weighted_embeddings":
        for k, (w_p, w_t) in enumerate(cfg.weights):
            # Without a preference condition every candidate is the target alone (0:1).
            w_p, w_t = (float(w_p), float(w_t)) if personalised else (0.0, 1.0)
            if w_p + w_t <= 0:
                continue
            top = max(w_p, w_t)
            key = (round(w_p / top, 9), round(w_t / top, 9), seed_of(k))
            if key not in seen:
                seen.add(key)
                planned.append(PlannedCandidate(k, w_p, w_t, seed_of(k)))
    else:
        for k, r in enumerate(cfg.repeats):
            r = int(r) if cfg.use_keywords and request.preference_keywords else 0
            if (r, seed_of(k)) not in seen:
                seen.add((r, seed_of(k)))
                planned.append(PlannedCandidate(k, float(r), 1.0, seed_of(k), repeats=r))
    return planned


# ------------------------------------------------------------------ soft model


def soft_preference_embeddings(soft_model: Any, behaviour_prompt: str, generator: Any) -> torch.Tensor:
    """`E_m` of one user: (L, D) on the generator's device and dtype.

    Args:
        soft_model: a trained `SoftPreferenceModel`.
        behaviour_prompt: the user's behaviour prompt.
        generator: the `ImageGenerator` (for D, device, dtype).
    """
    with torch.no_grad():
        embeds = soft_model.soft_preference_embeddings([behaviour_prompt])  # (1, L, D)
    if embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[-1] != generator.text_width:
        raise ValueError(
            f"the soft preference model returned E_m of shape {tuple(embeds.shape)}; expected "
            f"(1, L, {generator.text_width}) (the generator's text width)"
        )
    return embeds[0].to(generator.device, generator.dtype)


# ----------------------------------------------------------------- conditions


def build_conditions(
    request: GenerationRequest, *, generator: Any, soft_model: Any | None, cfg: GenerateConfig, seed: int
) -> tuple[torch.Tensor, torch.Tensor, list[PlannedCandidate]]:
    """Every candidate's condition of one pair, padded to one length.

    Args:
        request: the pair.
        generator: an `ImageGenerator`.
        soft_model: the soft preference model (needed when `cfg.use_soft`).
        cfg: the `generate` section.
        seed: the base seed (`base.seed`).

    Returns:
        `prompt_embeds` (K, T, D), `negative_prompt_embeds` (K, T, D) and the
        K planned candidates, in that order.

    Raises:
        ValueError: inputs that do not fit, with the offending values.
    """
    # Every candidate of a preference-only config (all w_t = 0; `pmg.method.preference_image`)
    # drops E_t, so only then may a request come without target keywords.
    needs_target = cfg.mode != "weighted_embeddings" or any(w_t > 0 for _, w_t in cfg.weights)
    if needs_target and not request.target_text:
        raise ValueError(
            f"user {request.user_id!r}, target {request.target_item!r}: no target keywords "
            f"(build the request with request_from_keywords for the title fallback)"
        )
    soft = None
    if cfg.use_soft:
        if soft_model is None:
            raise ValueError("generate.use_soft is true but no soft preference model was given")
        if not request.behaviour_prompt:
            raise ValueError(f"user {request.user_id!r}: use_soft needs a behaviour prompt, got none")
        soft = soft_preference_embeddings(soft_model, request.behaviour_prompt, generator)  # (L, D)
        soft = soft if soft.shape[0] else None  # an adapter with L = 0 adds nothing

    if cfg.mode == "weighted_embeddings":
        texts = [request.target_text, request.preference_text, ""]
        target, keywords, empty = generator.encode_text(texts)  # 3 x (77, D)
        parts = ([soft] if soft is not None else []) + ([keywords] if cfg.use_keywords else [])
        preference = torch.cat(parts, dim=0) if parts else None  # E_p (L + 77, D)
        plan = plan_candidates(cfg, request, seed, personalised=preference is not None)
        conditions = [weighted_condition(preference, target, c.w_p, c.w_t) for c in plan]
    else:
        plan = plan_candidates(cfg, request, seed)
        prompts = [
            repeat_prompt(request.target_keywords, request.preference_keywords, c.repeats or 0) for c in plan
        ]
        *encoded, empty = generator.encode_text([*prompts, ""])  # (77, D) each
        conditions = [torch.cat([soft, e], dim=0) if soft is not None else e for e in encoded]
    prompt_embeds = pad_conditions(conditions, empty[-1])  # (K, T, D)
    negative = generator.unconditional_embeds(len(plan), prompt_embeds.shape[1]).to(prompt_embeds)
    return prompt_embeds, negative, plan


def generate_candidates(
    request: GenerationRequest,
    *,
    generator: Any,
    soft_model: Any | None,
    cfg: GenerateConfig,
    seed: int,
    only: Sequence[int] | None = None,
) -> GeneratedCandidates:
    """Generate the candidates of one (user, target) pair in one batched generator call.

    Args:
        request: the pair.
        generator: an `ImageGenerator`.
        soft_model: the soft preference model, or None when `cfg.use_soft` is off.
        cfg: the `generate` section.
        seed: the base seed (`base.seed`); candidate seeds derive from it.
        only: candidate indices to generate (default all); the conditions,
            seeds and padding are those of the full set, so a candidate is
            the same image alone as in the batch.

    Returns:
        The images, their `Candidates` rows (without `image_path`) and the
        embeddings they were generated from.
    """
    prompt_embeds, negative, plan = build_conditions(
        request, generator=generator, soft_model=soft_model, cfg=cfg, seed=seed
    )
    if only is not None:
        known = [c.candidate for c in plan]
        missing = [k for k in only if k not in known]
        if missing:
            raise ValueError(f"candidates {missing} are not planned for this pair; planned: {known}")
        keep = [i for i, c in enumerate(plan) if c.candidate in set(only)]
        plan = [plan[i] for i in keep]
        prompt_embeds, negative = prompt_embeds[keep], negative[keep]
    images = generator.generate(
        prompt_embeds,
        negative,
        steps=cfg.steps,
        guidance_scale=cfg.guidance_scale,
        seeds=[c.seed for c in plan],
        height=cfg.height,
        width=cfg.width,
    )
    variant = variant_name(cfg.use_soft, cfg.use_keywords)
    fallback = request.keyword_fallback
    if cfg.use_keywords and not request.preference_keywords:
        note = FALLBACK_EMPTY_PREFERENCE if cfg.mode == "weighted_embeddings" else FALLBACK_NO_REPEAT
        fallback = "; ".join(f for f in (fallback, note) if f)
    rows = [
        {
            "user_id": request.user_id,
            "scenario": request.scenario,
            "target_item": request.target_item,
            "candidate": c.candidate,
            "w_p": c.w_p,
            "w_t": c.w_t,
            "seed": c.seed,
            "mode": cfg.mode,
            "variant": variant,
            "preference_text": request.preference_text,
            "target_text": request.target_text,
            "keyword_fallback": fallback,
        }
        for c in plan
    ]
    return GeneratedCandidates(list(images), rows, prompt_embeds, negative)


# ------------------------------------------------------------------- pairs


def request_from_keywords(
    row: Mapping[str, Any], *, title: str | None, behaviour_prompt: str | None
) -> GenerationRequest:
    """A request from one `Keywords` row, with the documented target fallback.

    An empty target keyword list (only possible in hand-made tables; the
    schema refuses it) is replaced by the target title's words, or the
    target id when the title has none; `keyword_fallback` says so.
    """
    preference = tuple(json.loads(row["preference_keywords"]))
    target = tuple(json.loads(row["target_keywords"]))
    fallback = ""
    if not keyword_text(target):
        words = tuple(title_words([title or ""], 10))
        if words:
            target, fallback = words, FALLBACK_TARGET_TITLE
        else:
            target, fallback = (str(row["target_item"]),), FALLBACK_TARGET_ID
    return GenerationRequest(
        user_id=str(row["user_id"]),
        scenario=str(row["scenario"]),
        target_item=str(row["target_item"]),
        preference_keywords=preference,
        target_keywords=target,
        behaviour_prompt=behaviour_prompt,
        keyword_fallback=fallback,
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def path_part(value: str) -> str:
    """`value` as one safe path component; unsafe ids get a short hash so two never collide."""
    safe = _UNSAFE.sub("_", value)
    if safe != value or safe.startswith(".") or not safe:
        safe = f"{safe.lstrip('.') or 'id'}-{hashlib.sha256(value.encode('utf-8')).hexdigest()[:8]}"
    return safe


def candidate_image_path(user_id: str, target_item: str, candidate: int) -> str:
    """`<user>/<target>/cand_<k>.png`, relative to the scenario's output folder."""
    return f"{path_part(user_id)}/{path_part(target_item)}/cand_{candidate}.png"


@dataclass(frozen=True)
class GenerateReport:
    """What one `generate_pairs` call made and skipped (JSON-able; the stage's metrics).

    Attributes:
        scenario: the scenario.
        mode: `generate.mode`.
        variant: the personalisation variant (`variant_name`).
        pairs_requested: rows of the Keywords table given.
        pairs_generated: (user, target) pairs with candidates.
        candidates: rows of the Candidates table.
        skipped: reason -> user ids not generated.
        skipped_count: their number.
        keyword_fallbacks: fallback note -> pairs that took it.
        seconds: wall time.
    """

    scenario: str
    mode: str
    variant: str
    pairs_requested: int
    pairs_generated: int
    candidates: int
    skipped: dict[str, list[str]]
    skipped_count: int
    keyword_fallbacks: dict[str, int]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def generate_pairs(
    cfg: GenerateConfig,
    scenario: str,
    keywords: pd.DataFrame,
    behaviour: Mapping[str, str | None],
    items: pd.DataFrame,
    *,
    generator: Any,
    soft_model: Any | None,
    seed: int,
    save: Callable[[str, Image.Image], None],
) -> tuple[pd.DataFrame, GenerateReport]:
    """Every pair's candidates: images to `save`, rows to the `Candidates` table.

    Pairs run in natural user order, one batched generator call each; each
    image is handed to `save(relative_path, image)` as soon as it exists
    (`relative_path` is `candidate_image_path`, relative to the folder the
    table goes in), so memory holds one pair's images at a time.

    Args:
        cfg: the `generate` section (or a variant's copy of it).
        scenario: clothing, movies or emoji.
        keywords: the scenario's `Keywords` table (other scenarios' rows are ignored).
        behaviour: user id -> behaviour prompt (`pmg.method.soft.behaviour_prompts`);
            a user missing here (or mapped to None/"") has no history and is
            skipped, in every variant, so ablations compare the same users.
        items: the scenario's catalogue (titles of targets; unknown targets are skipped).
        generator: the loaded `ImageGenerator`.
        soft_model: the trained soft preference model; None only when
            `cfg.use_soft` is off.
        seed: the base seed (`base.seed`); candidate seeds derive from it.
        save: where each image goes.

    Returns:
        The validated `Candidates` frame and what was generated and skipped.

    Raises:
        ConfigError: `generate.use_soft` without a soft preference model.
    """
    if cfg.use_soft and soft_model is None:
        raise ConfigError(
            "generate.use_soft is true but no soft preference model was given "
            "(run train_soft first, or set generate.use_soft: false for the keywords-only variant)"
        )
    started = time.perf_counter()
    keywords = validate(keywords, Keywords, f"generate input (keywords[{scenario}])")
    keywords = keywords[keywords["scenario"] == scenario]
    title_of = dict(zip(items["item_id"].astype(str), items["title"].astype(str)))

    skipped: dict[str, list[str]] = {}
    fallbacks: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    order = sorted(range(len(keywords)), key=lambda i: natural_key(str(keywords["user_id"].iloc[i])))
    for i in progress(order, desc=f"generate {scenario} pairs"):
        row = keywords.iloc[i]
        user, target = str(row["user_id"]), str(row["target_item"])
        if target not in title_of:
            skipped.setdefault("target item not in catalogue", []).append(user)
            continue
        prompt = behaviour.get(user)
        if not prompt:
            skipped.setdefault("no history", []).append(user)
            continue
        request = request_from_keywords(row, title=title_of[target], behaviour_prompt=prompt)
        result = generate_candidates(request, generator=generator, soft_model=soft_model, cfg=cfg, seed=seed)
        for image, candidate in zip(result.images, result.rows):
            relative = candidate_image_path(user, target, candidate["candidate"])
            save(relative, image)
            rows.append({**candidate, "image_path": relative})
        note = result.rows[0]["keyword_fallback"] if result.rows else ""
        for part in filter(None, note.split("; ")):
            fallbacks[part] = fallbacks.get(part, 0) + 1
    frame = validate(pd.DataFrame(rows, columns=COLUMNS), Candidates, f"candidates[{scenario}]")
    report = GenerateReport(
        scenario=scenario,
        mode=cfg.mode,
        variant=variant_name(cfg.use_soft, cfg.use_keywords),
        pairs_requested=len(keywords),
        pairs_generated=int(frame[["user_id", "target_item"]].drop_duplicates().shape[0]),
        candidates=len(frame),
        skipped=skipped,
        skipped_count=sum(len(v) for v in skipped.values()),
        keyword_fallbacks=fallbacks,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "generate[%s]: %d candidates for %d pairs, %d skipped",
        scenario, len(frame), report.pairs_generated, report.skipped_count,
    )
    return frame, report


__all__ = [
    "GenerateReport",
    "GeneratedCandidates",
    "GenerationRequest",
    "PlannedCandidate",
    "build_conditions",
    "candidate_image_path",
    "candidate_seed",
    "generate_candidates",
    "generate_pairs",
    "keyword_text",
    "pad_conditions",
    "plan_candidates",
    "repeat_prompt",
    "request_from_keywords",
    "variant_name",
    "weighted_condition",
]
